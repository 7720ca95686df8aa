package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

func testComputeCRUD(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newProject(t, s, "shop")
	c := newCompute(t, s, p.ID)
	if c.ID == "" || c.Version != 1 || c.CreatedAt.IsZero() || !c.UpdatedAt.Equal(c.CreatedAt) {
		t.Fatalf("CreateCompute did not fill id, version and times: %+v", c)
	}

	got, err := s.GetCompute(ctx, c.ID)
	if err != nil {
		t.Fatalf("GetCompute: %v", err)
	}
	same(t, "GetCompute", got, c)
	got, err = s.GetComputeByProject(ctx, p.ID)
	if err != nil {
		t.Fatalf("GetComputeByProject: %v", err)
	}
	same(t, "GetComputeByProject", got, c)
	list, err := s.ListComputes(ctx, store.Page{})
	if err != nil {
		t.Fatalf("ListComputes: %v", err)
	}
	same(t, "ListComputes", list, []store.Compute{*c})

	// A compute without a state starts in creating.
	q := newProject(t, s, "other")
	d := &store.Compute{ProjectID: q.ID, Driver: "kubernetes"}
	if err := s.CreateCompute(ctx, d); err != nil {
		t.Fatalf("CreateCompute(no state): %v", err)
	}
	if d.State != store.StateCreating {
		t.Errorf("CreateCompute(no state) state = %q, want creating", d.State)
	}

	// Deleting the compute keeps its operations: they are the audit trail.
	op := &store.Operation{ProjectID: p.ID, ComputeID: c.ID, Action: store.ActionDestroy}
	if err := s.CreateOperation(ctx, op); err != nil {
		t.Fatalf("CreateOperation: %v", err)
	}
	if err := s.DeleteCompute(ctx, c.ID); err != nil {
		t.Fatalf("DeleteCompute: %v", err)
	}
	_, err = s.GetCompute(ctx, c.ID)
	wantErr(t, "GetCompute after delete", err, store.ErrNotFound, c.ID)
	_, err = s.GetComputeByProject(ctx, p.ID)
	wantErr(t, "GetComputeByProject after delete", err, store.ErrNotFound, p.ID)
	wantErr(t, "DeleteCompute twice", s.DeleteCompute(ctx, c.ID), store.ErrNotFound, c.ID)
	ops, err := s.ListOperations(ctx, p.ID, 0)
	if err != nil || len(ops) != 1 || ops[0].ID != op.ID {
		t.Errorf("ListOperations after DeleteCompute = %v, %v; want the destroy operation", ops, err)
	}
	// The project may have a compute again.
	newCompute(t, s, p.ID)
}

func testComputeUniqueness(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newProject(t, s, "shop")
	c := newCompute(t, s, p.ID)

	second := &store.Compute{ProjectID: p.ID, State: store.StateCreating, Driver: "local"}
	wantErr(t, "second compute for a project", s.CreateCompute(ctx, second), store.ErrAlreadyExists, p.ID)
	if second.ID != "" {
		t.Errorf("a refused CreateCompute changed its argument: %+v", second)
	}
	q := newProject(t, s, "other")
	sameID := &store.Compute{ID: c.ID, ProjectID: q.ID, State: store.StateCreating, Driver: "local"}
	wantErr(t, "compute with a taken id", s.CreateCompute(ctx, sameID), store.ErrAlreadyExists, q.ID)
	orphan := &store.Compute{ProjectID: "prj_missing", State: store.StateCreating, Driver: "local"}
	wantErr(t, "compute for an unknown project", s.CreateCompute(ctx, orphan), store.ErrNotFound, "prj_missing")
}

// testComputeCAS checks each way a compare-and-set can end.
func testComputeCAS(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newProject(t, s, "shop")
	c := newCompute(t, s, p.ID) // suspended, version 1

	next := *c
	next.State = store.StateResuming
	next.Address = "unix:/run/shop.sock"
	next.Error = ""
	next.StartedAt = time.Date(2030, 1, 2, 3, 4, 5, 6007, time.UTC)
	next.LastActive = next.StartedAt
	next.Spec.Resources.Memory = "2Gi"
	time.Sleep(2 * time.Microsecond) // so that UpdatedAt moves
	if err := s.UpdateCompute(ctx, &next, store.StateSuspended); err != nil {
		t.Fatalf("UpdateCompute(suspended -> resuming): %v", err)
	}
	if next.Version != c.Version+1 || !next.UpdatedAt.After(c.UpdatedAt) {
		t.Errorf("after UpdateCompute: version %d updated %v; want %d and after %v",
			next.Version, next.UpdatedAt, c.Version+1, c.UpdatedAt)
	}
	got, err := s.GetCompute(ctx, c.ID)
	if err != nil {
		t.Fatalf("GetCompute: %v", err)
	}
	same(t, "GetCompute after UpdateCompute", got, &next)

	tests := []struct {
		name    string
		from    store.ComputeState
		version int64
		id      string
		want    error
	}{
		{"stale version", store.StateResuming, c.Version, c.ID, store.ErrConflict},
		{"wrong state", store.StateSuspended, next.Version, c.ID, store.ErrConflict},
		{"future version", store.StateResuming, next.Version + 1, c.ID, store.ErrConflict},
		{"unknown id", store.StateResuming, next.Version, "cmp_missing", store.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			try := next
			try.ID, try.Version, try.State = tc.id, tc.version, store.StateActive
			err := s.UpdateCompute(ctx, &try, tc.from)
			wantErr(t, "UpdateCompute", err, tc.want, tc.id)
			if try.Version != tc.version {
				t.Errorf("a failed UpdateCompute changed the version to %d", try.Version)
			}
		})
	}
	got, err = s.GetCompute(ctx, c.ID)
	if err != nil {
		t.Fatalf("GetCompute: %v", err)
	}
	same(t, "GetCompute after lost compare-and-sets", got, &next)
}

// testComputeCASRace races 50 goroutines on one transition from the same
// (state, version): exactly one may win, and the row must hold its write.
func testComputeCASRace(t *testing.T, s store.Store) {
	const n = 50
	p := newProject(t, s, "shop")
	c := newCompute(t, s, p.ID)

	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			mine := *c
			mine.State = store.StateResuming
			mine.Address = fmt.Sprintf("unix:/run/%d.sock", i)
			<-start
			errs[i] = s.UpdateCompute(t.Context(), &mine, store.StateSuspended)
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("goroutines %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("goroutine %d: %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("no goroutine won the compare-and-set")
	}
	got, err := s.GetCompute(t.Context(), c.ID)
	if err != nil {
		t.Fatalf("GetCompute: %v", err)
	}
	want := fmt.Sprintf("unix:/run/%d.sock", winner)
	if got.Version != c.Version+1 || got.State != store.StateResuming || got.Address != want {
		t.Errorf("after the race: %s@v%d at %q; want resuming@v%d at %q",
			got.State, got.Version, got.Address, c.Version+1, want)
	}
}

// testComputeTouch: TouchComputes moves LastActive forward only, leaves the
// version alone (a later compare-and-set still succeeds), and ignores
// unknown ids and an empty list.
func testComputeTouch(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newProject(t, s, "touched")
	c := newCompute(t, s, p.ID)
	at := func(sec int) time.Time { return time.Date(2025, 3, 1, 0, 0, sec, 0, time.UTC) }
	if err := s.TouchComputes(ctx, []string{c.ID, "cmp_unknown"}, at(10)); err != nil {
		t.Fatalf("TouchComputes: %v", err)
	}
	if err := s.TouchComputes(ctx, []string{c.ID}, at(5)); err != nil {
		t.Fatalf("TouchComputes back in time: %v", err)
	}
	if err := s.TouchComputes(ctx, nil, at(20)); err != nil {
		t.Fatalf("TouchComputes(nil): %v", err)
	}
	got, err := s.GetCompute(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.LastActive.Equal(at(10)) || got.Version != c.Version {
		t.Errorf("after the touches: last active %v, version %d; want %v and version %d", got.LastActive, got.Version, at(10), c.Version)
	}
	got.State = store.StateActive
	if err := s.UpdateCompute(ctx, got, store.StateSuspended); err != nil {
		t.Errorf("a compare-and-set after a touch: %v", err)
	}
}

// testComputesInState lists the computes of one state among others, a
// page at a time.
func testComputesInState(t *testing.T, s store.Store) {
	ctx := t.Context()
	var active []string
	for i, st := range []store.ComputeState{store.StateActive, store.StateSuspended, store.StateActive, store.StateFailed, store.StateActive} {
		c := newCompute(t, s, newProject(t, s, fmt.Sprintf("p%d", i)).ID)
		if st != c.State {
			from := c.State
			c.State = st
			if err := s.UpdateCompute(ctx, c, from); err != nil {
				t.Fatalf("UpdateCompute: %v", err)
			}
		}
		if st == store.StateActive {
			active = append(active, c.ID)
		}
	}
	slices.Sort(active)
	var got []string
	page := store.Page{Limit: 2}
	for {
		batch, err := s.ListComputesInState(ctx, store.StateActive, page)
		if err != nil {
			t.Fatalf("ListComputesInState: %v", err)
		}
		for _, c := range batch {
			if c.State != store.StateActive {
				t.Errorf("listed compute %s is %s", c.ID, c.State)
			}
			got = append(got, c.ID)
		}
		if len(batch) < page.Limit {
			break
		}
		page.After = batch[len(batch)-1].ID
	}
	if !slices.Equal(got, active) {
		t.Errorf("active computes listed %v, want %v", got, active)
	}
	if list, err := s.ListComputesInState(ctx, store.StateCreating, store.Page{}); err != nil || len(list) != 0 {
		t.Errorf("ListComputesInState(creating) = %d computes, %v; want none", len(list), err)
	}
}
