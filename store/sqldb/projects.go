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
	n.CreatedAt = orNow(n.CreatedAt, store.Now())
	n.UpdatedAt = orNow(n.UpdatedAt, n.CreatedAt)
	cfg, err := jsonText(n.Config)
	if err != nil {
		return fmt.Errorf("create project %q: encode config: %w", n.Name, err)
	}
	_, err = s.q.insertProject.ExecContext(ctx,
		n.ID, n.Name, cfg, micros(n.CreatedAt), micros(n.UpdatedAt))
	if err != nil {
		return s.mapErr(err, "create project %q", n.Name)
	}
	*p = n
	return nil
}

// GetProject finds a project by id or by name.
func (s *Store) GetProject(ctx context.Context, idOrName string) (*store.Project, error) {
	row := s.q.getProject.QueryRowContext(ctx, idOrName, idOrName, idOrName)
	p, err := scanProject(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get project %q: %w", idOrName, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get project %q: %w", idOrName, err)
	}
	return p, nil
}

// ListProjects lists projects ordered by id.
func (s *Store) ListProjects(ctx context.Context, page store.Page) ([]store.Project, error) {
	rows, err := s.q.listProjects.QueryContext(ctx, page.After, pageLimit(page.Limit))
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
		timeCol{&p.CreatedAt}, timeCol{&p.UpdatedAt})
	if err != nil {
		return nil, err
	}
	return &p, nil
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
