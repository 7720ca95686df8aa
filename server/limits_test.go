package server_test

import (
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/server"
	"github.com/serverlessd/serverlessd/server/servertest"
)

// TestComputeLimits: resources no compute can run with are a 400 that
// gives the allowed range, and nothing is created; before, a memory of
// 9223372036854775807 was a 500 that left a failed compute.
func TestComputeLimits(t *testing.T) {
	srv, _ := newAPI(t)
	if r := call(t, srv, "POST", "/api/v1/projects", `{"name":"big"}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	cpus := runtime.NumCPU()
	tests := []struct {
		name, config string
		msg          []string
	}{
		{"int64 memory", `{"resources":{"memory":"9223372036854775807"}}`, []string{"memory", "between 64Mi and", "this machine's memory"}},
		{"memory over the machine", `{"resources":{"memory":"1Ei"}}`, []string{"memory", "too large", "this machine's memory"}},
		{"memory beyond int64", `{"resources":{"memory":"99999Ei"}}`, []string{"memory", "too large"}},
		{"tiny memory", `{"resources":{"memory":"32Mi"}}`, []string{"memory", "too small", "64Mi"}},
		{"bad memory", `{"resources":{"memory":"lots"}}`, []string{"memory", "500m, 1Gi or 2", "64Mi"}},
		{"long memory", `{"resources":{"memory":"` + strings.Repeat("9", 100) + `"}}`, []string{"memory", "at most 64"}},
		{"cpus over the machine", fmt.Sprintf(`{"resources":{"cpu":"%d"}}`, cpus+1), []string{"cpu", fmt.Sprintf("between 100m and %d (this machine's CPUs)", cpus)}},
		{"tiny cpu", `{"resources":{"cpu":"10m"}}`, []string{"cpu", "too small", "100m"}},
		{"huge storage", `{"storage":"1Pi"}`, []string{"storage", "between 100Mi and 64Ti"}},
		{"tiny storage", `{"storage":"50Mi"}`, []string{"storage", "between 100Mi and 64Ti"}},
		{"tiny storage", `{"storage":"1Mi"}`, []string{"storage", "too small"}},
		{"long image", `{"image":"` + strings.Repeat("i", 256) + `"}`, []string{"image", "at most 255"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, srv, "POST", "/api/v1/projects/big/compute", `{"config":`+tt.config+`}`)
			wantInvalid(t, r, tt.msg...)
		})
	}
	if r := call(t, srv, "GET", "/api/v1/projects/big/compute", ""); r.status != 404 {
		t.Fatalf("a refused compute was created: %d %s", r.status, r.raw)
	}
}

// TestFieldLimits: every free-text field has a length limit, named in the
// 400 with the limit, and the error does not echo the long value.
func TestFieldLimits(t *testing.T) {
	srv, _ := newAPI(t)
	if r := call(t, srv, "POST", "/api/v1/projects", `{"name":"shop","config":{"max_connections":50}}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	long := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name, method, path, body string
		msg                      []string
	}{
		{"million-byte url", "POST", "/api/v1/projects", `{"name":"a","config":{"page_server_url":"` + long(1_000_000) + `"}}`, []string{"page_server_url", "2048"}},
		{"safekeeper url", "POST", "/api/v1/projects", `{"name":"a","config":{"safekeeper_url":"` + long(2049) + `"}}`, []string{"safekeeper_url", "2048"}},
		{"patched url", "PATCH", "/api/v1/projects/shop", `{"config":{"page_server_url":"` + long(2049) + `"}}`, []string{"page_server_url", "2048"}},
		{"long project name", "POST", "/api/v1/projects", `{"name":"` + long(100_000) + `"}`, []string{"name", "at most 40"}},
		{"long rename", "PATCH", "/api/v1/projects/shop", `{"name":"` + long(41) + `"}`, []string{"name", "at most 40"}},
		{"long role name", "POST", "/api/v1/projects/shop/roles", `{"name":"` + long(100_000) + `"}`, []string{"name", "at most 32"}},
		{"long unknown field", "POST", "/api/v1/projects", `{"` + long(100_000) + `":1}`, []string{"unknown field"}},
		{"storage_size", "POST", "/api/v1/projects", `{"name":"a","config":{"storage_size":"1Pi"}}`, []string{"storage_size", "64Ti"}},
		{"negative max_connections", "POST", "/api/v1/projects", `{"name":"a","config":{"max_connections":-1}}`, []string{"max_connections", "100000"}},
		{"huge max_connections", "PATCH", "/api/v1/projects/shop", `{"config":{"max_connections":100001}}`, []string{"max_connections", "100000"}},
		{"negative pinned_idle_timeout", "PATCH", "/api/v1/projects/shop", `{"config":{"pinned_idle_timeout":-1}}`, []string{"pinned_idle_timeout", "2592000"}},
		{"unknown pool_mode", "PATCH", "/api/v1/projects/shop", `{"config":{"pool_mode":"` + long(5000) + `"}}`, []string{"pool_mode", `"transaction"`}},
		{"statement pool_mode", "POST", "/api/v1/projects", `{"name":"a","config":{"pool_mode":"statement"}}`, []string{"pool_mode", `"statement"`}},
		{"huge pool_size", "PATCH", "/api/v1/projects/shop", `{"config":{"pool_size":10001}}`, []string{"pool_size", "10000"}},
		{"negative pool_wait_timeout", "PATCH", "/api/v1/projects/shop", `{"config":{"pool_wait_timeout":-5}}`, []string{"pool_wait_timeout", "3600"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, srv, tt.method, tt.path, tt.body)
			wantInvalid(t, r, tt.msg...)
			if len(r.raw) > 1000 {
				t.Errorf("the error echoes the input: %d bytes", len(r.raw))
			}
		})
	}
	r := call(t, srv, "GET", "/api/v1/projects/shop", "")
	cfg := r.body["project"].(map[string]any)["config"].(map[string]any)
	if cfg["max_connections"] != 50.0 || cfg["page_server_url"] != nil {
		t.Fatalf("refused patches changed the config: %.300v", cfg)
	}
	if r := call(t, srv, "PATCH", "/api/v1/projects/shop", `{"config":{"max_connections":100000,"page_server_url":"`+long(2048)+`"}}`); r.status != 200 {
		t.Fatalf("values at the limits: %d %s", r.status, r.raw)
	}
	r = call(t, srv, "PATCH", "/api/v1/projects/shop", `{"config":{"pinned_idle_timeout":0}}`)
	if got := r.body["project"].(map[string]any)["config"].(map[string]any)["pinned_idle_timeout"]; r.status != 200 || got != 0.0 {
		t.Fatalf("pinned_idle_timeout 0 (never): %d %v", r.status, got)
	}
	r = call(t, srv, "PATCH", "/api/v1/projects/shop", `{"config":{"pool_mode":"transaction","pool_size":20,"pool_wait_timeout":5}}`)
	cfg = r.body["project"].(map[string]any)["config"].(map[string]any)
	if r.status != 200 || cfg["pool_mode"] != "transaction" || cfg["pool_size"] != 20.0 || cfg["pool_wait_timeout"] != 5.0 {
		t.Fatalf("pool settings: %d %.300v", r.status, cfg)
	}
}

// sharedDriver is the local driver standing for one whose computes do not
// run on this machine (kubernetes).
type sharedDriver struct{ *local.Driver }

func (d *sharedDriver) NodeLocal() bool { return false }

// TestLimitsFollowTheDriver: the machine bounds a node-local driver's
// computes only; a shared driver's get wide bounds, and configured ones win.
func TestLimitsFollowTheDriver(t *testing.T) {
	tests := []struct {
		name   string
		limits server.Limits
		memory string
		msg    string
	}{
		{"shared", server.Limits{}, "5Ti", "between 64Mi and 4Ti"},
		{"configured", server.Limits{MaxMemory: 1 << 30}, "2Gi", "between 64Mi and 1Gi (the configured maximum)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newSharedAPI(t, tt.limits)
			if r := call(t, srv, "POST", "/api/v1/projects", `{"name":"pods"}`); r.status != 201 {
				t.Fatalf("create: %d %s", r.status, r.raw)
			}
			r := call(t, srv, "POST", "/api/v1/projects/pods/compute", `{"config":{"resources":{"memory":"`+tt.memory+`"}}}`)
			wantInvalid(t, r, "memory", tt.msg)
			if strings.Contains(r.raw, "machine") {
				t.Errorf("this machine bounds a compute that runs elsewhere: %s", r.raw)
			}
		})
	}
}

// TestImageAllowList: with an allow-list, a compute may name only its
// images; any other is a 400 that lists them, and nothing is created.
func TestImageAllowList(t *testing.T) {
	srv := newSharedAPI(t, server.Limits{Images: []string{"mariadb:10.11.10", "mariadb:11.4.5"}})
	if r := call(t, srv, "POST", "/api/v1/projects", `{"name":"pods"}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	r := call(t, srv, "POST", "/api/v1/projects/pods/compute", `{"config":{"image":"evil/miner:latest"}}`)
	wantInvalid(t, r, `image "evil/miner:latest" is not allowed`, "mariadb:10.11.10, mariadb:11.4.5")
	if r := call(t, srv, "GET", "/api/v1/projects/pods/compute", ""); r.status != 404 {
		t.Fatalf("a refused compute was created: %d %s", r.status, r.raw)
	}
	if r := call(t, srv, "POST", "/api/v1/projects/pods/compute", `{"config":{"image":"mariadb:11.4.5","resources":{"memory":"64Mi"}}}`); r.status != 201 {
		t.Fatalf("an allowed image: %d %s", r.status, r.raw)
	}
	// Its mariadbd runs: a daemon with a shared driver leaves computes
	// running when it stops, so the test destroys it.
	if r := call(t, srv, "DELETE", "/api/v1/projects/pods", ""); r.status != 200 {
		t.Fatalf("delete the project: %d %s", r.status, r.raw)
	}
}

// newSharedAPI serves the API over a manager whose driver is not node-local.
func newSharedAPI(t *testing.T, limits server.Limits) *httptest.Server {
	t.Helper()
	srv, _ := servertest.New(t, servertest.Options{Limits: limits,
		Driver: func(d *local.Driver) compute.Driver { return &sharedDriver{d} }})
	return srv
}

// wantInvalid fails unless r is a 400 "invalid" whose message holds every
// part of msg.
func wantInvalid(t *testing.T, r reply, msg ...string) {
	t.Helper()
	if r.status != 400 || r.errCode() != "invalid" {
		t.Fatalf("got %d %s, want 400 invalid: %.300s", r.status, r.errCode(), r.raw)
	}
	got, _ := r.body["error"].(map[string]any)["message"].(string)
	for _, m := range msg {
		if !strings.Contains(got, m) {
			t.Errorf("message %.300q does not say %q", got, m)
		}
	}
}
