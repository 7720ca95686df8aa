package storetest

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

func testProjectCRUD(t *testing.T, s store.Store) {
	ctx := t.Context()
	yes := true
	p := &store.Project{Name: "shop", Config: store.ProjectConfig{
		IdleTimeout:                60,
		SuspendWithOpenConnections: &yes,
		StorageSize:                "10Gi",
		PageServerURL:              "http://pageserver:9898",
		SafekeeperURL:              "http://safekeeper:7676",
	}}
	if err := s.CreateProject(ctx, p); err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	if p.ID == "" || p.CreatedAt.IsZero() || !p.UpdatedAt.Equal(p.CreatedAt) {
		t.Fatalf("CreateProject did not fill id and times: %+v", p)
	}
	isStored(t, "CreatedAt", p.CreatedAt)

	for _, key := range []string{p.ID, p.Name} {
		got, err := s.GetProject(ctx, key)
		if err != nil {
			t.Fatalf("GetProject(%q): %v", key, err)
		}
		same(t, "GetProject("+key+")", got, p)
	}

	updated := *p
	updated.Name = "shop2"
	updated.Config = store.ProjectConfig{IdleTimeout: 0}
	time.Sleep(2 * time.Microsecond) // so that UpdatedAt moves
	if err := s.UpdateProject(ctx, &updated); err != nil {
		t.Fatalf("UpdateProject: %v", err)
	}
	if !updated.UpdatedAt.After(p.UpdatedAt) || !updated.CreatedAt.Equal(p.CreatedAt) {
		t.Errorf("UpdateProject times: created %v updated %v, before created %v updated %v",
			updated.CreatedAt, updated.UpdatedAt, p.CreatedAt, p.UpdatedAt)
	}
	got, err := s.GetProject(ctx, "shop2")
	if err != nil {
		t.Fatalf("GetProject after rename: %v", err)
	}
	same(t, "GetProject after update", got, &updated)
	_, err = s.GetProject(ctx, "shop")
	wantErr(t, "GetProject(old name)", err, store.ErrNotFound, "shop")

	list, err := s.ListProjects(ctx, "", store.Page{})
	if err != nil {
		t.Fatalf("ListProjects: %v", err)
	}
	same(t, "ListProjects", list, []store.Project{updated})

	if err := s.DeleteProject(ctx, p.ID); err != nil {
		t.Fatalf("DeleteProject: %v", err)
	}
	_, err = s.GetProject(ctx, p.ID)
	wantErr(t, "GetProject after delete", err, store.ErrNotFound, p.ID)
	err = s.DeleteProject(ctx, p.ID)
	wantErr(t, "DeleteProject twice", err, store.ErrNotFound, p.ID)
	if list, err := s.ListProjects(ctx, "", store.Page{}); err != nil || list == nil || len(list) != 0 {
		t.Errorf("ListProjects after delete = %v, %v; want an empty non-nil list", list, err)
	}
}

// testProjectNameFilter: NameContains keeps the projects whose name holds
// it anywhere, of the tenant asked, and pages like the unfiltered list.
func testProjectNameFilter(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := newTenant(t, s, "filter")
	for _, n := range []string{"shop-eu", "eshop", "blog", "shop-us"} {
		newProject(t, s, n)
	}
	other := &store.Project{Name: "shop-other", TenantID: tn.ID}
	if err := s.CreateProject(ctx, other); err != nil {
		t.Fatal(err)
	}
	names := func(tenantID string, page store.Page) []string {
		t.Helper()
		list, err := s.ListProjects(ctx, tenantID, page)
		if err != nil {
			t.Fatalf("ListProjects(%q, %+v): %v", tenantID, page, err)
		}
		var out []string
		for _, p := range list {
			out = append(out, p.Name)
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		tenant, match string
		want          []string
	}{
		{"", "shop", []string{"eshop", "shop-eu", "shop-other", "shop-us"}},
		{store.DefaultTenantID, "shop", []string{"eshop", "shop-eu", "shop-us"}},
		{tn.ID, "shop", []string{"shop-other"}},
		{"", "-u", []string{"shop-us"}},
		{"", "blog", []string{"blog"}},
		{"", "none", nil},
		{"", "", []string{"blog", "eshop", "shop-eu", "shop-other", "shop-us"}},
	} {
		got := names(tc.tenant, store.Page{NameContains: tc.match})
		if !slices.Equal(got, tc.want) {
			t.Errorf("ListProjects(%q, contains %q) = %v; want %v", tc.tenant, tc.match, got, tc.want)
		}
	}
	first, err := s.ListProjects(ctx, "", store.Page{Limit: 2, NameContains: "shop"})
	if err != nil || len(first) != 2 {
		t.Fatalf("ListProjects(limit 2, contains shop) = %v, %v", first, err)
	}
	rest := names("", store.Page{After: first[1].ID, NameContains: "shop"})
	all := append(rest, first[0].Name, first[1].Name)
	slices.Sort(all)
	if want := []string{"eshop", "shop-eu", "shop-other", "shop-us"}; !slices.Equal(all, want) {
		t.Errorf("two filtered pages hold %v; want %v", all, want)
	}
}

func testProjectUniqueness(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := newProject(t, s, "alpha")
	b := newProject(t, s, "beta")

	tests := []struct {
		name string
		do   func() error
		key  string
	}{
		{"same name", func() error { return s.CreateProject(ctx, &store.Project{Name: "alpha"}) }, "alpha"},
		{"same id", func() error { return s.CreateProject(ctx, &store.Project{ID: a.ID, Name: "gamma"}) }, "gamma"},
		{"rename onto a taken name", func() error {
			r := *b
			r.Name = "alpha"
			return s.UpdateProject(ctx, &r)
		}, "alpha"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, tc.name, tc.do(), store.ErrAlreadyExists, tc.key)
		})
	}
	// The losers changed nothing.
	got, err := s.GetProject(ctx, "beta")
	if err != nil {
		t.Fatalf("GetProject(beta): %v", err)
	}
	same(t, "beta after a refused rename", got, b)
	if _, err := s.GetProject(ctx, "gamma"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetProject(gamma) = %v, want ErrNotFound", err)
	}
}

// testProjectConcurrentCreate races creations of one name: the database's
// unique index, not a read-then-write, must decide.
func testProjectConcurrentCreate(t *testing.T, s store.Store) {
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.CreateProject(t.Context(), &store.Project{Name: "race"})
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, store.ErrAlreadyExists):
			t.Errorf("CreateProject: %v, want nil or ErrAlreadyExists", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d creations of one name won, want 1", wins)
	}
}
