package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/serverlessd/serverlessd/store"
)

// CreateCompute inserts c at version 1. An empty ID gets a new "cmp_" id, an
// empty state is creating and zero created/updated times become now; c is
// updated only on success.
func (s *Store) CreateCompute(ctx context.Context, c *store.Compute) error {
	n := *c
	if n.ID == "" {
		n.ID = store.NewID("cmp")
	}
	if n.State == "" {
		n.State = store.StateCreating
	}
	n.Version = 1
	n.CreatedAt = orNow(n.CreatedAt, store.Now())
	n.UpdatedAt = orNow(n.UpdatedAt, n.CreatedAt)
	normComputeTimes(&n)
	spec, err := jsonText(n.Spec)
	if err != nil {
		return fmt.Errorf("create compute for project %s: encode spec: %w", n.ProjectID, err)
	}
	_, err = s.q.insertCompute.ExecContext(ctx,
		n.ID, n.ProjectID, string(n.State), n.Driver, n.Node, spec, n.Address, n.Error,
		micros(n.LastActive), micros(n.StartedAt), micros(n.SuspendedAt),
		micros(n.CreatedAt), micros(n.UpdatedAt), n.Version)
	if err != nil {
		return s.mapErr(err, "create compute for project %s", n.ProjectID)
	}
	if err := s.q.projectTenant.QueryRowContext(ctx, n.ProjectID).Scan(&n.TenantID); err != nil {
		return fmt.Errorf("create compute for project %s: read its tenant: %w", n.ProjectID, err)
	}
	*c = n
	return nil
}

// GetCompute finds a compute by id.
func (s *Store) GetCompute(ctx context.Context, id string) (*store.Compute, error) {
	return s.getCompute(ctx, s.q.getCompute, id, "get compute")
}

// GetComputeByProject finds a project's compute.
func (s *Store) GetComputeByProject(ctx context.Context, projectID string) (*store.Compute, error) {
	return s.getCompute(ctx, s.q.getComputeByProject, projectID, "get compute of project")
}

// getCompute runs a single-compute query; what names it in errors.
func (s *Store) getCompute(ctx context.Context, query *sql.Stmt, key, what string) (*store.Compute, error) {
	return getOne(query.QueryRowContext(ctx, key), scanCompute, "%s %s", what, key)
}

// ListComputes lists computes ordered by id.
func (s *Store) ListComputes(ctx context.Context, page store.Page) ([]store.Compute, error) {
	rows, err := s.q.listComputes.QueryContext(ctx, page.After, pageLimit(page.Limit))
	if err != nil {
		return nil, fmt.Errorf("list computes: %w", err)
	}
	out, err := collect(rows, scanCompute)
	if err != nil {
		return nil, fmt.Errorf("list computes: %w", err)
	}
	return out, nil
}

// ListComputesInState lists the computes in one state, ordered by id.
func (s *Store) ListComputesInState(ctx context.Context, state store.ComputeState, page store.Page) ([]store.Compute, error) {
	rows, err := s.q.listComputesInState.QueryContext(ctx, string(state), page.After, pageLimit(page.Limit))
	if err != nil {
		return nil, fmt.Errorf("list %s computes: %w", state, err)
	}
	out, err := collect(rows, scanCompute)
	if err != nil {
		return nil, fmt.Errorf("list %s computes: %w", state, err)
	}
	return out, nil
}

// UpdateCompute writes c if the stored row is still (from, c.Version). The
// project and creation time never change. A lost race is ErrConflict, an
// unknown id ErrNotFound.
func (s *Store) UpdateCompute(ctx context.Context, c *store.Compute, from store.ComputeState) error {
	n := *c
	n.UpdatedAt = store.Now()
	normComputeTimes(&n)
	spec, err := jsonText(n.Spec)
	if err != nil {
		return fmt.Errorf("update compute %s: encode spec: %w", n.ID, err)
	}
	res, err := s.q.casCompute.ExecContext(ctx,
		string(n.State), n.Driver, n.Node, spec, n.Address, n.Error,
		micros(n.LastActive), micros(n.StartedAt), micros(n.SuspendedAt), micros(n.UpdatedAt),
		n.ID, string(from), n.Version)
	if err != nil {
		return fmt.Errorf("update compute %s (%s -> %s): %w", n.ID, from, n.State, err)
	}
	affected, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("update compute %s (%s -> %s): %w", n.ID, from, n.State, err)
	}
	if affected == 0 {
		return s.casMiss(ctx, &n, from)
	}
	n.Version++
	*c = n
	return nil
}

// casMiss explains why a compare-and-set matched no row: the compute is gone
// (ErrNotFound) or it moved on (ErrConflict, naming what it is now).
func (s *Store) casMiss(ctx context.Context, c *store.Compute, from store.ComputeState) error {
	var state string
	var version int64
	err := s.q.computeExists.QueryRowContext(ctx, c.ID).Scan(&state, &version)
	what := fmt.Sprintf("update compute %s (%s@v%d -> %s)", c.ID, from, c.Version, c.State)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: now %s@v%d: %w", what, state, version, store.ErrConflict)
}

// DeleteCompute deletes a compute. Its operations stay, for the audit trail.
func (s *Store) DeleteCompute(ctx context.Context, id string) error {
	res, err := s.q.deleteCompute.ExecContext(ctx, id)
	if err != nil {
		return fmt.Errorf("delete compute %s: %w", id, err)
	}
	return mustAffect(res, fmt.Sprintf("delete compute %s", id))
}

// normComputeTimes puts the optional times in stored form.
func normComputeTimes(c *store.Compute) {
	c.LastActive = normTime(c.LastActive)
	c.StartedAt = normTime(c.StartedAt)
	c.SuspendedAt = normTime(c.SuspendedAt)
}

func scanCompute(r scanner) (*store.Compute, error) {
	var c store.Compute
	err := r.Scan(&c.ID, &c.ProjectID, &c.State, &c.Driver, &c.Node, jsonCol{&c.Spec},
		&c.Address, &c.Error, timeCol{&c.LastActive}, timeCol{&c.StartedAt},
		timeCol{&c.SuspendedAt}, timeCol{&c.CreatedAt}, timeCol{&c.UpdatedAt}, &c.Version, &c.TenantID)
	if err != nil {
		return nil, err
	}
	return &c, nil
}
