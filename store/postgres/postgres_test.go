package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/postgres/pgtest"
	"github.com/serverlessd/serverlessd/store/sqldb"
	"github.com/serverlessd/serverlessd/store/storetest"
)

// openDSN opens a store and closes it when the test ends.
func openDSN(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openFresh opens a store on a new, empty database.
func openFresh(t testing.TB) *Store { return openDSN(t, pgtest.Start(t)) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openFresh(t) })
}

// TestMigrateTwice opens one database twice, and migrates it again in place:
// nothing is re-applied and the data stays.
func TestMigrateTwice(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.Start(t)
	s := openDSN(t, dsn)
	p := &store.Project{Name: "shop"}
	if err := s.CreateProject(ctx, p); err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	before := storetest.AppliedMigrations(t, s.DB())
	s.Close()

	s = openDSN(t, dsn)
	if err := sqldb.Migrate(ctx, s.DB(), Dialect); err != nil {
		t.Fatalf("Migrate in place: %v", err)
	}
	if got, err := s.GetProject(ctx, "shop"); err != nil || got.ID != p.ID {
		t.Fatalf("GetProject after reopening = %v, %v; want %s", got, err, p.ID)
	}
	after := storetest.AppliedMigrations(t, s.DB())
	all, err := sqldb.Migrations(Dialect)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != len(all) || len(after) != len(all) {
		t.Fatalf("schema_migrations: %v before, %v after; %d migrations known", before, after, len(all))
	}
	for v, at := range before {
		if after[v] != at {
			t.Errorf("migration %d re-applied: applied_at %d then %d", v, at, after[v])
		}
	}
}

// TestConcurrentOpen opens one new database from several goroutines at once,
// as daemons starting together would: the advisory lock makes each
// migration run exactly once.
func TestConcurrentOpen(t *testing.T) {
	dsn := pgtest.Start(t)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := Open(t.Context(), dsn)
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
	all, _ := sqldb.Migrations(Dialect)
	if got := storetest.AppliedMigrations(t, openDSN(t, dsn).DB()); len(got) != len(all) {
		t.Errorf("schema_migrations %v, want %d rows", got, len(all))
	}
}

// TestUpgradeFromV1 writes data at schema version 1 and migrates it to the
// latest schema.
func TestUpgradeFromV1(t *testing.T) {
	db, err := sql.Open("pgx", pgtest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	storetest.RunUpgrade(t, db, Dialect)
}

// TestUpgradeKeepsData builds the current schema, writes data, then migrates
// to a later test migration, and reads the data back. (The store is prepared
// on the current schema: its statements need every table; TestUpgradeFromV1
// covers data written at version 1.)
func TestUpgradeKeepsData(t *testing.T) {
	ctx := t.Context()
	db, err := sql.Open("pgx", pgtest.Start(t))
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
	c := &store.Compute{ProjectID: p.ID, State: store.StateSuspended, Driver: "local"}
	if err := s1.CreateCompute(ctx, c); err != nil {
		t.Fatalf("CreateCompute: %v", err)
	}

	later := Dialect
	later.Migrations = withMigration(t, "9001_usage.sql",
		`CREATE TABLE usage_test (compute_id TEXT NOT NULL, seconds BIGINT NOT NULL);
		 INSERT INTO usage_test SELECT id, 0 FROM computes;`)
	if err := sqldb.Migrate(ctx, db, later); err != nil {
		t.Fatalf("Migrate to latest: %v", err)
	}
	if got, err := s1.GetProject(ctx, "shop"); err != nil || got.ID != p.ID {
		t.Fatalf("GetProject after the upgrade = %v, %v", got, err)
	}
	if got, err := s1.GetCompute(ctx, c.ID); err != nil || got.Version != c.Version {
		t.Fatalf("GetCompute after the upgrade = %v, %v", got, err)
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

// withMigration is this package's migrations plus one more.
func withMigration(t *testing.T, name, sql string) fstest.MapFS {
	t.Helper()
	fsys := fstest.MapFS{name: {Data: []byte(sql)}}
	own, err := ownMigrations.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range own {
		b, err := ownMigrations.ReadFile("migrations/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		fsys[e.Name()] = &fstest.MapFile{Data: b}
	}
	return fsys
}

// TestSchemaMatchesShared keeps PostgreSQL's copy of each shared migration
// equal to it but for the collations it adds. A migration that creates no
// table (an index) has no id column to collate, so PostgreSQL runs the
// shared file itself.
func TestSchemaMatchesShared(t *testing.T) {
	pg, err := sqldb.Migrations(Dialect)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := sqldb.Migrations(sqldb.Dialect{Name: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pg) != len(shared) {
		t.Fatalf("postgres has %d migrations, the shared set %d: a PostgreSQL-only version?", len(pg), len(shared))
	}
	for i, sh := range shared {
		p := pg[i]
		if p.Version != sh.Version {
			t.Fatalf("migration %d: postgres has version %d", sh.Version, p.Version)
		}
		if p.SQL == sh.SQL && !strings.Contains(sh.SQL, "CREATE TABLE") {
			continue
		}
		if p.SQL == sh.SQL {
			t.Errorf("%s is the shared file: give PostgreSQL a copy with COLLATE \"C\" ids, "+
				"or the ids sort by the database's collation", sh.Name)
			continue
		}
		got := normSQL(strings.ReplaceAll(p.SQL, ` COLLATE "C"`, ""))
		if want := normSQL(sh.SQL); got != want {
			t.Errorf("store/postgres/migrations/%s differs from the shared %s "+
				"by more than COLLATE \"C\":\n got %s\nwant %s", p.Name, sh.Name, got, want)
		}
	}
}

// normSQL drops comments and collapses white space.
func normSQL(s string) string {
	s = regexp.MustCompile(`--[^\n]*`).ReplaceAllString(s, "")
	return strings.Join(strings.Fields(s), " ")
}

// TestByteOrder lists ids that a linguistic collation orders differently from
// bytes ("B" after "a0" under en-US): pages must follow Go's string order.
func TestByteOrder(t *testing.T) {
	s := openFresh(t)
	ctx := t.Context()
	var linguistic bool
	if err := s.DB().QueryRowContext(ctx, `SELECT 'a0' < 'B'`).Scan(&linguistic); err != nil {
		t.Fatal(err)
	}
	if !linguistic {
		t.Log("the test database collates by bytes already; this test proves less")
	}
	ids := []string{"prj_B", "prj_a", "prj_a!", "prj_a0", "prj__", "prj_Z9", "prj_~"}
	for i, id := range ids {
		p := &store.Project{ID: id, Name: "p" + string(rune('a'+i))}
		if err := s.CreateProject(ctx, p); err != nil {
			t.Fatalf("CreateProject(%s): %v", id, err)
		}
	}
	slices.Sort(ids)
	list, err := s.ListProjects(ctx, "", store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range list {
		got = append(got, p.ID)
	}
	if !slices.Equal(got, ids) {
		t.Errorf("ListProjects order %v, want byte order %v", got, ids)
	}
	page, err := s.ListProjects(ctx, "", store.Page{After: "prj_B", Limit: 2})
	if err != nil || len(page) != 2 || page[0].ID != "prj_Z9" || page[1].ID != "prj__" {
		t.Errorf("the page after prj_B = %v, %v; want prj_Z9, prj__", page, err)
	}
}

// TestPool checks the pool's size and that pool_max_conns is taken out of
// the DSN rather than sent to the server, which would refuse it.
func TestPool(t *testing.T) {
	dsn := pgtest.Start(t)
	if got := openDSN(t, dsn).DB().Stats().MaxOpenConnections; got != defaultPoolSize() {
		t.Errorf("MaxOpenConnections = %d, want %d", got, defaultPoolSize())
	}
	s := openDSN(t, dsn+"&pool_max_conns=3")
	if got := s.DB().Stats().MaxOpenConnections; got != 3 {
		t.Errorf("MaxOpenConnections with pool_max_conns=3 = %d", got)
	}
	var app string
	if err := s.DB().QueryRowContext(t.Context(), `SHOW application_name`).Scan(&app); err != nil || app != "serverlessd" {
		t.Errorf("application_name = %q, %v; want serverlessd", app, err)
	}
}

// TestServerKilled kills PostgreSQL under an open store: calls fail quickly
// with an error, and once the server is back the same store works again,
// without being reopened.
func TestServerKilled(t *testing.T) {
	srv := pgtest.New(t)
	s := openDSN(t, srv.CreateDatabase(t))
	calls := storeCalls(t, s)
	warm(t, s)
	srv.Kill(t)
	for name, call := range calls {
		start := time.Now()
		err := call(t.Context())
		t.Logf("%s with the server down: %v", name, err)
		if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
			t.Errorf("%s with the server down = %v, want a connection error", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s with the server down took %s", name, d)
		}
	}
	srv.Restart(t)
	for name, call := range calls {
		if err := call(t.Context()); err != nil {
			t.Errorf("%s after the restart: %v", name, err)
		}
	}
}

// TestServerRestartedUnderPool restarts PostgreSQL between two calls, so the
// pool still holds connections to the old server. A call may fail once per
// dead connection (database/sql cannot tell that a query sent on one never
// ran), then the store works again by itself; Ping never fails.
func TestServerRestartedUnderPool(t *testing.T) {
	srv := pgtest.New(t)
	s := openDSN(t, srv.CreateDatabase(t))
	calls := storeCalls(t, s)
	warm(t, s)
	srv.Restart(t)
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping after the restart: %v", err)
	}
	warm(t, s)
	srv.Restart(t)
	for name, call := range calls {
		var err error
		for try := range s.poolSize + 1 {
			if err = call(t.Context()); err == nil {
				break
			}
			t.Logf("%s, try %d after the restart: %v", name, try+1, err)
		}
		if err != nil {
			t.Errorf("%s still fails after the restart: %v", name, err)
		}
	}
}

// warm fills the pool with connections used a moment ago, which pgx reuses
// without pinging them first.
func warm(t *testing.T, s *Store) {
	t.Helper()
	var conns []*sql.Conn
	for try := 0; len(conns) < s.poolSize; try++ {
		c, err := s.DB().Conn(t.Context())
		if err == nil {
			_, err = c.ExecContext(t.Context(), `SELECT 1`)
		}
		switch {
		case errors.Is(err, driver.ErrBadConn) && try < 2*s.poolSize:
			c.Close() // a connection to a server since restarted: dropped
		case err != nil:
			t.Fatal(err)
		default:
			conns = append(conns, c)
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

// storeCalls are a ping, a read, a write and a compare-and-set on a project
// and compute that they create; each succeeds when the server is up.
func storeCalls(t *testing.T, s *Store) map[string]func(context.Context) error {
	p := &store.Project{Name: "shop"}
	if err := s.CreateProject(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	c := &store.Compute{ProjectID: p.ID, State: store.StateSuspended, Driver: "local"}
	if err := s.CreateCompute(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	flip := map[store.ComputeState]store.ComputeState{
		store.StateSuspended: store.StateActive, store.StateActive: store.StateSuspended}
	return map[string]func(context.Context) error{
		"Ping": s.Ping,
		"GetProject": func(ctx context.Context) error {
			_, err := s.GetProject(ctx, p.Name)
			return err
		},
		"CreateRole": func(ctx context.Context) error {
			r := &store.Role{ProjectID: p.ID, Name: strings.ReplaceAll(store.NewID("r"), "_", ""), PasswordHash: "*00"}
			return s.CreateRole(ctx, r)
		},
		"UpdateCompute": func(ctx context.Context) error {
			next := *c
			next.State = flip[c.State]
			err := s.UpdateCompute(ctx, &next, c.State)
			if err == nil {
				*c = next
			}
			return err
		},
	}
}

// TestOpenErrors checks that Open fails with one line that says what is
// wrong and never shows the password.
func TestOpenErrors(t *testing.T) {
	good := pgtest.Start(t)
	const secret = "s3cr3t-pw"
	closed := closedPort(t)
	silent := silentServer(t)
	tests := []struct {
		name, dsn, want string
	}{
		{"empty", "", "store.dsn is empty"},
		{"bad url port", "postgres://u:" + secret + "@127.0.0.1:notaport/db", "invalid store.dsn"},
		{"bad url escape", "postgres://u:" + secret + "@h%zz/db", "invalid store.dsn"},
		{"bad key=value", "host=127.0.0.1 password=" + secret + " port", "invalid store.dsn"},
		{"bad pool size", good + "&pool_max_conns=zero", "pool_max_conns"},
		{"refused", "postgres://u:" + secret + "@" + closed + "/db",
			"connect to postgres at " + closed + ` (user "u", database "db"): connection refused (check store.dsn)`},
		{"refused key=value", "host=127.0.0.1 port=" + strings.Split(closed, ":")[1] + " user=u password=" + secret,
			"connection refused"},
		{"unknown host", "postgres://u:" + secret + "@no-such-host.invalid/db", "no-such-host.invalid"},
		{"unix socket", "host=/nonexistent user=u password=" + secret, "/nonexistent/.s.PGSQL.5432"},
		{"silent server", "postgres://u:" + secret + "@" + silent + "/db?connect_timeout=1",
			"no answer within 1s"},
		{"wrong password", strings.Replace(good, "@", secret+"@", 1), /* appended to the real one */
			"password authentication failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			s, err := Open(t.Context(), tc.dsn)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not contain %q", msg, tc.want)
			}
			if strings.Contains(msg, secret) || strings.Contains(msg, "\n") {
				t.Errorf("error %q shows the password or has several lines", msg)
			}
			// Open bounds even a DNS lookup to the connect timeout plus 1s.
			if d := time.Since(start); d > DefaultConnectTimeout+2*time.Second {
				t.Errorf("Open took %s", d)
			}
		})
	}
}

// TestOpenNoDatabase names the missing database; the server checks the
// password first, so this needs the right one.
func TestOpenNoDatabase(t *testing.T) {
	dsn := regexp.MustCompile(`/[a-z0-9_]+\?`).ReplaceAllString(pgtest.Start(t), "/nope?")
	_, err := Open(t.Context(), dsn)
	if err == nil || !strings.Contains(err.Error(), `database "nope" does not exist`) {
		t.Errorf("Open of a missing database = %v", err)
	}
}

// TestDefaultConnectTimeout checks the timeout that bounds Open when the DSN
// sets none, without waiting for it.
func TestDefaultConnectTimeout(t *testing.T) {
	cfg, _, err := parseDSN("postgres://u:p@127.0.0.1/db")
	if err != nil || cfg.ConnectTimeout != DefaultConnectTimeout {
		t.Errorf("ConnectTimeout = %v, %v; want %s", cfg.ConnectTimeout, err, DefaultConnectTimeout)
	}
	cfg, _, err = parseDSN("postgres://u:p@127.0.0.1/db?connect_timeout=2")
	if err != nil || cfg.ConnectTimeout != 2*time.Second {
		t.Errorf("ConnectTimeout with connect_timeout=2 = %v, %v", cfg.ConnectTimeout, err)
	}
}

func TestRedact(t *testing.T) {
	for _, in := range []string{
		`parse "postgres://u:pw@ss@h:x/d": invalid port`,
		`host=h password=pw@ss port=x`,
		`host=h password='pw@ss with space' port=x`,
		`postgres://h/d?sslpassword=pw@ss&x=1`,
	} {
		if got := redact(in); strings.Contains(got, "pw@ss") || strings.Contains(got, "ss with") {
			t.Errorf("redact(%q) = %q", in, got)
		}
	}
}

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return ln.Addr().String()
}

// silentServer accepts connections and never answers, like a server that
// hangs or a port behind a stalled proxy.
func silentServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}
