package e2e

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// sendJSON calls the API with method and a JSON body and decodes the reply
// into v.
func (d *daemon) sendJSON(t *testing.T, method, path, body string, v any) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+d.api+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return decodeReply(t, resp, v)
}

// postJSON calls the API with a JSON body and decodes the reply into v.
func (d *daemon) postJSON(t *testing.T, path, body string, v any) int {
	t.Helper()
	return d.sendJSON(t, "POST", path, body, v)
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
	// An API key works once created and never reaches the log.
	var key struct {
		Key string `json:"key"`
	}
	if st := d.postJSON(t, "/api/v1/tenants/team-a/api_keys", `{"name":"ci","scope":"tenant"}`, &key); st != 201 || key.Key == "" {
		t.Fatalf("create an API key: %d", st)
	}
	req, _ := http.NewRequest("GET", "http://"+d.api+"/api/v1/projects/shop", nil)
	req.Header.Set("Authorization", "Bearer "+key.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET team-a's shop with its key: %v %v", resp, err)
	}
	resp.Body.Close()
	for _, secret := range []string{key.Key, a.Role.Password, def.Role.Password} {
		if strings.Contains(d.log.String(), secret) {
			t.Errorf("the daemon's log holds a secret (an API key or a password)")
		}
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

// TestConnectionQuota holds a tenant's projects to its quota
// max_connections_per_project, through a real MySQL driver: the login past
// it gets MySQL error 1040, and a login to the default tenant does not.
func TestConnectionQuota(t *testing.T) {
	d := startDaemon(t, "")
	var p projectOut
	d.postJSON(t, "/api/v1/tenants", `{"name":"team-a","quotas":{"max_connections_per_project":2}}`, &struct{}{})
	if st := d.postJSON(t, "/api/v1/projects", `{"name":"shop","tenant":"team-a"}`, &p); st != 201 {
		t.Fatalf("create project: %d", st)
	}
	if st := d.postJSON(t, "/api/v1/projects/"+p.Project.ID+"/compute", `{}`, &struct{}{}); st != 201 {
		t.Fatalf("create compute: %d", st)
	}
	db := d.openDB(t, p.Role.MySQLUser, p.Role.Password, "")
	ctx := context.Background()
	for i := range 2 {
		c, err := db.Conn(ctx)
		if err == nil {
			err = c.PingContext(ctx)
		}
		if err != nil {
			t.Fatalf("connection %d of 2: %v", i+1, err)
		}
		defer c.Close()
	}
	_, err := db.Conn(ctx)
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1040 || !strings.Contains(me.Message, "Too many connections") {
		t.Fatalf("third connection: %v, want MySQL error 1040", err)
	}
	// Raising the quota lets it in.
	if st := d.sendJSON(t, "PATCH", "/api/v1/tenants/team-a", `{"quotas":{"max_connections_per_project":3}}`, &struct{}{}); st != 200 {
		t.Fatalf("raise the quota: %d", st)
	}
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("after raising the quota: %v", err)
	}
	c.Close()
}

// TestNodeMemoryBudget logs in with the mariadb client to a suspended
// project on a node whose budget holds three 128Mi computes, all running
// and idle: the least recently used one is suspended and the login works.
func TestNodeMemoryBudget(t *testing.T) {
	d := startDaemon(t, "", "SERVERLESSD_COMPUTE_LOCAL_MAX_MEMORY=448Mi")
	ps := make([]projectOut, 4)
	for i, name := range []string{"one", "two", "three", "four"} {
		if i == 3 {
			time.Sleep(1100 * time.Millisecond) // one, two and three idle
		}
		if st := d.postJSON(t, "/api/v1/projects", `{"name":"`+name+`"}`, &ps[i]); st != 201 {
			t.Fatalf("create %s: %d", name, st)
		}
		var c computeOut
		if st := d.postJSON(t, "/api/v1/projects/"+name+"/compute", `{"config":{"resources":{"memory":"128Mi"}}}`, &c); st != 201 {
			t.Fatalf("create the compute of %s: %d %+v", name, st, c)
		}
	}
	if s := d.computeState("one"); s != "suspended" {
		t.Fatalf("one is %s after four started, want suspended (least recently used)", s)
	}
	time.Sleep(1100 * time.Millisecond)
	if o, err := d.mariadb(t, ps[0].Role.MySQLUser, ps[0].Role.Password, "-e", "SELECT 1"); err != nil || o != "1" {
		t.Fatalf("login to one on a full node: %v %q", err, o)
	}
	if s := d.computeState("two"); s != "suspended" {
		t.Fatalf("two is %s after one woke, want suspended (least recently used)", s)
	}
	for _, name := range []string{"one", "three", "four"} {
		if s := d.computeState(name); s != "active" {
			t.Errorf("%s is %s, want active", name, s)
		}
	}
}

// TestActiveMemoryQuota refuses a start past the tenant's
// max_active_memory: 429 on the API, MySQL error 1226 naming the quota at
// login; once the other compute suspends, the login works.
func TestActiveMemoryQuota(t *testing.T) {
	d := startDaemon(t, "", "SERVERLESSD_TENANTS_DEFAULT_QUOTAS_MAX_PROJECTS=2")
	d.postJSON(t, "/api/v1/tenants", `{"name":"team-a","quotas":{"max_active_memory":"128Mi"}}`, &struct{}{})
	ps := make([]projectOut, 2)
	for i, name := range []string{"one", "two"} {
		if st := d.postJSON(t, "/api/v1/projects", `{"name":"`+name+`","tenant":"team-a"}`, &ps[i]); st != 201 {
			t.Fatalf("create %s: %d", name, st)
		}
	}
	// The config's default quotas: team-a got max_projects 2.
	if st := d.postJSON(t, "/api/v1/projects", `{"name":"three","tenant":"team-a"}`, &struct{}{}); st != 403 {
		t.Fatalf("a third project over the default quota max_projects 2: %d, want 403", st)
	}
	var c computeOut
	if st := d.postJSON(t, "/api/v1/projects/"+ps[0].Project.ID+"/compute", `{"config":{"resources":{"memory":"128Mi"}}}`, &c); st != 201 {
		t.Fatalf("create one's compute: %d", st)
	}
	one := c.Compute.ID
	var refusal struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if st := d.postJSON(t, "/api/v1/projects/"+ps[1].Project.ID+"/compute", `{"config":{"resources":{"memory":"128Mi"}}}`, &refusal); st != 429 ||
		refusal.Error.Code != "quota_exceeded" || !strings.Contains(refusal.Error.Message, "max_active_memory 128Mi") {
		t.Fatalf("create two's compute over the quota: %d %+v", st, refusal)
	}
	if s := d.computeState(ps[1].Project.ID); s != "suspended" {
		t.Fatalf("two's refused compute is %q, want suspended (whole, not half-created)", s)
	}
	o, err := d.mariadb(t, ps[1].Role.MySQLUser, ps[1].Role.Password, "-e", "SELECT 1")
	if err == nil || !strings.Contains(o, "1226") || !strings.Contains(o, "max_active_memory") {
		t.Fatalf("login to two over the quota: %v %q, want ERROR 1226 naming the quota", err, o)
	}
	if st := d.postJSON(t, "/api/v1/projects/"+ps[0].Project.ID+"/compute/"+one+"/suspend", "", &c); st != 200 {
		t.Fatalf("suspend one: %d", st)
	}
	if o, err := d.mariadb(t, ps[1].Role.MySQLUser, ps[1].Role.Password, "-e", "SELECT 1"); err != nil || o != "1" {
		t.Fatalf("login to two once one sleeps: %v %q", err, o)
	}
}

// TestMonthlyQuota spends a tenant's compute_seconds_per_month: the
// compute, though its idle timeout is "never", suspends at its next idle
// point, and a login then gets MySQL error 1226 naming the quota.
func TestMonthlyQuota(t *testing.T) {
	d := startDaemon(t, "", "SERVERLESSD_SCHEDULER_INTERVAL=200ms")
	d.postJSON(t, "/api/v1/tenants", `{"name":"team-a","quotas":{"compute_seconds_per_month":2}}`, &struct{}{})
	var p projectOut
	if st := d.postJSON(t, "/api/v1/projects", `{"name":"one","tenant":"team-a","config":{"idle_timeout":0}}`, &p); st != 201 {
		t.Fatalf("create project: %d", st)
	}
	if st := d.postJSON(t, "/api/v1/projects/"+p.Project.ID+"/compute", `{"config":{"resources":{"memory":"128Mi"}}}`, &struct{}{}); st != 201 {
		t.Fatalf("create compute: %d", st)
	}
	if o, err := d.mariadb(t, p.Role.MySQLUser, p.Role.Password, "-e", "SELECT 1"); err != nil || o != "1" {
		t.Fatalf("login within the quota: %v %q", err, o)
	}
	d.waitState(t, p.Project.ID, "suspended", 20*time.Second)
	o, err := d.mariadb(t, p.Role.MySQLUser, p.Role.Password, "-e", "SELECT 1")
	if err == nil || !strings.Contains(o, "1226") || !strings.Contains(o, "compute_seconds_per_month is 2") {
		t.Fatalf("login with the quota spent: %v %q, want ERROR 1226 naming the quota", err, o)
	}
}
