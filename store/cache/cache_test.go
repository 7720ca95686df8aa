package cache_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/cache"
	"github.com/serverlessd/serverlessd/store/sqlite"
	"github.com/serverlessd/serverlessd/store/storetest"
)

func openSQLite(t *testing.T) store.Store {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// The wrapper must keep every store guarantee.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return cache.New(openSQLite(t), time.Hour) })
}

// counting counts the reads that reach the real store.
type counting struct {
	store.Store
	reads atomic.Int64
}

func (c *counting) GetProject(ctx context.Context, k string) (*store.Project, error) {
	c.reads.Add(1)
	return c.Store.GetProject(ctx, k)
}

func (c *counting) GetTenant(ctx context.Context, k string) (*store.Tenant, error) {
	c.reads.Add(1)
	return c.Store.GetTenant(ctx, k)
}

func (c *counting) GetRole(ctx context.Context, p, n string) (*store.Role, error) {
	c.reads.Add(1)
	return c.Store.GetRole(ctx, p, n)
}

func TestLoginLookupsHitTheStoreOnceUntilAWrite(t *testing.T) {
	ctx := context.Background()
	inner := &counting{Store: openSQLite(t)}
	st := cache.New(inner, time.Hour)
	p := &store.Project{ID: "prj_1", Name: "shop"}
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateRole(ctx, &store.Role{ProjectID: p.ID, Name: "root", PasswordHash: "*AA"}); err != nil {
		t.Fatal(err)
	}
	login := func() (string, error) {
		p, err := st.GetProject(ctx, "shop")
		if err != nil {
			return "", err
		}
		if _, err := st.GetTenant(ctx, p.TenantID); err != nil { // its quotas
			return "", err
		}
		r, err := st.GetRole(ctx, p.ID, "root")
		if err != nil {
			return "", err
		}
		return r.PasswordHash, nil
	}
	for range 100 {
		if h, err := login(); err != nil || h != "*AA" {
			t.Fatalf("login lookup: %q %v", h, err)
		}
	}
	if n := inner.reads.Load(); n != 3 {
		t.Fatalf("100 logins read the store %d times, want 3 (project, tenant and role, once)", n)
	}
	tn, err := st.GetTenant(ctx, store.DefaultTenantID)
	if err != nil {
		t.Fatal(err)
	}
	tn.Quotas.MaxConnectionsPerProject = 5
	if err := st.UpdateTenant(ctx, tn); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetTenant(ctx, store.DefaultTenantID); got == nil || got.Quotas.MaxConnectionsPerProject != 5 {
		t.Fatalf("after a tenant write the cache served %+v, want the new quota", got)
	}
	if err := st.UpdateRole(ctx, &store.Role{ProjectID: p.ID, Name: "root", PasswordHash: "*BB"}); err != nil {
		t.Fatal(err)
	}
	if h, _ := login(); h != "*BB" {
		t.Fatalf("after a write the cache served %q, want the new hash", h)
	}
	if err := st.DeleteProject(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := login(); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted project still served: %v", err)
	}
	// Misses are cached too, so unknown names cost what known ones do.
	before := inner.reads.Load()
	for range 10 {
		_, _ = st.GetProject(ctx, "ghost")
	}
	if n := inner.reads.Load() - before; n != 1 {
		t.Fatalf("10 lookups of an unknown project read the store %d times, want 1", n)
	}
}

func TestTTLBoundsStaleness(t *testing.T) {
	ctx := context.Background()
	inner := openSQLite(t)
	st := cache.New(inner, 50*time.Millisecond)
	p := &store.Project{ID: "prj_1", Name: "shop"}
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetProject(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	// Another daemon writes behind this cache's back.
	if err := inner.DeleteProject(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	if _, err := st.GetProject(ctx, "shop"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("past the TTL the cache still served a deleted project: %v", err)
	}
}
