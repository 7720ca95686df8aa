package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/serverlessd/serverlessd/server/openapitest"
	"github.com/serverlessd/serverlessd/server/servertest"
)

const token = "test-token-0123456789"

// newAPI serves the real API over a real socket, on a real SQLite store and
// the real local driver.
func newAPI(t *testing.T, tokens ...string) (*httptest.Server, string) {
	t.Helper()
	return servertest.New(t, servertest.Options{Tokens: tokens, Backups: true})
}

type reply struct {
	status int
	body   map[string]any
	raw    string
}

// call makes a request and returns the reply, which must conform to the
// API's OpenAPI document (the test fails otherwise).
func call(t *testing.T, srv *httptest.Server, method, path, body string, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if err := openapitest.Check(req, resp.StatusCode, resp.Header, raw); err != nil {
		t.Error(err)
	}
	r := reply{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// errCode returns the JSON error code of a reply, or "" when it has none.
func (r reply) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func TestBadInput(t *testing.T) {
	srv, _ := newAPI(t)
	if r := call(t, srv, "POST", "/api/v1/projects", `{"name":"shop"}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	if r := call(t, srv, "POST", "/api/v1/projects/shop/compute", `{"config":{"resources":{"memory":"128Mi"}}}`); r.status != 201 {
		t.Fatalf("create compute: %d %s", r.status, r.raw)
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		code, msg                string
	}{
		{"invalid json", "POST", "/api/v1/projects", `{"name":`, 400, "invalid", "invalid JSON"},
		{"not an object", "POST", "/api/v1/projects", `[1,2]`, 400, "invalid", "invalid JSON"},
		{"empty body", "POST", "/api/v1/projects", ``, 400, "invalid", "empty"},
		{"trailing data", "POST", "/api/v1/projects", `{"name":"a"} {}`, 400, "invalid", "after the object"},
		{"unknown field", "POST", "/api/v1/projects", `{"name":"a","colour":"red"}`, 400, "invalid", "colour"},
		{"unknown config field", "POST", "/api/v1/projects", `{"name":"a","config":{"idle":1}}`, 400, "invalid", "idle"},
		{"uppercase name", "POST", "/api/v1/projects", `{"name":"Shop"}`, 400, "invalid", "invalid project name"},
		{"41 characters", "POST", "/api/v1/projects", `{"name":"` + strings.Repeat("a", 41) + `"}`, 400, "invalid", "1-40"},
		{"dots", "POST", "/api/v1/projects", `{"name":"a.b"}`, 400, "invalid", "invalid project name"},
		{"unicode", "POST", "/api/v1/projects", `{"name":"café"}`, 400, "invalid", "invalid project name"},
		{"empty name", "POST", "/api/v1/projects", `{"name":""}`, 400, "invalid", "invalid project name"},
		{"leading hyphen", "POST", "/api/v1/projects", `{"name":"-a"}`, 400, "invalid", "invalid project name"},
		{"negative idle", "POST", "/api/v1/projects", `{"name":"x","config":{"idle_timeout":-1}}`, 400, "invalid", "idle_timeout"},
		{"wrong type", "POST", "/api/v1/projects", `{"name":5}`, 400, "invalid", "invalid JSON"},
		{"duplicate", "POST", "/api/v1/projects", `{"name":"shop"}`, 409, "already_exists", "shop"},
		{"second compute", "POST", "/api/v1/projects/shop/compute", `{}`, 409, "already_exists", ""},
		{"bad memory", "POST", "/api/v1/projects/shop/compute", `{"config":{"resources":{"memory":"lots"}}}`, 400, "invalid", "memory"},
		{"unknown project", "GET", "/api/v1/projects/nope", ``, 404, "not_found", "nope"},
		{"unknown project compute", "POST", "/api/v1/projects/nope/compute", `{}`, 404, "not_found", "nope"},
		{"unknown compute", "POST", "/api/v1/projects/shop/compute/cmp_nope/suspend", ``, 404, "not_found", "cmp_nope"},
		{"unknown role", "DELETE", "/api/v1/projects/shop/roles/ghost", ``, 404, "not_found", "ghost"},
		{"bad role name", "POST", "/api/v1/projects/shop/roles", `{"name":"serverlessd_admin"}`, 400, "invalid", "reserved"},
		{"duplicate role", "POST", "/api/v1/projects/shop/roles", `{"name":"root"}`, 409, "already_exists", "root"},
		{"unknown path", "GET", "/api/v1/nothing", ``, 404, "not_found", "/api/v1/nothing"},
		{"wrong method", "PUT", "/api/v1/projects", `{}`, 405, "method_not_allowed", "PUT"},
		{"wrong method on item", "POST", "/api/v1/projects/shop", `{}`, 405, "method_not_allowed", "POST"},
		{"wake without key", "GET", "/wake_compute", ``, 400, "invalid", "endpointish"},
		{"wake unknown", "GET", "/wake_compute?endpointish=ghost", ``, 404, "not_found", "ghost"},
		{"bad limit", "GET", "/api/v1/projects?limit=x", ``, 400, "invalid", "limit"},
		{"bad name filter", "GET", "/api/v1/projects?name_contains=a%25", ``, 400, "invalid", "name_contains"},
		{"restore without time", "POST", "/api/v1/projects/shop/restore", `{}`, 400, "invalid", "RFC 3339"},
		{"restore bad time", "POST", "/api/v1/projects/shop/restore", `{"to":"yesterday"}`, 400, "invalid", "yesterday"},
		{"restore future", "POST", "/api/v1/projects/shop/restore", `{"to":"2999-01-01T00:00:00Z"}`, 400, "invalid", "future"},
		{"restore before backups", "POST", "/api/v1/projects/shop/restore", `{"to":"2001-01-01T00:00:00Z"}`, 400, "invalid", "no snapshot"},
		{"restore unknown field", "POST", "/api/v1/projects/shop/restore", `{"at":"2001-01-01T00:00:00Z"}`, 400, "invalid", "at"},
		{"backups unknown project", "GET", "/api/v1/projects/nope/backups", ``, 404, "not_found", "nope"},
		{"oversized body", "POST", "/api/v1/projects", `{"name":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "body_too_large", "bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, srv, tt.method, tt.path, tt.body)
			if r.status != tt.status || r.errCode() != tt.code {
				t.Fatalf("got %d %s, want %d %s: %s", r.status, r.errCode(), tt.status, tt.code, r.raw)
			}
			msg, _ := r.body["error"].(map[string]any)["message"].(string)
			if !strings.Contains(msg, tt.msg) {
				t.Fatalf("message %q does not mention %q", msg, tt.msg)
			}
		})
	}
	// The daemon still serves after all of that.
	if r := call(t, srv, "GET", "/api/v1/projects/shop", ""); r.status != 200 {
		t.Fatalf("after bad input: %d %s", r.status, r.raw)
	}
}

func TestTokens(t *testing.T) {
	srv, _ := newAPI(t, token)
	tests := []struct {
		name, auth string
		status     int
	}{
		{"missing", "", 401},
		{"wrong", "Bearer nope-nope-nope-nope", 401},
		{"not bearer", "Basic " + token, 401},
		{"right", "Bearer " + token, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.auth != "" {
				hdr = []string{"Authorization", tt.auth}
			}
			r := call(t, srv, "GET", "/api/v1/projects", "", hdr...)
			if r.status != tt.status || (tt.status == 401 && r.errCode() != "unauthorized") {
				t.Fatalf("got %d %s", r.status, r.raw)
			}
		})
	}
	if r := call(t, srv, "GET", "/healthz", ""); r.status != 200 {
		t.Fatalf("healthz needs no token: %d", r.status)
	}
	if r := call(t, srv, "GET", "/readyz", ""); r.status != 200 {
		t.Fatalf("readyz: %d %s", r.status, r.raw)
	}
}

// TestLifecycle drives a project through the API: create, compute, suspend,
// resume, wake, roles, operations, delete (the data folder is gone).
func TestLifecycle(t *testing.T) {
	srv, computes := newAPI(t)
	r := call(t, srv, "POST", "/api/v1/projects", `{"name":"life","config":{"idle_timeout":60,"page_server_url":"http://ps","safekeeper_url":"http://sk"}}`)
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	role := r.body["role"].(map[string]any)
	if role["password"] == "" || role["mysql_user"] != "life.root" {
		t.Fatalf("root role not returned: %v", role)
	}
	cfg := r.body["project"].(map[string]any)["config"].(map[string]any)
	if cfg["page_server_url"] != "http://ps" || cfg["idle_timeout"].(float64) != 60 {
		t.Fatalf("config not stored: %v", cfg)
	}
	r = call(t, srv, "POST", "/api/v1/projects/life/compute", `{"config":{"image":"mariadb:11","resources":{"cpu":"500m","memory":"128Mi"}}}`)
	if r.status != 201 || state(r) != "active" {
		t.Fatalf("compute: %d %s", r.status, r.raw)
	}
	cid := r.body["compute"].(map[string]any)["id"].(string)
	base := "/api/v1/projects/life/compute/" + cid
	if r = call(t, srv, "POST", base+"/suspend", ""); r.status != 200 || state(r) != "suspended" || r.body["operation"] == nil {
		t.Fatalf("suspend: %d %s", r.status, r.raw)
	}
	if r = call(t, srv, "POST", base+"/resume", ""); r.status != 200 || state(r) != "active" || r.body["operation"] == nil {
		t.Fatalf("resume: %d %s", r.status, r.raw)
	}
	if r = call(t, srv, "GET", "/wake_compute?endpointish=life", ""); r.status != 200 || r.body["cold_start"] != false ||
		!strings.HasPrefix(r.body["address"].(string), "unix:") {
		t.Fatalf("wake: %d %s", r.status, r.raw)
	}
	if r = call(t, srv, "POST", "/api/v1/projects/life/roles", `{"name":"app"}`); r.status != 201 {
		t.Fatalf("role: %d %s", r.status, r.raw)
	}
	if r = call(t, srv, "GET", "/api/v1/projects/life/roles", ""); r.status != 200 || strings.Contains(r.raw, "password") || strings.Contains(r.raw, "*") {
		t.Fatalf("roles must list without secrets: %s", r.raw)
	}
	if r = call(t, srv, "POST", "/api/v1/projects/life/roles/app/reset_password", ""); r.status != 200 {
		t.Fatalf("reset: %d %s", r.status, r.raw)
	}
	if r = call(t, srv, "PATCH", "/api/v1/projects/life", `{"config":{"idle_timeout":0}}`); r.status != 200 {
		t.Fatalf("patch: %d %s", r.status, r.raw)
	}
	if r = call(t, srv, "GET", "/api/v1/projects/life/operations", ""); r.status != 200 || len(r.body["operations"].([]any)) != 4 {
		t.Fatalf("operations (create, start, suspend, start): %s", r.raw)
	}
	dir := filepath.Join(computes, cid)
	if r = call(t, srv, "DELETE", "/api/v1/projects/life", ""); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("compute folder %s survived the project's deletion", dir)
	}
	if r = call(t, srv, "GET", "/api/v1/projects/life", ""); r.status != 404 {
		t.Fatalf("deleted project still there: %d", r.status)
	}
}

func state(r reply) string {
	c, _ := r.body["compute"].(map[string]any)
	s, _ := c["state"].(string)
	return s
}
