package server_test

import (
	"fmt"
	"testing"
	"time"
)

// TestProjectsWithCompute lists projects with their computes' status, as
// the console shows them: the state, the last activity and when the idle
// scheduler suspends the compute. Both ways of looking the computes up
// (one by one for a few projects, one listing for many) give the same.
func TestProjectsWithCompute(t *testing.T) {
	srv, _ := newAPI(t)
	r := call(t, srv, "POST", "/api/v1/projects", `{"name":"live","config":{"idle_timeout":60}}`)
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	if role := r.body["role"].(map[string]any); role["host"] != "127.0.0.1" || role["port"].(float64) <= 0 {
		t.Fatalf("credentials lack the proxy's host and port: %v", role)
	}
	if r = call(t, srv, "POST", "/api/v1/projects", `{"name":"bare"}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	r = call(t, srv, "POST", "/api/v1/projects/live/compute", `{"config":{"resources":{"memory":"128Mi"}}}`)
	if r.status != 201 {
		t.Fatalf("compute: %d %s", r.status, r.raw)
	}
	cid := r.body["compute"].(map[string]any)["id"].(string)

	if r = call(t, srv, "GET", "/api/v1/projects?include=roles", ""); r.status != 400 || r.errCode() != "invalid" {
		t.Fatalf("include=roles: %d %s, want 400", r.status, r.raw)
	}
	check := func(list reply, want string) {
		t.Helper()
		seen := 0
		for _, x := range list.body["projects"].([]any) {
			p := x.(map[string]any)
			c, _ := p["compute"].(map[string]any)
			switch p["name"] {
			case "bare":
				seen++
				if p["compute"] != nil {
					t.Fatalf("a project without a compute shows one: %v", p)
				}
			case "live":
				seen++
				if c == nil || c["id"] != cid || c["state"] != want {
					t.Fatalf("live's compute: %v, want %s %s", c, cid, want)
				}
				at, _ := c["idle_suspend_at"].(string)
				if want != "active" {
					if at != "" {
						t.Fatalf("a %s compute has an idle suspend time: %v", want, c)
					}
					continue
				}
				last, err1 := time.Parse(time.RFC3339Nano, c["last_active"].(string))
				idle, err2 := time.Parse(time.RFC3339Nano, at)
				if err1 != nil || err2 != nil || idle.Sub(last) != time.Minute {
					t.Fatalf("idle suspend at %q, last active %q: want a minute apart", at, c["last_active"])
				}
			}
		}
		if seen != 2 {
			t.Fatalf("listed %d of the 2 projects: %s", seen, list.raw)
		}
	}
	check(call(t, srv, "GET", "/api/v1/projects?include=compute", ""), "active")
	if r = call(t, srv, "POST", "/api/v1/projects/live/compute/"+cid+"/suspend", ""); r.status != 200 {
		t.Fatalf("suspend: %d %s", r.status, r.raw)
	}
	check(call(t, srv, "GET", "/api/v1/projects?include=compute", ""), "suspended")
	one := call(t, srv, "GET", "/api/v1/projects/live?include=compute", "")
	if c, _ := one.body["project"].(map[string]any)["compute"].(map[string]any); c["state"] != "suspended" {
		t.Fatalf("one project with its compute: %s", one.raw)
	}
	for i := range 60 {
		if r = call(t, srv, "POST", "/api/v1/projects", fmt.Sprintf(`{"name":"p%d"}`, i)); r.status != 201 {
			t.Fatalf("create: %d %s", r.status, r.raw)
		}
	}
	many := call(t, srv, "GET", "/api/v1/projects?include=compute&limit=1000", "")
	if n := len(many.body["projects"].([]any)); n != 62 {
		t.Fatalf("listed %d projects, want 62", n)
	}
	check(many, "suspended")
}
