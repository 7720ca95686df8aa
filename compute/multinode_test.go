package compute_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/cache"
	"github.com/serverlessd/serverlessd/store/postgres"
	"github.com/serverlessd/serverlessd/store/postgres/pgtest"
)

// sharedDriver stands for a driver whose computes every daemon can reach
// (kubernetes): the real local driver under another name, counting starts.
type sharedDriver struct {
	*local.Driver
	starts     atomic.Int64
	afterStart func(c *store.Compute) // runs as Start returns, when set
}

func (d *sharedDriver) Name() string { return "shared" }

// NodeLocal is false: the point of this driver is that every daemon reaches
// its computes (the embedded local driver would say true).
func (d *sharedDriver) NodeLocal() bool { return false }

func (d *sharedDriver) Start(ctx context.Context, c *store.Compute) (string, error) {
	d.starts.Add(1)
	addr, err := d.Driver.Start(ctx, c)
	if d.afterStart != nil {
		d.afterStart(c)
	}
	return addr, err
}

// TestTwoDaemonsOneStart: two managers, each on its own connection pool to
// one PostgreSQL database (two daemons), share one compute. 100 concurrent
// wakes split across both start it exactly once.
func TestTwoDaemonsOneStart(t *testing.T) {
	dsn := pgtest.Start(t)
	ctx := context.Background()
	drvLocal, err := local.New(local.Options{Dir: filepath.Join(localtest.Dir(t), "computes"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	drv := &sharedDriver{Driver: drvLocal}
	var mgrs []*compute.Manager
	var stores []store.Store
	for _, node := range []string{"a", "b"} {
		pg, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pg.Close() })
		st := cache.New(pg, 2*time.Second)
		stores = append(stores, st)
		mgrs = append(mgrs, compute.New(compute.Options{Store: st, Driver: drv, Node: node, Logger: testLogger(t)}))
	}
	p := &store.Project{ID: store.NewID("prj"), Name: "shared"}
	if err := stores[0].CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	c, _, err := mgrs[0].Create(ctx, p.ID, store.ComputeSpec{Resources: store.Resources{Memory: "128Mi"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Stop(context.Background(), c) })
	if _, _, err := mgrs[0].Suspend(ctx, c.ID, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	drv.starts.Store(0)

	const n = 100
	var wg sync.WaitGroup
	addrs, errs := make([]string, n), make([]error, n)
	gate := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-gate
			res, err := mgrs[i%2].Wake(ctx, p.ID)
			addrs[i], errs[i] = res.Address, err
		})
	}
	close(gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || addrs[i] != addrs[0] || addrs[i] == "" {
			t.Fatalf("wake %d on daemon %d: %q %v (first %q)", i, i%2, addrs[i], errs[i], addrs[0])
		}
	}
	if got := drv.starts.Load(); got != 1 {
		t.Fatalf("%d starts for 100 wakes across two daemons, want 1", got)
	}
	ops, err := stores[1].ListOperations(ctx, p.ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	if ops[0].Action != store.ActionStart || ops[1].Action != store.ActionSuspend {
		t.Fatalf("latest operations %s, %s: want exactly one start after the suspend", ops[0].Action, ops[1].Action)
	}
}

// TestStartTakesOverAReconciledCompute: while one daemon starts a shared
// compute, another's reconciliation finds it resuming with no backend yet
// and resets it to suspended. The start, once its backend runs, takes the
// compute over: active at its address, not a failed wake and an orphan.
func TestStartTakesOverAReconciledCompute(t *testing.T) {
	dsn := pgtest.Start(t)
	ctx := context.Background()
	drvLocal, err := local.New(local.Options{Dir: filepath.Join(localtest.Dir(t), "computes"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	drv := &sharedDriver{Driver: drvLocal}
	pg, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	st := cache.New(pg, 2*time.Second)
	mgr := compute.New(compute.Options{Store: st, Driver: drv, Node: "a", Logger: testLogger(t)})
	p := &store.Project{ID: store.NewID("prj"), Name: "taken"}
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	c, _, err := mgr.Create(ctx, p.ID, store.ComputeSpec{Resources: store.Resources{Memory: "128Mi"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Stop(context.Background(), c) })
	if _, _, err := mgr.Suspend(ctx, c.ID, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	drv.afterStart = func(c *store.Compute) {
		cur, err := st.GetCompute(ctx, c.ID)
		if err != nil {
			t.Error(err)
			return
		}
		cur.State = store.StateSuspended // what the other daemon's reconciliation writes
		if err := st.UpdateCompute(ctx, cur, store.StateResuming); err != nil {
			t.Error(err)
		}
	}
	res, err := mgr.Wake(ctx, p.ID)
	if err != nil {
		t.Fatalf("wake: %v", err)
	}
	cur, err := st.GetCompute(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cur.State != store.StateActive || cur.Address != res.Address {
		t.Fatalf("after the start: %s at %q, want active at %q", cur.State, cur.Address, res.Address)
	}
}

// TestOtherNodesComputeIsRefused: a local compute lives on one node's disk;
// another node's daemon says so, by name.
func TestOtherNodesComputeIsRefused(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	p, c, _ := e.project(t, "elsewhere")
	if _, _, err := e.mgr.Suspend(ctx, c.ID, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	cur, err := e.st.GetCompute(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	cur.Node = "node-7"
	if err := e.st.UpdateCompute(ctx, cur, cur.State); err != nil {
		t.Fatal(err)
	}
	_, err = e.mgr.Wake(ctx, p.ID)
	if !errors.Is(err, compute.ErrOtherNode) || !strings.Contains(err.Error(), "node-7") {
		t.Fatalf("wake of another node's compute: %v", err)
	}
}

// renamedDriver is the local driver under another name: a node-local driver
// that is not called "local", which the manager must treat as local by what
// it says it is, not by its name.
type renamedDriver struct{ *local.Driver }

func (d *renamedDriver) Name() string { return "local-renamed" }

// TestNodeLocalDriverOwnsItsComputes: a node-local driver's compute records
// its node, is refused to another node's daemon and is suspended when its
// own daemon stops.
func TestNodeLocalDriverOwnsItsComputes(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	drv := &renamedDriver{Driver: e.drv}
	mgr := compute.New(compute.Options{Store: e.st, Driver: drv, Node: "test", Logger: testLogger(t)})
	p := &store.Project{ID: store.NewID("prj"), Name: "renamed"}
	if err := e.st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	c, _, err := mgr.Create(ctx, p.ID, store.ComputeSpec{Resources: store.Resources{Memory: "128Mi"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Stop(context.Background(), c) })
	if c.Node != "test" || c.Driver != "local-renamed" {
		t.Fatalf("compute recorded driver %q node %q, want local-renamed on test", c.Driver, c.Node)
	}
	other := compute.New(compute.Options{Store: e.st, Driver: drv, Node: "node-7", Logger: testLogger(t)})
	if _, err := other.Wake(ctx, p.ID); !errors.Is(err, compute.ErrOtherNode) {
		t.Fatalf("wake from another node: %v, want ErrOtherNode", err)
	}
	if err := mgr.SuspendAll(ctx, compute.ReasonShutdown); err != nil {
		t.Fatal(err)
	}
	if cur, err := e.st.GetCompute(ctx, c.ID); err != nil || cur.State != store.StateSuspended {
		t.Fatalf("after SuspendAll the compute is %v (%v), want suspended", cur, err)
	}
}
