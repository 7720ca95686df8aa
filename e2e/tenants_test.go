package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// postJSON calls the API with a JSON body and decodes the reply into v.
func (d *daemon) postJSON(t *testing.T, path, body string, v any) int {
	t.Helper()
	resp, err := http.Post("http://"+d.api+path, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

// TestTenantLogins logs in with the real mariadb client to two projects of
// the same name in two tenants: the default tenant's by name, the other's
// by id, each with its own password and its own data.
func TestTenantLogins(t *testing.T) {
	d := startDaemon(t, "")
	var out projectOut
	if st := d.postJSON(t, "/api/v1/tenants", `{"name":"team-a"}`, &struct{}{}); st != 201 {
		t.Fatalf("create tenant: %d", st)
	}
	if st := d.postJSON(t, "/api/v1/projects", `{"name":"shop"}`, &out); st != 201 {
		t.Fatalf("create the default tenant's shop: %d", st)
	}
	def := out
	if st := d.postJSON(t, "/api/v1/projects", `{"name":"shop","tenant":"team-a"}`, &out); st != 201 {
		t.Fatalf("create team-a's shop: %d", st)
	}
	a := out
	if def.Role.MySQLUser != "shop.root" || a.Role.MySQLUser != a.Project.ID+".root" {
		t.Fatalf("login names: %q and %q", def.Role.MySQLUser, a.Role.MySQLUser)
	}
	for _, p := range []string{def.Project.ID, a.Project.ID} {
		if st := d.postJSON(t, "/api/v1/projects/"+p+"/compute", `{}`, &struct{}{}); st != 201 {
			t.Fatalf("create compute of %s: %d", p, st)
		}
	}
	if o, err := d.mariadb(t, a.Role.MySQLUser, a.Role.Password, "-e", "CREATE DATABASE only_a"); err != nil {
		t.Fatalf("team-a's login by id: %v %s", err, o)
	}
	o, err := d.mariadb(t, def.Role.MySQLUser, def.Role.Password, "-e", "SHOW DATABASES LIKE 'only_a'")
	if err != nil || o != "" {
		t.Fatalf("the default tenant's shop by name: %v %q (it must not see team-a's database)", err, o)
	}
	for _, bad := range []struct{ user, pw string }{
		{a.Role.MySQLUser, def.Role.Password}, // the other project's password
		{"shop.root", a.Role.Password},        // a name finds the default tenant's only
		{"team-a.shop.root", a.Role.Password}, // no tenant-qualified names
	} {
		o, err := d.mariadb(t, bad.user, bad.pw, "-e", "SELECT 1")
		if err == nil || !strings.Contains(o, "Access denied") {
			t.Errorf("login as %s with the wrong project's password: %v %q, want access denied", bad.user, err, o)
		}
	}
}
