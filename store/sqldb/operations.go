package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// CreateOperation inserts op. An empty ID gets a new "op_" id, an empty
// status is running and a zero StartedAt is now; op is updated only on
// success.
func (s *Store) CreateOperation(ctx context.Context, op *store.Operation) error {
	n := *op
	if n.ID == "" {
		n.ID = store.NewID("op")
	}
	if n.Status == "" {
		n.Status = store.OpRunning
	}
	n.StartedAt = orNow(n.StartedAt, store.Now())
	n.FinishedAt = normTime(n.FinishedAt)
	n.DurationMS = durationMS(n.StartedAt, n.FinishedAt)
	_, err := s.q.insertOperation.ExecContext(ctx,
		n.ID, n.ProjectID, n.ComputeID, n.Action, n.Status, n.Reason, n.Error,
		micros(n.StartedAt), micros(n.FinishedAt), n.DetachedSessions)
	if err != nil {
		return s.mapErr(err, "create %s operation on compute %s", n.Action, n.ComputeID)
	}
	*op = n
	return nil
}

// FinishOperation records op's outcome. A zero FinishedAt is now; an empty
// status is succeeded, or failed when op.Error is set. DurationMS is computed
// from the stored start, so op need not carry it.
func (s *Store) FinishOperation(ctx context.Context, op *store.Operation) error {
	n := *op
	n.FinishedAt = orNow(n.FinishedAt, store.Now())
	if n.Status == "" {
		n.Status = store.OpSucceeded
		if n.Error != "" {
			n.Status = store.OpFailed
		}
	}
	row := s.q.finishOperation.QueryRowContext(ctx, n.Status, n.Error, micros(n.FinishedAt), n.ID)
	err := row.Scan(timeCol{&n.StartedAt})
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("finish operation %s: %w", n.ID, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("finish operation %s: %w", n.ID, err)
	}
	n.DurationMS = durationMS(n.StartedAt, n.FinishedAt)
	*op = n
	return nil
}

// ListOperations lists a project's operations, newest first. A limit of zero
// or less means DefaultLimit. An unknown project has none.
func (s *Store) ListOperations(ctx context.Context, projectID string, limit int) ([]store.Operation, error) {
	rows, err := s.q.listOperations.QueryContext(ctx, projectID, pageLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list operations of project %s: %w", projectID, err)
	}
	out, err := collect(rows, scanOperation)
	if err != nil {
		return nil, fmt.Errorf("list operations of project %s: %w", projectID, err)
	}
	return out, nil
}

// RunningOperations lists every operation still running, oldest first.
func (s *Store) RunningOperations(ctx context.Context) ([]store.Operation, error) {
	out, err := queryAll(ctx, s.q.runningOperations, scanOperation)
	if err != nil {
		return nil, fmt.Errorf("list running operations: %w", err)
	}
	return out, nil
}

// FailRunningOperations finishes the compute's operations that are still
// running and started at or before at as failed with msg, finished at at.
// The status test in the UPDATE makes it a compare-and-set per row: an
// operation another daemon finished meanwhile keeps its outcome.
func (s *Store) FailRunningOperations(ctx context.Context, computeID, msg string, at time.Time) (int, error) {
	at = orNow(at, store.Now())
	res, err := s.q.failRunningOperations.ExecContext(ctx, store.OpFailed, msg, micros(at), computeID, micros(at))
	if err != nil {
		return 0, fmt.Errorf("fail running operations of compute %s: %w", computeID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("fail running operations of compute %s: %w", computeID, err)
	}
	return int(n), nil
}

// durationMS is derived rather than stored, so it can never disagree with
// the two times.
func durationMS(started, finished time.Time) float64 {
	if finished.IsZero() {
		return 0
	}
	return float64(finished.Sub(started).Microseconds()) / 1000
}

func scanOperation(r scanner) (*store.Operation, error) {
	var op store.Operation
	err := r.Scan(&op.ID, &op.ProjectID, &op.ComputeID, &op.Action, &op.Status,
		&op.Reason, &op.Error, timeCol{&op.StartedAt}, timeCol{&op.FinishedAt}, &op.DetachedSessions)
	if err != nil {
		return nil, err
	}
	op.DurationMS = durationMS(op.StartedAt, op.FinishedAt)
	return &op, nil
}
