package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// newTenant creates a tenant or fails the test.
func newTenant(t *testing.T, s store.Store, name string) *store.Tenant {
	t.Helper()
	tn := &store.Tenant{Name: name}
	if err := s.CreateTenant(t.Context(), tn); err != nil {
		t.Fatalf("CreateTenant(%q): %v", name, err)
	}
	return tn
}

func testTenantCRUD(t *testing.T, s store.Store) {
	ctx := t.Context()
	def, err := s.GetTenant(ctx, store.DefaultTenantName)
	if err != nil {
		t.Fatalf("the default tenant: %v", err)
	}
	if def.ID != store.DefaultTenantID {
		t.Fatalf("default tenant id %q, want %q", def.ID, store.DefaultTenantID)
	}
	tn := &store.Tenant{Name: "acme", Quotas: store.TenantQuotas{MaxProjects: 3, MaxComputeMemory: "1Gi"}}
	if err := s.CreateTenant(ctx, tn); err != nil {
		t.Fatalf("CreateTenant: %v", err)
	}
	if tn.ID == "" || tn.CreatedAt.IsZero() {
		t.Fatalf("CreateTenant did not fill id and times: %+v", tn)
	}
	for _, key := range []string{tn.ID, tn.Name} {
		got, err := s.GetTenant(ctx, key)
		if err != nil {
			t.Fatalf("GetTenant(%q): %v", key, err)
		}
		same(t, "GetTenant("+key+")", got, tn)
	}
	wantErr(t, "CreateTenant(same name)", s.CreateTenant(ctx, &store.Tenant{Name: "acme"}), store.ErrAlreadyExists, "acme")

	upd := *tn
	upd.Name, upd.Quotas = "acme2", store.TenantQuotas{MaxConnectionsPerProject: 7}
	time.Sleep(2 * time.Microsecond)
	if err := s.UpdateTenant(ctx, &upd); err != nil {
		t.Fatalf("UpdateTenant: %v", err)
	}
	got, err := s.GetTenant(ctx, "acme2")
	if err != nil {
		t.Fatalf("GetTenant after rename: %v", err)
	}
	same(t, "GetTenant after update", got, &upd)
	list, err := s.ListTenants(ctx, store.Page{})
	if err != nil {
		t.Fatalf("ListTenants: %v", err)
	}
	if len(list) != 2 || list[0].ID > list[1].ID {
		t.Errorf("ListTenants = %+v, want the default tenant and acme2 in id order", list)
	}

	// A tenant with a project cannot go; once the project is gone it can,
	// and its keys go with it.
	p := &store.Project{Name: "shop", TenantID: tn.ID}
	if err := s.CreateProject(ctx, p); err != nil {
		t.Fatalf("CreateProject in the tenant: %v", err)
	}
	k := &store.APIKey{TenantID: tn.ID, Name: "ci", Scope: store.ScopeTenant, Hash: "h-ci"}
	if err := s.CreateAPIKey(ctx, k); err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}
	if err := s.DeleteTenant(ctx, tn.ID); !errors.Is(err, store.ErrInUse) {
		t.Fatalf("DeleteTenant with a project = %v, want ErrInUse", err)
	}
	if err := s.DeleteProject(ctx, p.ID); err != nil {
		t.Fatalf("DeleteProject: %v", err)
	}
	if err := s.DeleteTenant(ctx, tn.ID); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	wantErr(t, "GetTenant after delete", func() error { _, err := s.GetTenant(ctx, tn.ID); return err }(), store.ErrNotFound, tn.ID)
	wantErr(t, "DeleteTenant twice", s.DeleteTenant(ctx, tn.ID), store.ErrNotFound, tn.ID)
	if _, err := s.GetAPIKeyByHash(ctx, "h-ci"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the deleted tenant's key = %v, want ErrNotFound", err)
	}
	err = s.CreateProject(ctx, &store.Project{Name: "orphan", TenantID: "ten_missing"})
	wantErr(t, "CreateProject in a missing tenant", err, store.ErrNotFound, "ten_missing")
}

// testTenantProjects checks that names are unique per tenant, that only
// the default tenant's projects are found by name without a tenant, and
// that lists are filtered by tenant.
func testTenantProjects(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := newTenant(t, s, "team-a"), newTenant(t, s, "team-b")
	def := newProject(t, s, "shop")
	if def.TenantID != store.DefaultTenantID {
		t.Fatalf("a project created without a tenant is in %q, want the default tenant", def.TenantID)
	}
	pa := &store.Project{Name: "shop", TenantID: a.ID}
	pb := &store.Project{Name: "shop", TenantID: b.ID}
	for _, p := range []*store.Project{pa, pb} {
		if err := s.CreateProject(ctx, p); err != nil {
			t.Fatalf("CreateProject(shop in %s): %v", p.TenantID, err)
		}
	}
	wantErr(t, "the same name twice in a tenant", s.CreateProject(ctx, &store.Project{Name: "shop", TenantID: a.ID}), store.ErrAlreadyExists, "shop")
	other := &store.Project{Name: "other", TenantID: a.ID}
	if err := s.CreateProject(ctx, other); err != nil {
		t.Fatal(err)
	}
	ren := *other
	ren.Name = "shop"
	wantErr(t, "a rename onto a name taken in the tenant", s.UpdateProject(ctx, &ren), store.ErrAlreadyExists, "shop")

	got, err := s.GetProject(ctx, "shop")
	if err != nil || got.ID != def.ID {
		t.Fatalf("GetProject(shop) = %+v, %v; want the default tenant's", got, err)
	}
	got, err = s.GetProject(ctx, pa.ID)
	if err != nil || got.ID != pa.ID {
		t.Fatalf("GetProject(id of another tenant's project) = %+v, %v", got, err)
	}
	for _, tc := range []struct {
		tenant, key string
		want        *store.Project
	}{
		{a.ID, "shop", pa}, {a.ID, pa.ID, pa}, {b.ID, "shop", pb}, {b.ID, pb.ID, pb},
		{a.ID, pb.ID, nil}, {b.ID, "other", nil}, {a.ID, def.ID, nil}, {store.DefaultTenantID, pa.ID, nil},
	} {
		got, err := s.GetTenantProject(ctx, tc.tenant, tc.key)
		if tc.want == nil {
			wantErr(t, "GetTenantProject("+tc.tenant+", "+tc.key+")", err, store.ErrNotFound, tc.key)
			continue
		}
		if err != nil {
			t.Fatalf("GetTenantProject(%s, %s): %v", tc.tenant, tc.key, err)
		}
		same(t, "GetTenantProject("+tc.tenant+", "+tc.key+")", got, tc.want)
	}

	for _, tc := range []struct {
		tenant string
		want   int
	}{{a.ID, 2}, {b.ID, 1}, {store.DefaultTenantID, 1}, {"", 4}} {
		list, err := s.ListProjects(ctx, tc.tenant, store.Page{})
		if err != nil || len(list) != tc.want {
			t.Errorf("ListProjects(%q) = %d projects, %v; want %d", tc.tenant, len(list), err, tc.want)
		}
		for _, p := range list {
			if tc.tenant != "" && p.TenantID != tc.tenant {
				t.Errorf("ListProjects(%q) lists %s of tenant %s", tc.tenant, p.ID, p.TenantID)
			}
		}
		if tc.tenant == "" {
			continue
		}
		if n, err := s.CountProjects(ctx, tc.tenant); err != nil || n != tc.want {
			t.Errorf("CountProjects(%q) = %d, %v; want %d", tc.tenant, n, err, tc.want)
		}
	}
	page, err := s.ListProjects(ctx, a.ID, store.Page{Limit: 1})
	if err != nil || len(page) != 1 {
		t.Fatalf("ListProjects(a, limit 1) = %v, %v", page, err)
	}
	rest, err := s.ListProjects(ctx, a.ID, store.Page{After: page[0].ID})
	if err != nil || len(rest) != 1 || rest[0].ID == page[0].ID || rest[0].TenantID != a.ID {
		t.Errorf("ListProjects(a, after %s) = %+v, %v; want the tenant's other project", page[0].ID, rest, err)
	}
}

func testAPIKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := newTenant(t, s, "keys")
	p := &store.Project{Name: "app", TenantID: tn.ID}
	if err := s.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	exp := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	keys := []*store.APIKey{
		{TenantID: tn.ID, Name: "all", Scope: store.ScopeTenant, Hash: "h1"},
		{TenantID: tn.ID, Name: "one", Scope: store.ScopeProject, ProjectID: p.ID, ReadOnly: true, Hash: "h2", ExpiresAt: exp},
	}
	for _, k := range keys {
		if err := s.CreateAPIKey(ctx, k); err != nil {
			t.Fatalf("CreateAPIKey(%s): %v", k.Name, err)
		}
	}
	wantErr(t, "a second key with the same hash",
		s.CreateAPIKey(ctx, &store.APIKey{TenantID: tn.ID, Name: "dup", Scope: store.ScopeTenant, Hash: "h1"}), store.ErrAlreadyExists, "dup")
	wantErr(t, "a key for a missing project",
		s.CreateAPIKey(ctx, &store.APIKey{TenantID: tn.ID, Name: "x", Scope: store.ScopeProject, ProjectID: "prj_missing", Hash: "h3"}), store.ErrNotFound, "x")

	got, err := s.GetAPIKeyByHash(ctx, "h2")
	if err != nil {
		t.Fatalf("GetAPIKeyByHash: %v", err)
	}
	same(t, "GetAPIKeyByHash", got, keys[1])
	at := time.Now().UTC().Truncate(time.Microsecond)
	if err := s.TouchAPIKey(ctx, keys[1].ID, at); err != nil {
		t.Fatalf("TouchAPIKey: %v", err)
	}
	if err := s.TouchAPIKey(ctx, keys[1].ID, at.Add(-time.Hour)); err != nil {
		t.Fatalf("TouchAPIKey (earlier): %v", err)
	}
	if got, _ := s.GetAPIKeyByHash(ctx, "h2"); got == nil || !got.LastUsedAt.Equal(at) {
		t.Errorf("LastUsedAt = %v, want %v (never moved back)", got, at)
	}
	list, err := s.ListAPIKeys(ctx, tn.ID)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListAPIKeys = %+v, %v", list, err)
	}
	wantErr(t, "DeleteAPIKey of another tenant", s.DeleteAPIKey(ctx, store.DefaultTenantID, keys[0].ID), store.ErrNotFound, keys[0].ID)
	if err := s.DeleteAPIKey(ctx, tn.ID, keys[0].ID); err != nil {
		t.Fatalf("DeleteAPIKey: %v", err)
	}
	if _, err := s.GetAPIKeyByHash(ctx, "h1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a revoked key = %v, want ErrNotFound", err)
	}
	// Deleting the project revokes its project-scoped keys.
	if err := s.DeleteProject(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAPIKeyByHash(ctx, "h2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the key of a deleted project = %v, want ErrNotFound", err)
	}
}
