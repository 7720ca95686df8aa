package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/serverlessd/serverlessd/store"
)

// CreateProject inserts p. An empty ID gets a new "prj_" id and zero times
// become now; p is updated only on success.
func (s *Store) CreateProject(ctx context.Context, p *store.Project) error {
	n := *p
	if n.ID == "" {
		n.ID = store.NewID("prj")
	}
	if n.TenantID == "" {
		n.TenantID = store.DefaultTenantID
	}
	n.CreatedAt = orNow(n.CreatedAt, store.Now())
	n.UpdatedAt = orNow(n.UpdatedAt, n.CreatedAt)
	cfg, err := jsonText(n.Config)
	if err != nil {
		return fmt.Errorf("create project %q: encode config: %w", n.Name, err)
	}
	_, err = s.q.insertProject.ExecContext(ctx,
		n.ID, n.Name, cfg, micros(n.CreatedAt), micros(n.UpdatedAt), n.TenantID)
	if err != nil {
		return s.mapErrParent(err, "tenant", "create project %q in tenant %s", n.Name, n.TenantID)
	}
	*p = n
	return nil
}

// GetProject finds a project by id, or by name in the default tenant.
func (s *Store) GetProject(ctx context.Context, idOrName string) (*store.Project, error) {
	return getOne(s.q.getProject.QueryRowContext(ctx, idOrName, idOrName, idOrName), scanProject,
		"get project %q", idOrName)
}

// GetTenantProject finds one of a tenant's projects by id or name.
func (s *Store) GetTenantProject(ctx context.Context, tenantID, idOrName string) (*store.Project, error) {
	return getOne(s.q.getTenantProject.QueryRowContext(ctx, tenantID, idOrName, idOrName, idOrName), scanProject,
		"get project %q of tenant %s", idOrName, tenantID)
}

// CountProjects counts a tenant's projects.
func (s *Store) CountProjects(ctx context.Context, tenantID string) (int, error) {
	var n int
	if err := s.q.countProjects.QueryRowContext(ctx, tenantID).Scan(&n); err != nil {
		return 0, fmt.Errorf("count projects of tenant %s: %w", tenantID, err)
	}
	return n, nil
}

// ListProjects lists one tenant's projects, or every tenant's when tenantID
// is "", ordered by id.
func (s *Store) ListProjects(ctx context.Context, tenantID string, page store.Page) ([]store.Project, error) {
	var rows *sql.Rows
	var err error
	like := "%" + page.NameContains + "%"
	if tenantID == "" {
		rows, err = s.q.listProjects.QueryContext(ctx, page.After, like, pageLimit(page.Limit))
	} else {
		rows, err = s.q.listTenantProjects.QueryContext(ctx, tenantID, page.After, like, pageLimit(page.Limit))
	}
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	out, err := collect(rows, scanProject)
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	return out, nil
}

// UpdateProject writes p's name and config. CreatedAt is left as stored.
func (s *Store) UpdateProject(ctx context.Context, p *store.Project) error {
	cfg, err := jsonText(p.Config)
	if err != nil {
		return fmt.Errorf("update project %s: encode config: %w", p.ID, err)
	}
	now := store.Now()
	res, err := s.q.updateProject.ExecContext(ctx, p.Name, cfg, micros(now), p.ID)
	if err != nil {
		return s.mapErr(err, "update project %s (name %q)", p.ID, p.Name)
	}
	if err := mustAffect(res, fmt.Sprintf("update project %s", p.ID)); err != nil {
		return err
	}
	p.UpdatedAt = now
	return nil
}

// DeleteProject deletes a project; the foreign keys' ON DELETE CASCADE
// removes its computes, roles and operations in the same statement.
func (s *Store) DeleteProject(ctx context.Context, id string) error {
	res, err := s.q.deleteProject.ExecContext(ctx, id)
	if err != nil {
		return fmt.Errorf("delete project %s: %w", id, err)
	}
	return mustAffect(res, fmt.Sprintf("delete project %s", id))
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

func scanProject(r scanner) (*store.Project, error) {
	var p store.Project
	err := r.Scan(&p.ID, &p.Name, jsonCol{&p.Config},
		timeCol{&p.CreatedAt}, timeCol{&p.UpdatedAt}, &p.TenantID)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// getOne scans the one row a lookup returns; no row is store.ErrNotFound.
// Errors start with format and args, formatted only on failure.
func getOne[T any](row *sql.Row, scan func(scanner) (*T, error), format string, args ...any) (*T, error) {
	v, err := scan(row)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), err)
	}
	return v, nil
}

// collect scans every row and closes rows.
func collect[T any](rows *sql.Rows, scan func(scanner) (*T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	return out, rows.Err()
}
