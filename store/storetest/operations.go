package storetest

import (
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

func testOperationCRUD(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newProject(t, s, "shop")
	c := newCompute(t, s, p.ID)
	started := time.Date(2030, 5, 6, 7, 8, 9, 123456000, time.UTC)

	op := &store.Operation{ProjectID: p.ID, ComputeID: c.ID, Action: store.ActionStart,
		Reason: "wake", StartedAt: started, DetachedSessions: 7}
	if err := s.CreateOperation(ctx, op); err != nil {
		t.Fatalf("CreateOperation: %v", err)
	}
	if op.ID == "" || op.Status != store.OpRunning || !op.FinishedAt.IsZero() || op.DurationMS != 0 {
		t.Fatalf("CreateOperation: %+v; want an id, running, unfinished", op)
	}
	list, err := s.ListOperations(ctx, p.ID, 0)
	if err != nil {
		t.Fatalf("ListOperations: %v", err)
	}
	same(t, "ListOperations (running)", list, []store.Operation{*op})

	tests := []struct {
		name       string
		status     string
		errText    string
		wantStatus string
	}{
		{"explicit status", store.OpSucceeded, "", store.OpSucceeded},
		{"status from error", "", "mariadbd exited: signal killed", store.OpFailed},
		{"status from no error", "", "", store.OpSucceeded},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Finish from a struct that knows only the id: the store has the rest.
			fin := &store.Operation{ID: op.ID, Status: tc.status, Error: tc.errText,
				FinishedAt: started.Add(time.Duration(i+1) * 1500 * time.Microsecond)}
			if err := s.FinishOperation(ctx, fin); err != nil {
				t.Fatalf("FinishOperation: %v", err)
			}
			wantMS := float64(i+1) * 1.5
			if fin.Status != tc.wantStatus || fin.DurationMS != wantMS || !fin.StartedAt.Equal(started) {
				t.Errorf("FinishOperation: status %q duration %v started %v; want %q %v %v",
					fin.Status, fin.DurationMS, fin.StartedAt, tc.wantStatus, wantMS, started)
			}
			list, err := s.ListOperations(ctx, p.ID, 0)
			if err != nil || len(list) != 1 {
				t.Fatalf("ListOperations = %v, %v; want one operation", list, err)
			}
			got := list[0]
			if got.Status != tc.wantStatus || got.Error != tc.errText || got.DurationMS != wantMS ||
				!got.FinishedAt.Equal(fin.FinishedAt) || got.Reason != "wake" || got.ComputeID != c.ID {
				t.Errorf("stored operation %+v does not match the finish %+v", got, fin)
			}
		})
	}

	// Without times, an operation starts and finishes now.
	now := &store.Operation{ProjectID: p.ID, ComputeID: c.ID, Action: store.ActionSuspend}
	if err := s.CreateOperation(ctx, now); err != nil {
		t.Fatalf("CreateOperation(no time): %v", err)
	}
	time.Sleep(time.Millisecond)
	fin := &store.Operation{ID: now.ID}
	if err := s.FinishOperation(ctx, fin); err != nil {
		t.Fatalf("FinishOperation(no time): %v", err)
	}
	if age := time.Since(now.StartedAt); age < 0 || age > time.Minute || fin.DurationMS < 1 {
		t.Errorf("operation without times: started %v (%v ago), took %v ms", now.StartedAt, age, fin.DurationMS)
	}

	missing := &store.Operation{ID: "op_missing", Status: store.OpFailed}
	wantErr(t, "FinishOperation(unknown)", s.FinishOperation(ctx, missing), store.ErrNotFound, "op_missing")
	orphan := &store.Operation{ProjectID: "prj_missing", ComputeID: c.ID, Action: store.ActionStart}
	wantErr(t, "CreateOperation(unknown project)", s.CreateOperation(ctx, orphan), store.ErrNotFound, c.ID)
	if orphan.ID != "" {
		t.Errorf("a refused CreateOperation changed its argument: %+v", orphan)
	}
	if list, err := s.ListOperations(ctx, "prj_missing", 0); err != nil || list == nil || len(list) != 0 {
		t.Errorf("ListOperations(unknown project) = %v, %v; want an empty non-nil list", list, err)
	}
}

func testOperationsNewestFirst(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newProject(t, s, "shop")
	other := newProject(t, s, "other")
	c := newCompute(t, s, p.ID)
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	// Created out of time order, so that the order must come from the times.
	for _, minute := range []int{3, 1, 4, 0, 2} {
		op := &store.Operation{ProjectID: p.ID, ComputeID: c.ID, Action: store.ActionSuspend,
			StartedAt: base.Add(time.Duration(minute) * time.Minute)}
		if err := s.CreateOperation(ctx, op); err != nil {
			t.Fatalf("CreateOperation: %v", err)
		}
	}
	ops, err := s.ListOperations(ctx, p.ID, 0)
	if err != nil {
		t.Fatalf("ListOperations: %v", err)
	}
	for i := 1; i < len(ops); i++ {
		if !ops[i-1].StartedAt.After(ops[i].StartedAt) {
			t.Errorf("ListOperations not newest first at %d: %v then %v", i, ops[i-1].StartedAt, ops[i].StartedAt)
		}
	}
	if len(ops) != 5 || !ops[0].StartedAt.Equal(base.Add(4*time.Minute)) {
		t.Fatalf("ListOperations = %v; want 5 operations, from minute 4 down", ids(ops, operationID))
	}
	// Operations of another project stay out.
	if err := s.CreateOperation(ctx, &store.Operation{ProjectID: other.ID, ComputeID: "cmp_x",
		Action: store.ActionCreate, StartedAt: base.Add(time.Hour)}); err != nil {
		t.Fatalf("CreateOperation(other project): %v", err)
	}

	for _, tc := range []struct{ limit, want int }{{0, 5}, {-1, 5}, {2, 2}, {5, 5}, {10, 5}} {
		got, err := s.ListOperations(ctx, p.ID, tc.limit)
		if err != nil {
			t.Fatalf("ListOperations(limit %d): %v", tc.limit, err)
		}
		same(t, "ListOperations limit", ids(got, operationID), ids(ops[:tc.want], operationID))
	}
}

// testRunningOperations: what a killed daemon left running is listed, and
// failing it touches only the named compute's operations that were running
// at the given time.
func testRunningOperations(t *testing.T, s store.Store) {
	ctx := t.Context()
	if list, err := s.RunningOperations(ctx); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("RunningOperations(empty store) = %v, %v; want an empty non-nil list", list, err)
	}
	c := newCompute(t, s, newProject(t, s, "shop").ID)
	other := newCompute(t, s, newProject(t, s, "other").ID)
	base := time.Date(2030, 5, 6, 7, 0, 0, 0, time.UTC)
	at := base.Add(time.Hour)
	op := func(cmp *store.Compute, minutes int, status string) *store.Operation {
		t.Helper()
		o := &store.Operation{ProjectID: cmp.ProjectID, ComputeID: cmp.ID, Action: store.ActionStart,
			Status: status, Reason: "wake", StartedAt: base.Add(time.Duration(minutes) * time.Minute)}
		if err := s.CreateOperation(ctx, o); err != nil {
			t.Fatalf("CreateOperation: %v", err)
		}
		return o
	}
	stuck := op(c, 10, store.OpRunning)
	done := op(c, 5, store.OpRunning)
	if err := s.FinishOperation(ctx, &store.Operation{ID: done.ID, FinishedAt: base.Add(6 * time.Minute)}); err != nil {
		t.Fatalf("FinishOperation: %v", err)
	}
	later := op(c, 61, store.OpRunning) // started after at: a live daemon's
	elsewhere := op(other, 1, store.OpRunning)

	running, err := s.RunningOperations(ctx)
	if err != nil {
		t.Fatalf("RunningOperations: %v", err)
	}
	same(t, "RunningOperations (oldest first)", ids(running, operationID), []string{elsewhere.ID, stuck.ID, later.ID})

	const msg = "the daemon stopped before the operation finished"
	n, err := s.FailRunningOperations(ctx, c.ID, msg, at)
	if err != nil || n != 1 {
		t.Fatalf("FailRunningOperations = %d, %v; want 1 (the one started before at)", n, err)
	}
	list, err := s.ListOperations(ctx, c.ProjectID, 0)
	if err != nil {
		t.Fatalf("ListOperations: %v", err)
	}
	failed := *stuck
	failed.Status, failed.Error, failed.FinishedAt, failed.DurationMS = store.OpFailed, msg, at, 50*60*1000
	byID := map[string]store.Operation{}
	for _, o := range list {
		byID[o.ID] = o
	}
	same(t, "the failed operation", byID[stuck.ID], failed)
	if got := byID[done.ID]; got.Status != store.OpSucceeded || got.Error != "" {
		t.Errorf("a finished operation changed: %+v", got)
	}
	if got := byID[later.ID]; got.Status != store.OpRunning || !got.FinishedAt.IsZero() {
		t.Errorf("an operation started after at was failed: %+v", got)
	}
	if n, err := s.FailRunningOperations(ctx, c.ID, msg, at); err != nil || n != 0 {
		t.Errorf("FailRunningOperations again = %d, %v; want 0", n, err)
	}
	if n, err := s.FailRunningOperations(ctx, "cmp_missing", msg, at); err != nil || n != 0 {
		t.Errorf("FailRunningOperations(unknown compute) = %d, %v; want 0", n, err)
	}
	running, err = s.RunningOperations(ctx)
	if err != nil {
		t.Fatalf("RunningOperations: %v", err)
	}
	same(t, "RunningOperations after the fail", ids(running, operationID), []string{elsewhere.ID, later.ID})
}
