package postgres

import (
	"fmt"
	"testing"

	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/postgres/pgtest"
)

// benchStore is a store holding 1000 projects with a compute each, so the
// lookups run against a realistically sized index, on a PostgreSQL server
// over loopback TCP. It mirrors store/sqlite's, for side-by-side figures.
func benchStore(b *testing.B) (*Store, *store.Project, *store.Compute) {
	b.Helper()
	s := openFresh(b)
	var p *store.Project
	var c *store.Compute
	for i := range 1000 {
		p = &store.Project{Name: fmt.Sprintf("bench-%04d", i)}
		if err := s.CreateProject(b.Context(), p); err != nil {
			b.Fatal(err)
		}
		c = &store.Compute{ProjectID: p.ID, State: store.StateSuspended, Driver: "local"}
		if err := s.CreateCompute(b.Context(), c); err != nil {
			b.Fatal(err)
		}
	}
	// Plan with real statistics, as autovacuum would soon after the load.
	if _, err := s.DB().ExecContext(b.Context(), `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	return s, p, c
}

// BenchmarkGetProjectByName is the proxy's login lookup.
func BenchmarkGetProjectByName(b *testing.B) {
	s, p, _ := benchStore(b)
	for b.Loop() {
		if _, err := s.GetProject(b.Context(), p.Name); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetCompute(b *testing.B) {
	s, _, c := benchStore(b)
	for b.Loop() {
		if _, err := s.GetCompute(b.Context(), c.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateComputeCAS flips a compute between suspended and active,
// one compare-and-set (one committed write) per op.
func BenchmarkUpdateComputeCAS(b *testing.B) {
	s, _, c := benchStore(b)
	next := map[store.ComputeState]store.ComputeState{
		store.StateSuspended: store.StateActive,
		store.StateActive:    store.StateSuspended,
	}
	for b.Loop() {
		from := c.State
		c.State = next[from]
		if err := s.UpdateCompute(b.Context(), c, from); err != nil {
			b.Fatal(err)
		}
	}
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
	for b.Loop() {
		from := c.State
		c.State = map[store.ComputeState]store.ComputeState{
			store.StateSuspended: store.StateActive, store.StateActive: store.StateSuspended}[from]
		if err := s.UpdateCompute(b.Context(), c, from); err != nil {
			b.Fatal(err)
		}
	}
}
