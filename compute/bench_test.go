package compute_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// reportPercentiles adds p50/p90/p99 of the samples, in milliseconds.
func reportPercentiles(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	at := func(q float64) float64 {
		return float64(samples[int(q*float64(len(samples)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.90), "p90-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}

// BenchmarkResume: suspend, then Wake through the manager until a real
// SELECT 1 answers on a fresh connection. Run with -benchtime 30x or more.
func BenchmarkResume(b *testing.B) {
	e := newEnv(b, "")
	ctx := context.Background()
	p, c, pw := e.project(b, "bench")
	var samples []time.Duration
	for b.Loop() {
		b.StopTimer()
		if _, _, err := e.mgr.Suspend(ctx, c.ID, compute.ReasonAPI); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		res, err := e.mgr.Wake(ctx, p.ID)
		if err != nil {
			b.Fatal(err)
		}
		db := open(b, res.Address, compute.OwnerRole, pw)
		if _, err := db.Exec("SELECT 1"); err != nil && !isUnknownDB(err) {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(t0))
		db.Close()
	}
	reportPercentiles(b, samples)
}

// BenchmarkCreate: a project, its root role and its compute, until active.
func BenchmarkCreate(b *testing.B) {
	e := newEnv(b, "")
	ctx := context.Background()
	e.project(b, "warmup") // builds the template once, outside the timing
	var samples []time.Duration
	i := 0
	for b.Loop() {
		i++
		t0 := time.Now()
		p := &store.Project{ID: store.NewID("prj"), Name: fmt.Sprint("p", i)}
		if err := e.st.CreateProject(ctx, p); err != nil {
			b.Fatal(err)
		}
		if _, _, err := e.mgr.CreateRole(ctx, p.ID, compute.OwnerRole); err != nil {
			b.Fatal(err)
		}
		c, _, err := e.mgr.Create(ctx, p.ID, store.ComputeSpec{Resources: store.Resources{Memory: "128Mi"}})
		if err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(t0))
		b.StopTimer()
		if _, err := e.mgr.Destroy(ctx, c.ID, compute.ReasonAPI); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	reportPercentiles(b, samples)
}
