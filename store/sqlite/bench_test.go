package sqlite

import (
	"fmt"
	"testing"

	"github.com/serverlessd/serverlessd/store"
)

// benchStore is a store holding 1000 projects with a compute each, so the
// lookups run against a realistically sized index.
func benchStore(b *testing.B) (*Store, *store.Project, *store.Compute) {
	b.Helper()
	s := openTemp(b)
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
