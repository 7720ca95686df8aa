package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// testPagination walks projects and computes page by page, ordered by id,
// with more items than the default page holds.
func testPagination(t *testing.T, s store.Store) {
	const total = 105 // more than the default limit of 100
	var projectIDs, computeIDs []string
	for i := range total {
		p := newProject(t, s, name("p", i))
		projectIDs = append(projectIDs, p.ID)
		computeIDs = append(computeIDs, newCompute(t, s, p.ID).ID)
	}
	slices.Sort(projectIDs)
	slices.Sort(computeIDs)

	listProjects := func(page store.Page) ([]string, error) {
		list, err := s.ListProjects(t.Context(), "", page)
		return ids(list, projectID), err
	}
	listComputes := func(page store.Page) ([]string, error) {
		list, err := s.ListComputes(t.Context(), page)
		return ids(list, computeID), err
	}
	for _, kind := range []struct {
		name string
		all  []string
		list func(store.Page) ([]string, error)
	}{
		{"projects", projectIDs, listProjects},
		{"computes", computeIDs, listComputes},
	} {
		t.Run(kind.name, func(t *testing.T) {
			testPages(t, kind.all, kind.list)
		})
	}
}

// testPages checks single pages, then walks the whole list in pages of 10.
func testPages(t *testing.T, all []string, list func(store.Page) ([]string, error)) {
	tests := []struct {
		name string
		page store.Page
		want []string
	}{
		{"default limit", store.Page{}, all[:100]},
		{"negative limit", store.Page{Limit: -5}, all[:100]},
		{"first 3", store.Page{Limit: 3}, all[:3]},
		{"after the 3rd", store.Page{Limit: 3, After: all[2]}, all[3:6]},
		{"after an id between two", store.Page{Limit: 2, After: all[2] + "!"}, all[3:5]},
		{"over the end", store.Page{Limit: 10, After: all[100]}, all[101:]},
		{"after the last", store.Page{Limit: 10, After: all[len(all)-1]}, []string{}},
		{"more than all", store.Page{Limit: 1000}, all},
	}
	for _, tc := range tests {
		got, err := list(tc.page)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		same(t, tc.name, got, tc.want)
	}

	var walked []string
	page := store.Page{Limit: 10}
	for {
		got, err := list(page)
		if err != nil {
			t.Fatalf("walk after %q: %v", page.After, err)
		}
		if len(got) == 0 {
			break
		}
		walked = append(walked, got...)
		page.After = got[len(got)-1]
	}
	same(t, "walking pages of 10", walked, all)
}

// testDeleteProjectCascades deletes a project with a compute, roles and
// operations, and checks that all of them went and another project's stayed.
func testDeleteProjectCascades(t *testing.T, s store.Store) {
	ctx := t.Context()
	type fixture struct {
		p *store.Project
		c *store.Compute
	}
	make1 := func(name string) fixture {
		p := newProject(t, s, name)
		c := newCompute(t, s, p.ID)
		for _, role := range []string{"root", "app"} {
			if err := s.CreateRole(ctx, &store.Role{ProjectID: p.ID, Name: role, PasswordHash: hashA}); err != nil {
				t.Fatalf("CreateRole: %v", err)
			}
		}
		for _, action := range []string{store.ActionCreate, store.ActionStart} {
			if err := s.CreateOperation(ctx, &store.Operation{ProjectID: p.ID, ComputeID: c.ID, Action: action}); err != nil {
				t.Fatalf("CreateOperation: %v", err)
			}
		}
		return fixture{p, c}
	}
	gone, kept := make1("gone"), make1("kept")

	if err := s.DeleteProject(ctx, gone.p.ID); err != nil {
		t.Fatalf("DeleteProject: %v", err)
	}
	_, err := s.GetCompute(ctx, gone.c.ID)
	wantErr(t, "GetCompute of a deleted project", err, store.ErrNotFound, gone.c.ID)
	_, err = s.GetComputeByProject(ctx, gone.p.ID)
	wantErr(t, "GetComputeByProject of a deleted project", err, store.ErrNotFound, gone.p.ID)
	_, err = s.GetRole(ctx, gone.p.ID, "root")
	wantErr(t, "GetRole of a deleted project", err, store.ErrNotFound, "root")
	if roles, err := s.ListRoles(ctx, gone.p.ID); err != nil || len(roles) != 0 {
		t.Errorf("ListRoles of a deleted project = %v, %v; want none", roles, err)
	}
	if ops, err := s.ListOperations(ctx, gone.p.ID, 0); err != nil || len(ops) != 0 {
		t.Errorf("ListOperations of a deleted project = %v, %v; want none", ops, err)
	}

	if _, err := s.GetCompute(ctx, kept.c.ID); err != nil {
		t.Errorf("the other project's compute: %v", err)
	}
	if roles, err := s.ListRoles(ctx, kept.p.ID); err != nil || len(roles) != 2 {
		t.Errorf("the other project's roles = %v, %v; want 2", roles, err)
	}
	if ops, err := s.ListOperations(ctx, kept.p.ID, 0); err != nil || len(ops) != 2 {
		t.Errorf("the other project's operations = %v, %v; want 2", ops, err)
	}
	if cs, err := s.ListComputes(ctx, store.Page{}); err != nil || len(cs) != 1 {
		t.Errorf("ListComputes after the delete = %v, %v; want 1", cs, err)
	}
}

// testTimes writes times with nanoseconds, in other zones, before 1970 and
// far ahead, and checks that they come back in UTC at microsecond precision,
// equal to what the store left in the written struct; zero times stay zero.
func testTimes(t *testing.T, s store.Store) {
	ctx := t.Context()
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		paris = time.FixedZone("CET", 3600) // no tzdata on this machine
	}
	tests := []struct {
		name string
		at   time.Time
	}{
		{"nanoseconds", time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC)},
		{"other zone", time.Date(2025, 7, 1, 23, 30, 0, 999999999, paris)},
		{"fixed offset", time.Date(2025, 1, 1, 0, 0, 0, 1000, time.FixedZone("X", -7*3600))},
		{"before 1970", time.Date(1969, 12, 31, 23, 59, 59, 500000000, time.UTC)},
		{"far ahead", time.Date(2200, 1, 1, 0, 0, 0, 1000, time.UTC)},
		{"monotonic now", time.Now()},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.at.UTC().Truncate(time.Microsecond)
			p := &store.Project{Name: name("t", i), CreatedAt: tc.at}
			if err := s.CreateProject(ctx, p); err != nil {
				t.Fatalf("CreateProject: %v", err)
			}
			c := &store.Compute{ProjectID: p.ID, State: store.StateActive, Driver: "local",
				LastActive: tc.at, StartedAt: tc.at, CreatedAt: tc.at}
			if err := s.CreateCompute(ctx, c); err != nil {
				t.Fatalf("CreateCompute: %v", err)
			}
			checkTimes(t, "written project", want, p.CreatedAt, p.UpdatedAt)
			checkTimes(t, "written compute", want, c.CreatedAt, c.LastActive, c.StartedAt)

			gotP, err := s.GetProject(ctx, p.ID)
			if err != nil {
				t.Fatalf("GetProject: %v", err)
			}
			same(t, "GetProject", gotP, p)
			gotC, err := s.GetCompute(ctx, c.ID)
			if err != nil {
				t.Fatalf("GetCompute: %v", err)
			}
			same(t, "GetCompute", gotC, c)
			if !gotC.SuspendedAt.IsZero() {
				t.Errorf("a zero SuspendedAt came back as %v", gotC.SuspendedAt)
			}
		})
	}

	// Clearing a time through an update stores the zero time again.
	c, err := s.GetComputeByProject(ctx, mustProject(t, s, name("t", 0)).ID)
	if err != nil {
		t.Fatalf("GetComputeByProject: %v", err)
	}
	from := c.State
	c.State, c.StartedAt, c.SuspendedAt = store.StateSuspended, time.Time{}, tests[0].at
	if err := s.UpdateCompute(ctx, c, from); err != nil {
		t.Fatalf("UpdateCompute: %v", err)
	}
	got, err := s.GetCompute(ctx, c.ID)
	if err != nil {
		t.Fatalf("GetCompute: %v", err)
	}
	same(t, "GetCompute after clearing StartedAt", got, c)
}

func checkTimes(t *testing.T, what string, want time.Time, got ...time.Time) {
	t.Helper()
	for _, tm := range got {
		isStored(t, what, tm)
		if !tm.Equal(want) {
			t.Errorf("%s: time %v, want %v", what, tm, want)
		}
	}
}

func mustProject(t *testing.T, s store.Store, idOrName string) *store.Project {
	t.Helper()
	p, err := s.GetProject(t.Context(), idOrName)
	if err != nil {
		t.Fatalf("GetProject(%q): %v", idOrName, err)
	}
	return p
}

// testNotFound checks every lookup and write of something missing: each
// error wraps ErrNotFound and names what was missing.
func testNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newProject(t, s, "shop")
	tests := []struct {
		name string
		do   func() error
		key  string
	}{
		{"GetProject by id", func() error { _, err := s.GetProject(ctx, "prj_missing"); return err }, "prj_missing"},
		{"GetProject by name", func() error { _, err := s.GetProject(ctx, "missing"); return err }, "missing"},
		{"GetProject empty", func() error { _, err := s.GetProject(ctx, ""); return err }, "get project"},
		{"UpdateProject", func() error { return s.UpdateProject(ctx, &store.Project{ID: "prj_missing", Name: "x"}) }, "prj_missing"},
		{"DeleteProject", func() error { return s.DeleteProject(ctx, "prj_missing") }, "prj_missing"},
		{"GetCompute", func() error { _, err := s.GetCompute(ctx, "cmp_missing"); return err }, "cmp_missing"},
		{"GetComputeByProject", func() error { _, err := s.GetComputeByProject(ctx, p.ID); return err }, p.ID},
		{"UpdateCompute", func() error {
			return s.UpdateCompute(ctx, &store.Compute{ID: "cmp_missing", State: store.StateActive, Version: 1}, store.StateResuming)
		}, "cmp_missing"},
		{"DeleteCompute", func() error { return s.DeleteCompute(ctx, "cmp_missing") }, "cmp_missing"},
		{"GetRole", func() error { _, err := s.GetRole(ctx, p.ID, "nobody"); return err }, "nobody"},
		{"UpdateRole", func() error { return s.UpdateRole(ctx, &store.Role{ProjectID: p.ID, Name: "nobody"}) }, "nobody"},
		{"DeleteRole", func() error { return s.DeleteRole(ctx, p.ID, "nobody") }, "nobody"},
		{"FinishOperation", func() error { return s.FinishOperation(ctx, &store.Operation{ID: "op_missing"}) }, "op_missing"},
		{"EndInterval", func() error { return s.EndInterval(ctx, "cmp_missing", time.Time{}) }, "cmp_missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, tc.name, tc.do(), store.ErrNotFound, tc.key)
		})
	}
}
