package proxy

import (
	"context"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// StoreDirectory answers login lookups from a store. Give it the daemon's
// caching store, so that a warm login does not touch the database.
type StoreDirectory struct{ Store store.Store }

// LookupRole resolves a project (name or id) and one of its roles.
func (d StoreDirectory) LookupRole(ctx context.Context, project, user string) (string, string, error) {
	p, err := d.Store.GetProject(ctx, project)
	if err != nil {
		return "", "", err
	}
	r, err := d.Store.GetRole(ctx, p.ID, user)
	if err != nil {
		return "", "", err
	}
	return p.ID, r.PasswordHash, nil
}

// ProjectMaxConnections returns the project's own connection limit
// (config max_connections; 0 means the daemon's default), bounded by its
// tenant's quota max_connections_per_project.
func (d StoreDirectory) ProjectMaxConnections(ctx context.Context, projectID string) (int, error) {
	p, err := d.Store.GetProject(ctx, projectID)
	if err != nil {
		return 0, err
	}
	t, err := d.Store.GetTenant(ctx, p.TenantID)
	if err != nil {
		return 0, err
	}
	own, quota := p.Config.MaxConnections, t.Quotas.MaxConnectionsPerProject
	if quota > 0 && (own <= 0 || own > quota) {
		return quota, nil
	}
	return own, nil
}

// ProjectPooling returns the project's pool settings.
func (d StoreDirectory) ProjectPooling(ctx context.Context, projectID string) (PoolSettings, error) {
	p, err := d.Store.GetProject(ctx, projectID)
	if err != nil {
		return PoolSettings{}, err
	}
	c := p.Config
	return PoolSettings{Transaction: c.PoolMode == store.PoolTransaction, Size: c.PoolSize,
		Wait: time.Duration(c.PoolWaitTimeout) * time.Second}, nil
}

// ProjectPinnedIdleTimeout returns the project's pinned_idle_timeout in
// seconds (nil: the daemon's default).
func (d StoreDirectory) ProjectPinnedIdleTimeout(ctx context.Context, projectID string) (*int, error) {
	p, err := d.Store.GetProject(ctx, projectID)
	if err != nil {
		return nil, err
	}
	return p.Config.PinnedIdleTimeout, nil
}
