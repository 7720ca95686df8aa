package sqldb

import (
	"context"
	"fmt"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// CreateTenant inserts t. An empty ID gets a new "ten_" id and zero times
// become now; t is updated only on success.
func (s *Store) CreateTenant(ctx context.Context, t *store.Tenant) error {
	n := *t
	if n.ID == "" {
		n.ID = store.NewID("ten")
	}
	n.CreatedAt = orNow(n.CreatedAt, store.Now())
	n.UpdatedAt = orNow(n.UpdatedAt, n.CreatedAt)
	quotas, err := jsonText(n.Quotas)
	if err != nil {
		return fmt.Errorf("create tenant %q: encode quotas: %w", n.Name, err)
	}
	_, err = s.q.insertTenant.ExecContext(ctx, n.ID, n.Name, quotas, micros(n.CreatedAt), micros(n.UpdatedAt))
	if err != nil {
		return s.mapErr(err, "create tenant %q", n.Name)
	}
	*t = n
	return nil
}

// GetTenant finds a tenant by id or by name.
func (s *Store) GetTenant(ctx context.Context, idOrName string) (*store.Tenant, error) {
	return getOne(s.q.getTenant.QueryRowContext(ctx, idOrName, idOrName, idOrName), scanTenant, "get tenant %q", idOrName)
}

// ListTenants lists tenants ordered by id.
func (s *Store) ListTenants(ctx context.Context, page store.Page) ([]store.Tenant, error) {
	rows, err := s.q.listTenants.QueryContext(ctx, page.After, pageLimit(page.Limit))
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	out, err := collect(rows, scanTenant)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return out, nil
}

// UpdateTenant writes t's name and quotas.
func (s *Store) UpdateTenant(ctx context.Context, t *store.Tenant) error {
	quotas, err := jsonText(t.Quotas)
	if err != nil {
		return fmt.Errorf("update tenant %s: encode quotas: %w", t.ID, err)
	}
	now := store.Now()
	res, err := s.q.updateTenant.ExecContext(ctx, t.Name, quotas, micros(now), t.ID)
	if err != nil {
		return s.mapErr(err, "update tenant %s (name %q)", t.ID, t.Name)
	}
	if err := mustAffect(res, fmt.Sprintf("update tenant %s", t.ID)); err != nil {
		return err
	}
	t.UpdatedAt = now
	return nil
}

// DeleteTenant deletes a tenant and, by cascade, its API keys. Its projects
// hold it: the foreign key refuses the delete while any remains.
func (s *Store) DeleteTenant(ctx context.Context, id string) error {
	res, err := s.q.deleteTenant.ExecContext(ctx, id)
	if s.isForeignKey(err) {
		return fmt.Errorf("delete tenant %s: it still has projects: %w", id, store.ErrInUse)
	}
	if err != nil {
		return fmt.Errorf("delete tenant %s: %w", id, err)
	}
	return mustAffect(res, fmt.Sprintf("delete tenant %s", id))
}

func scanTenant(r scanner) (*store.Tenant, error) {
	var t store.Tenant
	if err := r.Scan(&t.ID, &t.Name, jsonCol{&t.Quotas}, timeCol{&t.CreatedAt}, timeCol{&t.UpdatedAt}); err != nil {
		return nil, err
	}
	return &t, nil
}

// CreateAPIKey inserts k. An empty ID gets a new "key_" id and a zero
// CreatedAt is now; k is updated only on success.
func (s *Store) CreateAPIKey(ctx context.Context, k *store.APIKey) error {
	n := *k
	if n.ID == "" {
		n.ID = store.NewID("key")
	}
	n.CreatedAt = orNow(n.CreatedAt, store.Now())
	_, err := s.q.insertAPIKey.ExecContext(ctx, n.ID, n.TenantID, n.Name, n.Scope, nullString(n.ProjectID),
		n.ReadOnly, n.Hash, micros(n.ExpiresAt), micros(n.CreatedAt), micros(n.LastUsedAt))
	if err != nil {
		return s.mapErrParent(err, "tenant or project", "create API key %q in tenant %s", n.Name, n.TenantID)
	}
	*k = n
	return nil
}

// GetAPIKeyByHash finds a key by the hash of its secret.
func (s *Store) GetAPIKeyByHash(ctx context.Context, hash string) (*store.APIKey, error) {
	return getOne(s.q.getAPIKeyByHash.QueryRowContext(ctx, hash), scanAPIKey, "get API key by hash")
}

// ListAPIKeys lists a tenant's keys ordered by id.
func (s *Store) ListAPIKeys(ctx context.Context, tenantID string) ([]store.APIKey, error) {
	rows, err := s.q.listAPIKeys.QueryContext(ctx, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list API keys of tenant %s: %w", tenantID, err)
	}
	out, err := collect(rows, scanAPIKey)
	if err != nil {
		return nil, fmt.Errorf("list API keys of tenant %s: %w", tenantID, err)
	}
	return out, nil
}

// DeleteAPIKey deletes one of a tenant's keys.
func (s *Store) DeleteAPIKey(ctx context.Context, tenantID, id string) error {
	res, err := s.q.deleteAPIKey.ExecContext(ctx, tenantID, id)
	if err != nil {
		return fmt.Errorf("delete API key %s: %w", id, err)
	}
	return mustAffect(res, fmt.Sprintf("delete API key %s of tenant %s", id, tenantID))
}

// TouchAPIKey moves the key's last use forward to at; a revoked key is
// ignored.
func (s *Store) TouchAPIKey(ctx context.Context, id string, at time.Time) error {
	at = orNow(at, store.Now())
	if _, err := s.q.touchAPIKey.ExecContext(ctx, micros(at), id, micros(at)); err != nil {
		return fmt.Errorf("touch API key %s: %w", id, err)
	}
	return nil
}

func scanAPIKey(r scanner) (*store.APIKey, error) {
	var k store.APIKey
	var project *string
	err := r.Scan(&k.ID, &k.TenantID, &k.Name, &k.Scope, &project, &k.ReadOnly, &k.Hash,
		timeCol{&k.ExpiresAt}, timeCol{&k.CreatedAt}, timeCol{&k.LastUsedAt})
	if err != nil {
		return nil, err
	}
	if project != nil {
		k.ProjectID = *project
	}
	return &k, nil
}

// nullString stores "" as NULL.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
