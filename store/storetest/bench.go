package storetest

import (
	"fmt"
	"testing"

	"github.com/serverlessd/serverlessd/store"
)

// Fill adds 1000 projects with a compute each to s, so that lookups run
// against a realistically sized index, and returns the last of them.
func Fill(b *testing.B, s store.Store) (*store.Project, *store.Compute) {
	b.Helper()
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
	return p, c
}

// BenchGetProjectByName is the proxy's login lookup.
func BenchGetProjectByName(b *testing.B, s store.Store, p *store.Project) {
	for b.Loop() {
		if _, err := s.GetProject(b.Context(), p.Name); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchGetCompute reads one compute by id.
func BenchGetCompute(b *testing.B, s store.Store, c *store.Compute) {
	for b.Loop() {
		if _, err := s.GetCompute(b.Context(), c.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchUpdateComputeCAS flips a compute between suspended and active: one
// compare-and-set (one committed write) per op.
func BenchUpdateComputeCAS(b *testing.B, s store.Store, c *store.Compute) {
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
