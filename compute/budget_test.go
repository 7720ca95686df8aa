package compute_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// TestMemoryBudget runs real computes under a node budget with room for
// three: a fourth start suspends the least recently used idle one; with
// every other compute busy (pinned), a start fails with ErrNodeFull and
// leaves its compute whole and suspended, and starts once one is free.
func TestMemoryBudget(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "")
	const mi = 1 << 20
	e.mgr = compute.New(compute.Options{Store: e.st, Driver: e.drv, Node: "test", Logger: testLogger(t), MemoryBudget: 3*128*mi + 64*mi})
	var cs []*store.Compute
	for _, name := range []string{"one", "two", "three"} {
		_, c, _ := e.projectMem(t, name, "128Mi")
		cs = append(cs, c)
	}
	if used, _ := e.mgr.MemoryInUse(); used != 3*128*mi {
		t.Fatalf("memory in use %d, want 3 x 128Mi", used)
	}
	time.Sleep(1100 * time.Millisecond) // every compute idle; "one" started first
	e.mgr.Activity(cs[1].ID).Touch()    // "two" used just now: not idle

	_, four, _ := e.projectMem(t, "four", "128Mi")
	if st := waitState(t, e.st, cs[0].ID, store.StateSuspended); st != store.StateSuspended {
		t.Fatalf("the least recently used idle compute is %s, want suspended", st)
	}
	for _, c := range []*store.Compute{cs[1], cs[2], four} {
		if got, _ := e.st.GetCompute(ctx, c.ID); got.State != store.StateActive {
			t.Fatalf("compute %s is %s, want active", c.ID, got.State)
		}
	}
	ops, err := e.st.ListOperations(ctx, cs[0].ProjectID, 1)
	if err != nil || len(ops) != 1 || ops[0].Action != store.ActionSuspend || ops[0].Reason != compute.ReasonMemory {
		t.Fatalf("the suspend's operation: %+v, %v; want reason %q", ops, err, compute.ReasonMemory)
	}

	// Every running compute busy: no room.
	for _, c := range []*store.Compute{cs[1], cs[2], four} {
		e.mgr.Activity(c.ID).Pin(1)
	}
	time.Sleep(1100 * time.Millisecond)
	p := &store.Project{Name: "five"}
	if err := e.st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	five, _, err := e.mgr.Create(ctx, p.ID, storeSpec("128Mi", ""))
	if !errors.Is(err, compute.ErrNodeFull) {
		t.Fatalf("create on a full node: %v, want ErrNodeFull", err)
	}
	if got, _ := e.st.GetCompute(ctx, five.ID); got.State != store.StateSuspended {
		t.Fatalf("the refused compute is %s, want suspended", got.State)
	}
	if _, err := e.mgr.Wake(ctx, p.ID); !errors.Is(err, compute.ErrNodeFull) {
		t.Fatalf("wake on a full node: %v, want ErrNodeFull", err)
	}
	e.mgr.Activity(cs[2].ID).Pin(-1) // its transaction ended, a second ago
	time.Sleep(1100 * time.Millisecond)
	res, err := e.mgr.Wake(ctx, p.ID)
	if err != nil || !res.ColdStart {
		t.Fatalf("wake once a compute is idle: %+v, %v", res, err)
	}
	t.Cleanup(func() { _ = e.drv.Stop(context.Background(), five) })
	if got, _ := e.st.GetCompute(ctx, cs[2].ID); got.State != store.StateSuspended {
		t.Fatalf("the idle compute is %s, want suspended for five's room", got.State)
	}
	if used, budget := e.mgr.MemoryInUse(); used > budget {
		t.Fatalf("memory in use %d over the budget %d", used, budget)
	}
}
