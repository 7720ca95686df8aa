// Package cache wraps a store.Store with a read cache for the lookups on the
// proxy's login path: a project by id or name, its tenant (for its quotas),
// and a role. Writes through the wrapper invalidate what they touch, so one
// daemon never serves stale data; a TTL bounds staleness when other daemons
// share the store.
package cache

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// maxEntries bounds each map; past it the map is cleared. Misses for
// unknown names are cached too (so that probing unknown projects costs the
// same as known ones), and this keeps a flood of them from growing memory.
const maxEntries = 100_000

// Store is a caching store.Store.
type Store struct {
	store.Store
	ttl time.Duration

	mu sync.Mutex
	// gen counts invalidations: a read that raced a write must not put
	// what it read, since the value may predate the write.
	gen      uint64
	projects map[string]entry[store.Project] // by id and by name
	tenants  map[string]entry[store.Tenant]  // by id or name, as asked
	roles    map[roleKey]entry[store.Role]
}

type roleKey struct{ project, name string }

type entry[T any] struct {
	v       T
	err     error // store.ErrNotFound for a cached miss
	expires time.Time
}

// New wraps st. ttl bounds how long a value read from st is served; use a
// long one when this daemon is the store's only writer.
func New(st store.Store, ttl time.Duration) *Store {
	return &Store{Store: st, ttl: ttl, projects: map[string]entry[store.Project]{},
		tenants: map[string]entry[store.Tenant]{}, roles: map[roleKey]entry[store.Role]{}}
}

// GetProject serves a project by id or name from the cache when fresh.
func (s *Store) GetProject(ctx context.Context, idOrName string) (*store.Project, error) {
	p, err, ok, gen := lookup(s, s.projects, idOrName)
	if ok {
		return p, err
	}
	p, err = s.Store.GetProject(ctx, idOrName)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err // outages are not cached
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return p, err
	}
	if p == nil {
		put(s, s.projects, idOrName, store.Project{}, err)
		return nil, err
	}
	put(s, s.projects, p.ID, *p, nil)
	if p.TenantID == store.DefaultTenantID {
		put(s, s.projects, p.Name, *p, nil) // only these are found by name
	}
	return p, nil
}

// GetTenant serves a tenant by id or name from the cache when fresh.
func (s *Store) GetTenant(ctx context.Context, idOrName string) (*store.Tenant, error) {
	t, err, ok, gen := lookup(s, s.tenants, idOrName)
	if ok {
		return t, err
	}
	t, err = s.Store.GetTenant(ctx, idOrName)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return t, err
	}
	var v store.Tenant
	if t != nil {
		v = *t
	}
	put(s, s.tenants, idOrName, v, err)
	return t, err
}

// GetRole serves a role from the cache when fresh.
func (s *Store) GetRole(ctx context.Context, projectID, name string) (*store.Role, error) {
	k := roleKey{projectID, name}
	r, err, ok, gen := lookup(s, s.roles, k)
	if ok {
		return r, err
	}
	r, err = s.Store.GetRole(ctx, projectID, name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return r, err
	}
	var v store.Role
	if r != nil {
		v = *r
	}
	put(s, s.roles, k, v, err)
	return r, err
}

// lookup returns a fresh cached value (a copy) or ok=false, with the
// generation to hand to put after a store read.
func lookup[K comparable, T any](s *Store, m map[K]entry[T], k K) (*T, error, bool, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := m[k]
	if !ok || time.Now().After(e.expires) {
		return nil, nil, false, s.gen
	}
	if e.err != nil {
		return nil, e.err, true, s.gen
	}
	v := e.v
	return &v, nil, true, s.gen
}

// put stores an entry; the caller holds s.mu.
func put[K comparable, T any](s *Store, m map[K]entry[T], k K, v T, err error) {
	if len(m) >= maxEntries {
		clear(m)
	}
	m[k] = entry[T]{v: v, err: err, expires: time.Now().Add(s.ttl)}
}

// invalidate drops everything cached. Writes are rare next to logins, so
// dropping all is simpler than tracking which names map to which id.
func (s *Store) invalidate() {
	s.mu.Lock()
	s.gen++
	clear(s.projects)
	clear(s.tenants)
	clear(s.roles)
	s.mu.Unlock()
}

func (s *Store) CreateTenant(ctx context.Context, t *store.Tenant) error {
	defer s.invalidate()
	return s.Store.CreateTenant(ctx, t)
}

func (s *Store) UpdateTenant(ctx context.Context, t *store.Tenant) error {
	defer s.invalidate()
	return s.Store.UpdateTenant(ctx, t)
}

func (s *Store) DeleteTenant(ctx context.Context, id string) error {
	defer s.invalidate()
	return s.Store.DeleteTenant(ctx, id)
}

func (s *Store) CreateProject(ctx context.Context, p *store.Project) error {
	defer s.invalidate()
	return s.Store.CreateProject(ctx, p)
}

func (s *Store) UpdateProject(ctx context.Context, p *store.Project) error {
	defer s.invalidate()
	return s.Store.UpdateProject(ctx, p)
}

func (s *Store) DeleteProject(ctx context.Context, id string) error {
	defer s.invalidate()
	return s.Store.DeleteProject(ctx, id)
}

func (s *Store) CreateRole(ctx context.Context, r *store.Role) error {
	defer s.invalidate()
	return s.Store.CreateRole(ctx, r)
}

func (s *Store) UpdateRole(ctx context.Context, r *store.Role) error {
	defer s.invalidate()
	return s.Store.UpdateRole(ctx, r)
}

func (s *Store) DeleteRole(ctx context.Context, projectID, name string) error {
	defer s.invalidate()
	return s.Store.DeleteRole(ctx, projectID, name)
}
