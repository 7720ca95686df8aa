package sqldb

import (
	"context"
	"fmt"

	"github.com/serverlessd/serverlessd/store"
)

// CreateRole inserts r. Zero times become now; r is updated only on success.
func (s *Store) CreateRole(ctx context.Context, r *store.Role) error {
	n := *r
	n.CreatedAt = orNow(n.CreatedAt, store.Now())
	n.UpdatedAt = orNow(n.UpdatedAt, n.CreatedAt)
	_, err := s.q.insertRole.ExecContext(ctx,
		n.ProjectID, n.Name, n.PasswordHash, micros(n.CreatedAt), micros(n.UpdatedAt))
	if err != nil {
		return s.mapErr(err, "create role %q in project %s", n.Name, n.ProjectID)
	}
	*r = n
	return nil
}

// GetRole finds a project's role by name.
func (s *Store) GetRole(ctx context.Context, projectID, name string) (*store.Role, error) {
	return getOne(s.q.getRole.QueryRowContext(ctx, projectID, name), scanRole, "get role %q in project %s", name, projectID)
}

// ListRoles lists a project's roles ordered by name. An unknown project has
// none.
func (s *Store) ListRoles(ctx context.Context, projectID string) ([]store.Role, error) {
	rows, err := s.q.listRoles.QueryContext(ctx, projectID)
	if err != nil {
		return nil, fmt.Errorf("list roles of project %s: %w", projectID, err)
	}
	out, err := collect(rows, scanRole)
	if err != nil {
		return nil, fmt.Errorf("list roles of project %s: %w", projectID, err)
	}
	return out, nil
}

// UpdateRole replaces the role's password hash.
func (s *Store) UpdateRole(ctx context.Context, r *store.Role) error {
	now := store.Now()
	res, err := s.q.updateRole.ExecContext(ctx, r.PasswordHash, micros(now), r.ProjectID, r.Name)
	if err != nil {
		return fmt.Errorf("update role %q in project %s: %w", r.Name, r.ProjectID, err)
	}
	if err := mustAffect(res, fmt.Sprintf("update role %q in project %s", r.Name, r.ProjectID)); err != nil {
		return err
	}
	r.UpdatedAt = now
	return nil
}

// DeleteRole deletes a project's role.
func (s *Store) DeleteRole(ctx context.Context, projectID, name string) error {
	res, err := s.q.deleteRole.ExecContext(ctx, projectID, name)
	if err != nil {
		return fmt.Errorf("delete role %q in project %s: %w", name, projectID, err)
	}
	return mustAffect(res, fmt.Sprintf("delete role %q in project %s", name, projectID))
}

func scanRole(r scanner) (*store.Role, error) {
	var role store.Role
	err := r.Scan(&role.ProjectID, &role.Name, &role.PasswordHash,
		timeCol{&role.CreatedAt}, timeCol{&role.UpdatedAt})
	if err != nil {
		return nil, err
	}
	return &role, nil
}
