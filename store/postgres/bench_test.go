package postgres

import (
	"testing"

	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/postgres/pgtest"
	"github.com/serverlessd/serverlessd/store/storetest"
)

// benchStore is a store holding 1000 projects with a compute each, on a
// PostgreSQL server over loopback TCP. It mirrors store/sqlite's, for
// side-by-side figures.
func benchStore(b *testing.B) (*Store, *store.Project, *store.Compute) {
	b.Helper()
	s := openFresh(b)
	p, c := storetest.Fill(b, s)
	// Plan with real statistics, as autovacuum would soon after the load.
	if _, err := s.DB().ExecContext(b.Context(), `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	return s, p, c
}

func BenchmarkGetProjectByName(b *testing.B) {
	s, p, _ := benchStore(b)
	storetest.BenchGetProjectByName(b, s, p)
}

func BenchmarkGetCompute(b *testing.B) {
	s, _, c := benchStore(b)
	storetest.BenchGetCompute(b, s, c)
}

func BenchmarkUpdateComputeCAS(b *testing.B) {
	s, _, c := benchStore(b)
	storetest.BenchUpdateComputeCAS(b, s, c)
}

// BenchmarkUpdateComputeCASDurable is the compare-and-set on a server that
// flushes its WAL to disk at each commit, as a production server does (the
// test servers do not). It measures this machine's disk as much as the
// store.
func BenchmarkUpdateComputeCASDurable(b *testing.B) {
	srv := pgtest.New(b)
	s := openDSN(b, srv.CreateDatabase(b))
	for _, q := range []string{`ALTER SYSTEM SET fsync = on`, `ALTER SYSTEM SET full_page_writes = on`,
		`SELECT pg_reload_conf()`} {
		if _, err := s.DB().ExecContext(b.Context(), q); err != nil {
			b.Fatal(err)
		}
	}
	p := &store.Project{Name: "durable"}
	if err := s.CreateProject(b.Context(), p); err != nil {
		b.Fatal(err)
	}
	c := &store.Compute{ProjectID: p.ID, State: store.StateSuspended, Driver: "local"}
	if err := s.CreateCompute(b.Context(), c); err != nil {
		b.Fatal(err)
	}
	var fsync string
	if err := s.DB().QueryRowContext(b.Context(), `SHOW fsync`).Scan(&fsync); err != nil || fsync != "on" {
		b.Fatalf("fsync = %q, %v; want on", fsync, err)
	}
	storetest.BenchUpdateComputeCAS(b, s, c)
}
