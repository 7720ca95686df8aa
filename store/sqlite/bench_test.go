package sqlite

import (
	"testing"

	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/storetest"
)

// benchStore is a store holding 1000 projects with a compute each.
func benchStore(b *testing.B) (*Store, *store.Project, *store.Compute) {
	b.Helper()
	s := openTemp(b)
	p, c := storetest.Fill(b, s)
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
