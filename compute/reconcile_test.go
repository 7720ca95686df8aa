package compute_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// TestReconcileFailsOperationsLeftRunning: a daemon killed mid-operation
// leaves the operation running. The next daemon's reconcile finishes it as
// failed, with a time and a duration, for its own computes and for computes
// that are gone; another node's stay for that node to settle.
func TestReconcileFailsOperationsLeftRunning(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	killedAt := store.Now().Add(-time.Minute)
	mine := storedCompute(t, e.st, "mine", "local", "test")
	far := storedCompute(t, e.st, "far", "local", "node-7")
	ours := leftRunning(t, e.st, mine, mine.ID, killedAt)
	gone := leftRunning(t, e.st, mine, "cmp_gone", killedAt)
	theirs := leftRunning(t, e.st, far, far.ID, killedAt)

	if err := e.mgr.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	wantFailed(t, e.st, ours)
	wantFailed(t, e.st, gone)
	if got := operation(t, e.st, theirs); got.Status != store.OpRunning {
		t.Errorf("another node's operation was finished: %+v", got)
	}
}

// TestReconcileSharedDriverFailsStale: with a shared driver every compute
// is every daemon's, and another daemon may be running an operation right
// now: only operations older than any operation runs are finished.
func TestReconcileSharedDriverFailsStale(t *testing.T) {
	e := newEnv(t, "")
	mgr := compute.New(compute.Options{Store: e.st, Driver: &sharedDriver{Driver: e.drv}, Node: "test", Logger: testLogger(t)})
	c := storedCompute(t, e.st, "pods", "shared", "")
	stale := leftRunning(t, e.st, c, c.ID, store.Now().Add(-11*time.Minute))
	other := storedCompute(t, e.st, "busy", "shared", "")
	young := leftRunning(t, e.st, other, other.ID, store.Now().Add(-time.Minute))
	if err := mgr.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantFailed(t, e.st, stale)
	if got := operation(t, e.st, young); got.Status != store.OpRunning {
		t.Errorf("a young operation, maybe another daemon's, was finished: %s %q", got.Status, got.Error)
	}
}

// storedCompute records a project and a suspended compute as an earlier
// daemon left them, without running anything.
func storedCompute(t *testing.T, st store.Store, name, driver, node string) *store.Compute {
	t.Helper()
	ctx := context.Background()
	p := &store.Project{ID: store.NewID("prj"), Name: name}
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	c := &store.Compute{ProjectID: p.ID, State: store.StateSuspended, Driver: driver, Node: node}
	if err := st.CreateCompute(ctx, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// leftRunning records a start operation on computeID (in c's project) that
// a killed daemon never finished.
func leftRunning(t *testing.T, st store.Store, c *store.Compute, computeID string, at time.Time) *store.Operation {
	t.Helper()
	op := &store.Operation{ProjectID: c.ProjectID, ComputeID: computeID, Action: store.ActionStart,
		Status: store.OpRunning, Reason: compute.ReasonWake, StartedAt: at}
	if err := st.CreateOperation(context.Background(), op); err != nil {
		t.Fatal(err)
	}
	return op
}

// operation reads op back from the store.
func operation(t *testing.T, st store.Store, op *store.Operation) store.Operation {
	t.Helper()
	ops, err := st.ListOperations(context.Background(), op.ProjectID, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ops {
		if o.ID == op.ID {
			return o
		}
	}
	t.Fatalf("operation %s is gone", op.ID)
	return store.Operation{}
}

func wantFailed(t *testing.T, st store.Store, op *store.Operation) {
	t.Helper()
	got := operation(t, st, op)
	if got.Status != store.OpFailed || !strings.Contains(got.Error, "daemon stopped before the operation finished") {
		t.Errorf("operation on %s left running: %s %q, want failed saying the daemon stopped", op.ComputeID, got.Status, got.Error)
	}
	if got.FinishedAt.Before(op.StartedAt.Add(time.Minute)) || got.DurationMS < 60_000 {
		t.Errorf("operation on %s: finished %v after starting %v (%v ms); want finished at the reconcile",
			op.ComputeID, got.FinishedAt, op.StartedAt, got.DurationMS)
	}
}
