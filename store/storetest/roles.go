package storetest

import (
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// Two mysql_native_password hashes: SHA1(SHA1("a")) and SHA1(SHA1("b")).
const (
	hashA = "*667F407DE7C6AD07358FA38DAED7828A72014B4E"
	hashB = "*F33AE6DD04EF4C7C1D3105568E7FB7C1EE16C937"
)

func testRoleCRUD(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newProject(t, s, "shop")
	var created []store.Role
	for _, name := range []string{"root", "app", "reader"} {
		r := &store.Role{ProjectID: p.ID, Name: name, PasswordHash: hashA}
		if err := s.CreateRole(ctx, r); err != nil {
			t.Fatalf("CreateRole(%s): %v", name, err)
		}
		if r.CreatedAt.IsZero() || !r.UpdatedAt.Equal(r.CreatedAt) {
			t.Errorf("CreateRole did not fill times: %+v", r)
		}
		created = append(created, *r)
	}
	got, err := s.GetRole(ctx, p.ID, "root")
	if err != nil {
		t.Fatalf("GetRole: %v", err)
	}
	same(t, "GetRole", got, &created[0])

	list, err := s.ListRoles(ctx, p.ID)
	if err != nil {
		t.Fatalf("ListRoles: %v", err)
	}
	same(t, "ListRoles (by name)", list, []store.Role{created[1], created[2], created[0]})

	reset := created[0]
	reset.PasswordHash = hashB
	time.Sleep(2 * time.Microsecond) // so that UpdatedAt moves
	if err := s.UpdateRole(ctx, &reset); err != nil {
		t.Fatalf("UpdateRole: %v", err)
	}
	if !reset.UpdatedAt.After(created[0].UpdatedAt) {
		t.Errorf("UpdateRole left UpdatedAt at %v", reset.UpdatedAt)
	}
	got, err = s.GetRole(ctx, p.ID, "root")
	if err != nil {
		t.Fatalf("GetRole after UpdateRole: %v", err)
	}
	same(t, "GetRole after UpdateRole", got, &reset)

	if err := s.DeleteRole(ctx, p.ID, "app"); err != nil {
		t.Fatalf("DeleteRole: %v", err)
	}
	_, err = s.GetRole(ctx, p.ID, "app")
	wantErr(t, "GetRole after delete", err, store.ErrNotFound, "app")
	wantErr(t, "DeleteRole twice", s.DeleteRole(ctx, p.ID, "app"), store.ErrNotFound, "app")
	list, err = s.ListRoles(ctx, p.ID)
	if err != nil {
		t.Fatalf("ListRoles: %v", err)
	}
	same(t, "ListRoles after delete", ids(list, func(r store.Role) string { return r.Name }),
		[]string{"reader", "root"})
	if list, err := s.ListRoles(ctx, "prj_missing"); err != nil || list == nil || len(list) != 0 {
		t.Errorf("ListRoles(unknown project) = %v, %v; want an empty non-nil list", list, err)
	}
}

func testRoleUniqueness(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newProject(t, s, "shop")
	q := newProject(t, s, "other")
	root := &store.Role{ProjectID: p.ID, Name: "root", PasswordHash: hashA}
	if err := s.CreateRole(ctx, root); err != nil {
		t.Fatalf("CreateRole: %v", err)
	}
	again := &store.Role{ProjectID: p.ID, Name: "root", PasswordHash: hashB}
	wantErr(t, "same role name twice", s.CreateRole(ctx, again), store.ErrAlreadyExists, "root")
	if again.CreatedAt != (time.Time{}) {
		t.Errorf("a refused CreateRole changed its argument: %+v", again)
	}
	// The same name in another project is a different role.
	if err := s.CreateRole(ctx, &store.Role{ProjectID: q.ID, Name: "root", PasswordHash: hashB}); err != nil {
		t.Errorf("CreateRole(root in another project): %v", err)
	}
	orphan := &store.Role{ProjectID: "prj_missing", Name: "root", PasswordHash: hashA}
	wantErr(t, "role in an unknown project", s.CreateRole(ctx, orphan), store.ErrNotFound, "prj_missing")

	got, err := s.GetRole(ctx, p.ID, "root")
	if err != nil {
		t.Fatalf("GetRole: %v", err)
	}
	same(t, "the first role after a refused duplicate", got, root)
}
