package storetest

import (
	"database/sql"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/sqldb"
)

// RunUpgrade checks that data written at schema version 1 survives the
// migrations that follow it, on a real backend, and that the upgraded store
// then meters usage. db must be a fresh, empty database of dialect d; it is
// closed when the test ends.
//
// The version-1 rows are written with plain SQL, as a version-1 binary left
// them: today's sqldb.Store cannot be built on that schema, since it
// prepares statements on tables that came later.
func RunUpgrade(t *testing.T, db *sql.DB, d sqldb.Dialect) {
	ctx := t.Context()
	t.Cleanup(func() { db.Close() })
	if err := sqldb.MigrateTo(ctx, db, d, 1); err != nil {
		t.Fatalf("MigrateTo(1): %v", err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM usage_intervals`).Scan(&n); err == nil {
		t.Fatal("usage_intervals exists at schema version 1: the test proves nothing")
	}

	// Times: T0 = 2024-06-01T00:00:00Z and a few seconds after, in microseconds.
	const t0 = int64(1717200000000000)
	us := func(sec int64) time.Time { return time.UnixMicro(t0 + sec*1_000_000).UTC() }
	for _, stmt := range []string{
		`INSERT INTO projects (id, name, config, created_at, updated_at)
		 VALUES ('prj_old', 'old', '{"idle_timeout":60,"storage_size":"10Gi"}', 1717200000000000, 1717200001000000)`,
		`INSERT INTO computes (id, project_id, state, driver, node, spec, address, error,
		 last_active, started_at, suspended_at, created_at, updated_at, version)
		 VALUES ('cmp_old', 'prj_old', 'suspended', 'local', 'node-a',
		 '{"image":"mariadb:11","resources":{"cpu":"500m"}}', '', '',
		 1717200002000000, NULL, 1717200003000000, 1717200000000000, 1717200003000000, 3)`,
		`INSERT INTO roles (project_id, name, password_hash, created_at, updated_at)
		 VALUES ('prj_old', 'root', '` + hashA + `', 1717200000000000, 1717200000000000)`,
		`INSERT INTO operations (id, project_id, compute_id, action, status, reason, error, started_at, finished_at)
		 VALUES ('op_old', 'prj_old', 'cmp_old', 'suspend', 'succeeded', 'idle', '', 1717200002000000, 1717200002500000)`,
		// Left running by a daemon that was killed.
		`INSERT INTO operations (id, project_id, compute_id, action, status, reason, error, started_at, finished_at)
		 VALUES ('op_stuck', 'prj_old', 'cmp_old', 'start', 'running', 'wake', '', 1717200004000000, NULL)`,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("write version-1 data: %v\n%s", err, stmt)
		}
	}
	v1Applied := AppliedMigrations(t, db)[1]

	if err := sqldb.Migrate(ctx, db, d); err != nil {
		t.Fatalf("Migrate from version 1: %v", err)
	}
	applied := AppliedMigrations(t, db)
	if applied[1] != v1Applied {
		t.Errorf("migration 1 re-applied: applied_at %d then %d", v1Applied, applied[1])
	}
	for _, v := range []int{2, 3, 4, 5} {
		if _, ok := applied[v]; !ok {
			t.Fatalf("migration %d not applied: %v", v, applied)
		}
	}

	s, err := sqldb.New(ctx, db, d)
	if err != nil {
		t.Fatalf("sqldb.New on the upgraded schema: %v", err)
	}
	t.Cleanup(func() { s.Close() })

	p, err := s.GetProject(ctx, "old")
	if err != nil {
		t.Fatalf("GetProject after the upgrade: %v", err)
	}
	same(t, "the version-1 project", p, &store.Project{ID: "prj_old", Name: "old", TenantID: store.DefaultTenantID,
		Config:    store.ProjectConfig{IdleTimeout: 60, StorageSize: "10Gi"},
		CreatedAt: us(0), UpdatedAt: us(1)})
	c, err := s.GetCompute(ctx, "cmp_old")
	if err != nil {
		t.Fatalf("GetCompute after the upgrade: %v", err)
	}
	same(t, "the version-1 compute", c, &store.Compute{ID: "cmp_old", ProjectID: "prj_old", TenantID: store.DefaultTenantID,
		State: store.StateSuspended, Driver: "local", Node: "node-a",
		Spec:       store.ComputeSpec{Image: "mariadb:11", Resources: store.Resources{CPU: "500m"}},
		LastActive: us(2), SuspendedAt: us(3), CreatedAt: us(0), UpdatedAt: us(3), Version: 3})
	r, err := s.GetRole(ctx, "prj_old", "root")
	if err != nil {
		t.Fatalf("GetRole after the upgrade: %v", err)
	}
	same(t, "the version-1 role", r, &store.Role{ProjectID: "prj_old", Name: "root",
		PasswordHash: hashA, CreatedAt: us(0), UpdatedAt: us(0)})
	ops, err := s.ListOperations(ctx, "prj_old", 0)
	if err != nil {
		t.Fatalf("ListOperations after the upgrade: %v", err)
	}
	stuck := store.Operation{ID: "op_stuck", ProjectID: "prj_old", ComputeID: "cmp_old",
		Action: store.ActionStart, Status: store.OpRunning, Reason: "wake", StartedAt: us(4)}
	same(t, "the version-1 operations", ops, []store.Operation{stuck, {ID: "op_old", ProjectID: "prj_old",
		ComputeID: "cmp_old", Action: store.ActionSuspend, Status: store.OpSucceeded, Reason: "idle",
		StartedAt: us(2), FinishedAt: us(2).Add(500 * time.Millisecond), DurationMS: 500}})
	if running, err := s.RunningOperations(ctx); err != nil {
		t.Errorf("RunningOperations after the upgrade: %v", err)
	} else {
		same(t, "the version-1 running operations", running, []store.Operation{stuck})
	}

	// The old project's name is unique in the default tenant only.
	wantErr(t, "the old name again in the default tenant",
		s.CreateProject(ctx, &store.Project{Name: "old"}), store.ErrAlreadyExists, "old")
	tn := newTenant(t, s, "later")
	if err := s.CreateProject(ctx, &store.Project{Name: "old", TenantID: tn.ID}); err != nil {
		t.Errorf("the old name in another tenant: %v", err)
	}

	// The old compute meters on the new schema, and its usage outlives it.
	c.State = store.StateActive
	if err := s.UpdateCompute(ctx, c, store.StateSuspended); err != nil {
		t.Fatalf("UpdateCompute after the upgrade: %v", err)
	}
	iv := startInterval(t, s, "prj_old", "cmp_old", us(10))
	if err := s.AddUsageSample(ctx, &store.UsageSample{ProjectID: "prj_old", ComputeID: "cmp_old",
		At: us(11), StorageBytes: 1 << 30}); err != nil {
		t.Fatalf("AddUsageSample: %v", err)
	}
	if err := s.DeleteProject(ctx, "prj_old"); err != nil {
		t.Fatalf("DeleteProject: %v", err)
	}
	same(t, "OpenIntervals", openIntervals(t, s), []store.UsageInterval{*iv})
	if samples, err := s.ListUsageSamples(ctx, "", time.Time{}, time.Time{}); err != nil || len(samples) != 1 {
		t.Errorf("ListUsageSamples = %v, %v; want the one sample", samples, err)
	}
}

// AppliedMigrations maps the applied migration versions to their applied_at.
func AppliedMigrations(t *testing.T, db *sql.DB) map[int]int64 {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT version, applied_at FROM schema_migrations`)
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()
	out := map[int]int64{}
	for rows.Next() {
		var v int
		var at int64
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		out[v] = at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
