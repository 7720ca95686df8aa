package scheduler_test

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/scheduler"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/cache"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

// adoptingDriver is the real local driver (real datadirs, so that storage
// sampling walks real files) that reports a fixed set of computes as running,
// so the manager adopts them without starting 50 mariadbd.
type adoptingDriver struct {
	*local.Driver
	running []compute.Instance
}

func (d *adoptingDriver) Running(context.Context) ([]compute.Instance, error) { return d.running, nil }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTick: one scheduler pass over 10,000 projects of which 50 are
// active (recently, so none suspends, but no client bytes since the
// previous tick): the idle checks, the usage heartbeat, and 50 usage
// samples. Reports CPU per tick.
func BenchmarkTick(b *testing.B) { benchTick(b, false) }

// BenchmarkTickWithTraffic is BenchmarkTick with client bytes on every
// active compute before every tick: each sample then measures its
// compute's storage again (the worst case).
func BenchmarkTickWithTraffic(b *testing.B) { benchTick(b, true) }

func benchTick(b *testing.B, traffic bool) {
	ctx := context.Background()
	dir := localtest.Dir(b)
	raw, err := sqlite.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	st := cache.New(raw, time.Hour)
	ld, err := local.New(local.Options{Dir: filepath.Join(dir, "computes"), Logger: logger()})
	if err != nil {
		b.Fatal(err)
	}
	drv := &adoptingDriver{Driver: ld}
	for i := range 10_000 {
		p := &store.Project{ID: fmt.Sprintf("prj_%05d", i), Name: fmt.Sprintf("p%05d", i), Config: store.ProjectConfig{IdleTimeout: 300}}
		if err := st.CreateProject(ctx, p); err != nil {
			b.Fatal(err)
		}
		c := &store.Compute{ID: fmt.Sprintf("cmp_%05d", i), ProjectID: p.ID, Driver: "local", Node: "bench", State: store.StateSuspended}
		if i < 50 {
			c.State, c.Address = store.StateActive, "unix:/nonexistent"
			if err := ld.Provision(ctx, c); err != nil {
				b.Fatal(err)
			}
			drv.running = append(drv.running, compute.Instance{ComputeID: c.ID, Address: c.Address})
		}
		if err := st.CreateCompute(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	mgr := compute.New(compute.Options{Store: st, Driver: drv, Node: "bench", Logger: logger()})
	if err := mgr.Reconcile(ctx); err != nil {
		b.Fatal(err)
	}
	if n := len(mgr.ActiveComputes()); n != 50 {
		b.Fatalf("%d active computes, want 50", n)
	}
	sched := scheduler.New(scheduler.Options{Store: st, Manager: mgr, Interval: time.Second, Logger: logger()})
	var cpu time.Duration
	for b.Loop() {
		for _, w := range mgr.ActiveComputes() {
			a := mgr.Activity(w.ComputeID)
			a.Touch()
			if traffic {
				l := a.Acquire()
				l.Add(100, 1000)
				l.Release()
			}
		}
		t0 := cpuTime()
		sched.Tick(ctx, time.Now())
		cpu += cpuTime() - t0
	}
	if n := len(mgr.ActiveComputes()); n != 50 {
		b.Fatalf("%d computes active after the ticks, want all 50", n)
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/tick")
}
