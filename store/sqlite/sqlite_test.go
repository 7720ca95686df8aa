package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/sqldb"
	"github.com/serverlessd/serverlessd/store/storetest"
)

// openTemp opens a store in a fresh file under t.TempDir.
func openTemp(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

// TestReopen opens the same file twice: the second migration is a no-op and
// the data stays.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sub", "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	p := &store.Project{Name: "shop"}
	if err := s.CreateProject(ctx, p); err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	before := storetest.AppliedMigrations(t, s.DB())
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatalf("Open again: %v", err)
	}
	defer s.Close()
	if got, err := s.GetProject(ctx, "shop"); err != nil || got.ID != p.ID {
		t.Fatalf("GetProject after reopening = %v, %v; want %s", got, err, p.ID)
	}
	after := storetest.AppliedMigrations(t, s.DB())
	if len(after) == 0 || len(after) != len(before) {
		t.Fatalf("schema_migrations: %v before, %v after reopening", before, after)
	}
	for v, at := range before {
		if after[v] != at {
			t.Errorf("migration %d re-applied: applied_at %d then %d", v, at, after[v])
		}
	}
	all, err := sqldb.Migrations(Dialect)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(all) {
		t.Errorf("%d migrations applied, %d known", len(after), len(all))
	}
}

// TestMigrateTwiceInPlace runs Migrate again on an open database.
func TestMigrateTwiceInPlace(t *testing.T) {
	s := openTemp(t)
	before := storetest.AppliedMigrations(t, s.DB())
	if err := sqldb.Migrate(t.Context(), s.DB(), Dialect); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	same := storetest.AppliedMigrations(t, s.DB())
	if len(same) != len(before) {
		t.Errorf("schema_migrations %v, then %v", before, same)
	}
}

// TestNewerSchemaRefused opens a file that a newer binary migrated.
func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	_, err = s.DB().ExecContext(t.Context(),
		`INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)`)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path); err == nil {
		t.Fatal("Open of a newer schema succeeded")
	}
}

// TestPrivateFile checks that the database, which holds password hashes, is
// readable by its owner only.
func TestPrivateFile(t *testing.T) {
	s := openTemp(t)
	for _, f := range []string{s.Path(), s.Path() + "-wal"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
}

// TestPragmas checks that every pooled connection has the pragmas, not only
// the first one.
func TestPragmas(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	var conns []interface{ Close() error }
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 3 { // hold connections so that each check gets a new one
		c, err := s.DB().Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		for pragma, want := range map[string]string{
			"journal_mode": "wal", "foreign_keys": "1", "busy_timeout": "5000", "synchronous": "1",
		} {
			var got string
			if err := c.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("connection %d: %s = %s, want %s", i, pragma, got, want)
			}
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{"", filepath.Join(dir, "a?b.db"), dir} {
		if s, err := Open(path); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", path)
		}
	}
	// A context that is already done reaches the driver as an error, not a hang.
	s := openTemp(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.GetProject(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("GetProject(cancelled) = %v, want context.Canceled", err)
	}
}

// TestConcurrentOpen opens one new file from several goroutines at once, as
// daemons starting together would: each migration is applied exactly once.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := Open(path)
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		}
	}
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	all, _ := sqldb.Migrations(Dialect)
	if got := storetest.AppliedMigrations(t, s.DB()); len(got) != len(all) {
		t.Errorf("schema_migrations %v, want %d rows", got, len(all))
	}
}

// TestUpgradeFromV1 writes data at schema version 1 and migrates it to the
// latest schema.
func TestUpgradeFromV1(t *testing.T) {
	db, err := sql.Open("sqlite", dsn(filepath.Join(t.TempDir(), "state.db")))
	if err != nil {
		t.Fatal(err)
	}
	storetest.RunUpgrade(t, db, Dialect)
}

// TestUpgradeKeepsData builds the current schema, writes data, then migrates
// to a later schema (here a dialect-only test migration) and reads it back.
// (The store is prepared on the current schema: its statements need every
// table; TestUpgradeFromV1 covers data written at version 1.)
func TestUpgradeKeepsData(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := sqldb.Migrate(ctx, db, Dialect); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	s1, err := sqldb.New(ctx, db, Dialect)
	if err != nil {
		t.Fatal(err)
	}
	p := &store.Project{Name: "shop"}
	if err := s1.CreateProject(ctx, p); err != nil {
		t.Fatalf("CreateProject: %v", err)
	}

	later := Dialect
	later.Migrations = fstest.MapFS{"9001_usage.sql": {Data: []byte(
		`CREATE TABLE usage_test (compute_id TEXT NOT NULL, seconds BIGINT NOT NULL);
		 INSERT INTO usage_test SELECT id, 0 FROM projects;`)}}
	if err := sqldb.Migrate(ctx, db, later); err != nil {
		t.Fatalf("Migrate to latest: %v", err)
	}
	got, err := s1.GetProject(ctx, "shop")
	if err != nil || got.ID != p.ID {
		t.Fatalf("GetProject after the upgrade = %v, %v", got, err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM usage_test`).Scan(&n); err != nil || n != 1 {
		t.Errorf("the upgrade's table holds %d rows (%v), want 1", n, err)
	}
	// An older binary, which lacks 9001, must refuse this database.
	if err := sqldb.Migrate(ctx, db, Dialect); err == nil || !strings.Contains(err.Error(), "9001") {
		t.Errorf("Migrate by an older binary = %v, want a refusal naming 9001", err)
	}
}

// TestRunningOperationsUseIndex: the start-up scan for operations a killed
// daemon left running reads the partial index, not the whole audit trail.
func TestRunningOperationsUseIndex(t *testing.T) {
	s := openTemp(t)
	for _, q := range []string{
		`SELECT id FROM operations WHERE status = 'running' ORDER BY started_at, id`,
		`UPDATE operations SET status = 'failed' WHERE compute_id = 'cmp_x' AND status = 'running' AND started_at <= 1`,
	} {
		rows, err := s.DB().QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q)
		if err != nil {
			t.Fatalf("explain %q: %v", q, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if !strings.Contains(strings.Join(plan, "; "), "operations_running") {
			t.Errorf("%q does not use operations_running: %v", q, plan)
		}
	}
}
