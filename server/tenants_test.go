package server_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/metrics"
	"github.com/serverlessd/serverlessd/server"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

// tenancy is two tenants with projects and keys of every scope, made
// through the API by an admin token.
type tenancy struct {
	srv  *httptest.Server
	keys map[string]string // principal -> Authorization header value
	pa   string            // team-a's project that the matrix targets
}

func (tn *tenancy) call(t *testing.T, who, method, path, body string) reply {
	t.Helper()
	var hdr []string
	if v := tn.keys[who]; v != "" {
		hdr = []string{"Authorization", v}
	}
	return call(t, tn.srv, method, path, body, hdr...)
}

// mustCall fails the test unless the reply has status want.
func (tn *tenancy) mustCall(t *testing.T, who, method, path, body string, want int) reply {
	t.Helper()
	r := tn.call(t, who, method, path, body)
	if r.status != want {
		t.Fatalf("%s %s %s as %s: %d %s, want %d", method, path, body, who, r.status, r.raw, want)
	}
	return r
}

func str(r reply, keys ...string) string {
	var v any = r.body
	for _, k := range keys {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	s, _ := v.(string)
	return s
}

// newTenancy makes tenants team-a and team-b, a project "shop" in each and
// "billing" in team-a, and keys: admin (an admin-scoped key), a-rw, a-ro
// (tenant keys of team-a), a-shop (a project key of team-a's shop), b-rw,
// revoked, expired; "token" is the config's admin token and "none" sends
// nothing.
func newTenancy(t *testing.T) *tenancy {
	srv, _ := newAPI(t, token)
	tn := &tenancy{srv: srv, keys: map[string]string{"token": "Bearer " + token}}
	tn.mustCall(t, "token", "POST", "/api/v1/tenants", `{"name":"team-a"}`, 201)
	tn.mustCall(t, "token", "POST", "/api/v1/tenants", `{"name":"team-b"}`, 201)
	tn.pa = str(tn.mustCall(t, "token", "POST", "/api/v1/projects", `{"name":"shop","tenant":"team-a"}`, 201), "project", "id")
	tn.mustCall(t, "token", "POST", "/api/v1/projects", `{"name":"billing","tenant":"team-a"}`, 201)
	tn.mustCall(t, "token", "POST", "/api/v1/projects", `{"name":"shop","tenant":"team-b"}`, 201)
	newKey := func(who, tenant, body string) string {
		r := tn.mustCall(t, "token", "POST", "/api/v1/tenants/"+tenant+"/api_keys", body, 201)
		key := str(r, "key")
		if !strings.HasPrefix(key, "sdk_") || strings.Contains(r.raw, "hash") {
			t.Fatalf("create key: %s", r.raw)
		}
		tn.keys[who] = "Bearer " + key
		return str(r, "api_key", "id")
	}
	newKey("admin", "team-a", `{"name":"ops","scope":"admin"}`)
	newKey("a-rw", "team-a", `{"name":"ci","scope":"tenant"}`)
	newKey("a-ro", "team-a", `{"name":"dash","scope":"tenant","read_only":true}`)
	newKey("a-shop", "team-a", `{"name":"app","scope":"project","project":"shop"}`)
	newKey("b-rw", "team-b", `{"name":"ci","scope":"tenant"}`)
	revoked := newKey("revoked", "team-a", `{"name":"old","scope":"tenant"}`)
	tn.mustCall(t, "token", "DELETE", "/api/v1/tenants/team-a/api_keys/"+revoked, "", 200)
	exp := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339)
	newKey("expired", "team-a", `{"name":"short","scope":"tenant","expires_at":"`+exp+`"}`)
	tn.keys["none"] = ""
	return tn
}

// TestScopes runs every endpoint as every kind of principal against
// team-a's project shop, and checks who may do what: tenant b and a key
// of another project get 404 (the project does not exist for them), a
// read-only key 403 on writes, a missing, revoked or expired key 401.
func TestScopes(t *testing.T) {
	tn := newTenancy(t)
	time.Sleep(2500 * time.Millisecond) // past the expired key's expiry
	p := "/api/v1/projects/" + tn.pa
	cid := str(tn.mustCall(t, "token", "POST", p+"/compute", `{}`, 201), "compute", "id")
	c := p + "/compute/" + cid
	tn.mustCall(t, "token", "POST", p+"/roles", `{"name":"app"}`, 201)

	type endpoint struct {
		method, path, body string
		write              bool
	}
	endpoints := []endpoint{
		{"GET", p, "", false},
		{"PATCH", p, `{"config":{"idle_timeout":120}}`, true},
		{"DELETE", p, "", true},
		{"POST", p + "/compute", `{}`, true},
		{"GET", p + "/compute", "", false},
		{"GET", c, "", false},
		{"POST", c + "/suspend", "", true},
		{"POST", c + "/resume", "", true},
		{"DELETE", c, "", true},
		{"POST", p + "/roles", `{"name":"other"}`, true},
		{"GET", p + "/roles", "", false},
		{"POST", p + "/roles/app/reset_password", "", true},
		{"DELETE", p + "/roles/app", "", true},
		{"GET", p + "/operations", "", false},
		{"GET", p + "/backups", "", false},
		{"POST", p + "/restore", `{"to":"2020-01-01T00:00:00Z"}`, true},
		{"POST", p + "/branches", `{"name":"shop-dev"}`, true},
		{"GET", p + "/usage", "", false},
		{"GET", "/wake_compute?endpointish=" + tn.pa, "", false},
		{"GET", "/api/v1/tenants/team-a", "", false},
		{"PATCH", "/api/v1/tenants/team-a", `{"quotas":{"max_projects":10}}`, true},
		{"DELETE", "/api/v1/tenants/team-a", "", true},
		{"GET", "/api/v1/tenants/team-a/api_keys", "", false},
		{"POST", "/api/v1/tenants/team-a/api_keys", `{"name":"x","scope":"tenant"}`, true},
		{"DELETE", "/api/v1/tenants/team-a/api_keys/key_missing", "", true},
		{"GET", "/api/v1/tenants/team-a/usage", "", false},
		{"POST", "/api/v1/tenants", `{"name":"team-c"}`, true},
	}
	// denied says what a principal gets, or 0 where the scope allows the
	// call: then a read must answer 200, and a write is not made here (it
	// would change what the other calls see; TestTenantLifecycle makes
	// them).
	denied := func(who string, e endpoint) int {
		tenantPath := strings.HasPrefix(e.path, "/api/v1/tenants")
		switch who {
		case "none", "revoked", "expired":
			return 401
		case "b-rw":
			if e.path == "/api/v1/tenants" {
				return 403
			}
			return 404
		case "a-ro":
			if e.write {
				return 403
			}
		case "a-shop":
			if tenantPath && e.method == "GET" && e.path == "/api/v1/tenants/team-a" {
				return 0
			}
			if tenantPath {
				return 403
			}
		}
		if who == "a-rw" || who == "a-ro" || who == "a-shop" {
			if e.path == "/api/v1/tenants" || (tenantPath && e.method != "GET" && !strings.Contains(e.path, "api_keys")) {
				return 403
			}
		}
		return 0
	}
	for _, who := range []string{"none", "revoked", "expired", "b-rw", "a-ro", "a-shop", "a-rw", "admin"} {
		for _, e := range endpoints {
			want := denied(who, e)
			if want == 0 && e.method != "GET" {
				continue // allowed, and it would change what the other calls see
			}
			if want == 0 {
				want = 200
			}
			t.Run(fmt.Sprintf("%s %s %s", who, e.method, e.path), func(t *testing.T) {
				r := tn.call(t, who, e.method, e.path, e.body)
				if r.status != want {
					t.Fatalf("got %d %s, want %d", r.status, r.raw, want)
				}
			})
		}
	}
	// Nothing the refused calls tried happened.
	r := tn.mustCall(t, "token", "GET", p+"/roles", "", 200)
	if !strings.Contains(r.raw, `"app"`) || strings.Contains(r.raw, `"other"`) {
		t.Fatalf("refused calls changed the roles: %s", r.raw)
	}
	if r := tn.mustCall(t, "token", "GET", c, "", 200); state(r) != "active" {
		t.Fatalf("refused calls changed the compute: %s", r.raw)
	}
	// A read-only key reads.
	for _, e := range endpoints {
		if e.write || strings.HasPrefix(e.path, "/wake_compute") {
			continue
		}
		tn.mustCall(t, "a-ro", e.method, e.path, e.body, 200)
	}
	// The project key reads its project, and that one only.
	tn.mustCall(t, "a-shop", "GET", p, "", 200)
	tn.mustCall(t, "a-shop", "GET", "/api/v1/projects/billing", "", 404)
}

// TestTenantLists checks that lists and the billing report show each
// principal only what it may see.
func TestTenantLists(t *testing.T) {
	tn := newTenancy(t)
	count := func(who, path, field string) int {
		r := tn.mustCall(t, who, "GET", path, "", 200)
		list, _ := r.body[field].([]any)
		return len(list)
	}
	for _, tc := range []struct {
		who              string
		projects, tenant int
	}{
		{"token", 3, 3}, {"admin", 3, 3}, {"a-rw", 2, 1}, {"a-ro", 2, 1}, {"a-shop", 1, 1}, {"b-rw", 1, 1},
	} {
		if n := count(tc.who, "/api/v1/projects", "projects"); n != tc.projects {
			t.Errorf("%s lists %d projects, want %d", tc.who, n, tc.projects)
		}
		if n := count(tc.who, "/api/v1/tenants", "tenants"); n != tc.tenant {
			t.Errorf("%s lists %d tenants, want %d", tc.who, n, tc.tenant)
		}
		r := tn.mustCall(t, tc.who, "GET", "/api/v1/usage", "", 200)
		for _, l := range r.body["projects"].([]any) {
			if id := l.(map[string]any)["project_id"].(string); tc.who == "b-rw" && id == tn.pa {
				t.Errorf("b-rw's billing report shows team-a's project")
			}
		}
	}
	if n := count("token", "/api/v1/projects?tenant=team-a", "projects"); n != 2 {
		t.Errorf("an admin's list of team-a has %d projects, want 2", n)
	}
	// A name filter narrows what each principal sees, never widens it.
	for _, tc := range []struct {
		who, filter string
		want        int
	}{
		{"token", "sho", 2}, {"token", "ill", 1}, {"a-rw", "sho", 1}, {"b-rw", "bill", 0},
		{"a-shop", "hop", 1}, {"a-shop", "bill", 0}, {"token", "", 3},
	} {
		if n := count(tc.who, "/api/v1/projects?name_contains="+tc.filter, "projects"); n != tc.want {
			t.Errorf("%s lists %d projects whose name contains %q, want %d", tc.who, n, tc.filter, tc.want)
		}
	}
	// The same name in two tenants: each key finds its own.
	a := str(tn.mustCall(t, "a-rw", "GET", "/api/v1/projects/shop", "", 200), "project", "id")
	b := str(tn.mustCall(t, "b-rw", "GET", "/api/v1/projects/shop", "", 200), "project", "id")
	if a != tn.pa || b == a {
		t.Errorf("shop is %s for team-a and %s for team-b; want team-a's %s and another", a, b, tn.pa)
	}
}

// TestTenantLifecycle runs what a tenant key may do, end to end: create a
// project (named like another tenant's, with no 409), a role, a compute,
// suspend and resume it, make and revoke a project key, and delete it all.
func TestTenantLifecycle(t *testing.T) {
	tn := newTenancy(t)
	r := tn.mustCall(t, "b-rw", "POST", "/api/v1/projects", `{"name":"billing"}`, 201)
	id := str(r, "project", "id")
	if str(r, "project", "tenant_id") == "" || str(r, "role", "mysql_user") != id+".root" {
		t.Fatalf("a tenant's project logs in by id: %s", r.raw)
	}
	tn.mustCall(t, "b-rw", "POST", "/api/v1/projects", `{"name":"billing"}`, 409)
	tn.mustCall(t, "b-rw", "POST", "/api/v1/projects", `{"name":"x","tenant":"team-a"}`, 404)
	p := "/api/v1/projects/billing"
	cid := str(tn.mustCall(t, "b-rw", "POST", p+"/compute", `{}`, 201), "compute", "id")
	tn.mustCall(t, "b-rw", "POST", p+"/compute/"+cid+"/suspend", "", 200)
	tn.mustCall(t, "b-rw", "GET", "/wake_compute?endpointish=billing", "", 200)
	tn.mustCall(t, "b-rw", "POST", p+"/roles", `{"name":"app"}`, 201)

	r = tn.mustCall(t, "b-rw", "POST", "/api/v1/tenants/team-b/api_keys", `{"name":"app","scope":"project","project":"billing"}`, 201)
	tn.keys["b-app"] = "Bearer " + str(r, "key")
	kid := str(r, "api_key", "id")
	tn.mustCall(t, "b-app", "GET", p, "", 200)
	tn.mustCall(t, "b-app", "POST", p+"/roles/app/reset_password", "", 200)
	tn.mustCall(t, "b-app", "GET", "/api/v1/projects/shop", "", 404)
	tn.mustCall(t, "b-app", "POST", "/api/v1/tenants/team-b/api_keys", `{"name":"x","scope":"tenant"}`, 403)
	tn.mustCall(t, "b-rw", "POST", "/api/v1/tenants/team-b/api_keys", `{"name":"x","scope":"admin"}`, 403)
	r = tn.mustCall(t, "b-rw", "GET", "/api/v1/tenants/team-b/api_keys", "", 200)
	if strings.Contains(r.raw, "sdk_") || !strings.Contains(r.raw, kid) {
		t.Fatalf("key list must show ids, never keys: %s", r.raw)
	}
	tn.mustCall(t, "b-rw", "DELETE", "/api/v1/tenants/team-b/api_keys/"+kid, "", 200)
	tn.mustCall(t, "b-app", "GET", p, "", 401)

	tn.mustCall(t, "b-rw", "DELETE", p, "", 200)
	tn.mustCall(t, "token", "DELETE", "/api/v1/tenants/team-b", "", 409) // team-b still has shop
	tn.mustCall(t, "b-rw", "DELETE", "/api/v1/projects/shop", "", 200)
	tn.mustCall(t, "token", "DELETE", "/api/v1/tenants/team-b", "", 200)
	tn.mustCall(t, "b-rw", "GET", "/api/v1/projects", "", 401) // its keys went with it
	tn.mustCall(t, "token", "DELETE", "/api/v1/tenants/default", "", 409)
}

// TestProjectQuota refuses a project over the tenant's max_projects.
func TestProjectQuota(t *testing.T) {
	tn := newTenancy(t)
	tn.mustCall(t, "token", "PATCH", "/api/v1/tenants/team-a", `{"quotas":{"max_projects":2}}`, 200)
	r := tn.mustCall(t, "a-rw", "POST", "/api/v1/projects", `{"name":"third"}`, 403)
	if r.errCode() != "quota_exceeded" || !strings.Contains(r.raw, "max_projects is 2") {
		t.Fatalf("quota refusal: %s", r.raw)
	}
	tn.mustCall(t, "b-rw", "POST", "/api/v1/projects", `{"name":"third"}`, 201) // team-b has no quota
	tn.mustCall(t, "token", "PATCH", "/api/v1/tenants/team-a", `{"quotas":{"max_projects":-1}}`, 400)
	tn.mustCall(t, "a-rw", "PATCH", "/api/v1/tenants/team-a", `{"quotas":{"max_projects":0}}`, 403)
}

// TestMetricsScope serves per-project series to admins only.
func TestMetricsScope(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	met := metrics.New(true)
	met.ObserveWake("prj_secret", true, time.Millisecond)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httptest.NewServer(server.New(server.Options{Store: st, Tokens: []string{token}, Logger: log,
		Metrics: &server.Metrics{Full: met.Handler(), Public: met.PublicHandler()}}).Handler())
	t.Cleanup(srv.Close)
	tn := &tenancy{srv: srv, keys: map[string]string{"token": "Bearer " + token, "bad": "Bearer sdk_nope"}}
	tn.mustCall(t, "token", "POST", "/api/v1/tenants", `{"name":"team-a"}`, 201)
	r := tn.mustCall(t, "token", "POST", "/api/v1/tenants/team-a/api_keys", `{"name":"m","scope":"tenant"}`, 201)
	tn.keys["tenant"] = "Bearer " + str(r, "key")
	for who, detail := range map[string]bool{"token": true, "none": false, "tenant": false} {
		r := tn.mustCall(t, who, "GET", "/metrics", "", 200)
		if !strings.Contains(r.raw, "serverlessd_wake_duration_seconds") {
			t.Errorf("%s: no wake histogram in /metrics", who)
		}
		if got := strings.Contains(r.raw, "prj_secret"); got != detail {
			t.Errorf("%s: per-project series shown = %v, want %v", who, got, detail)
		}
	}
	tn.mustCall(t, "bad", "GET", "/metrics", "", 401)
}

// TestComputeQuotas refuses a compute bigger than max_compute_memory and a
// connection cap over max_connections_per_project, and creates nothing.
func TestComputeQuotas(t *testing.T) {
	tn := newTenancy(t)
	tn.mustCall(t, "token", "PATCH", "/api/v1/tenants/team-a", `{"quotas":{"max_compute_memory":"128Mi","max_connections_per_project":5,"max_storage":"1Gi"}}`, 200)
	p := "/api/v1/projects/shop"
	r := tn.mustCall(t, "a-rw", "POST", p+"/compute", `{"config":{"resources":{"memory":"256Mi"}}}`, 403)
	if r.errCode() != "quota_exceeded" || !strings.Contains(r.raw, "max_compute_memory 128Mi") {
		t.Fatalf("memory quota refusal: %s", r.raw)
	}
	r = tn.mustCall(t, "a-rw", "POST", p+"/compute", `{"config":{"resources":{"memory":"128Mi"},"storage":"2Gi"}}`, 403)
	if r.errCode() != "quota_exceeded" || !strings.Contains(r.raw, "max_storage 1Gi") {
		t.Fatalf("storage quota refusal: %s", r.raw)
	}
	tn.mustCall(t, "a-rw", "GET", p+"/compute", "", 404) // nothing half-created
	r = tn.mustCall(t, "a-rw", "PATCH", p, `{"config":{"max_connections":6}}`, 403)
	if r.errCode() != "quota_exceeded" || !strings.Contains(r.raw, "max_connections_per_project 5") {
		t.Fatalf("connection quota refusal: %s", r.raw)
	}
	tn.mustCall(t, "a-rw", "POST", "/api/v1/projects", `{"name":"big","config":{"max_connections":9}}`, 403)
	tn.mustCall(t, "a-rw", "PATCH", p, `{"config":{"storage_size":"5Gi"}}`, 403)
	tn.mustCall(t, "a-rw", "PATCH", p, `{"config":{"max_connections":5}}`, 200)
	r = tn.mustCall(t, "a-rw", "POST", p+"/compute", `{"config":{"resources":{"memory":"128Mi"}}}`, 201)
	if got := str(r, "compute", "spec", "storage"); got != "1Gi" {
		t.Errorf("a compute that asks no storage gets %q, want the quota 1Gi", got)
	}
	tn.mustCall(t, "token", "PATCH", "/api/v1/tenants/team-a", `{"quotas":{"max_compute_memory":"lots"}}`, 400)
}
