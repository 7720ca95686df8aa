package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/server/servertest"
)

const adminToken = "cli-test-admin-token-0123456789"

// cliEnv runs the real command line against the real API, on a real SQLite
// store and the real local driver, over a real socket.
type cliEnv struct {
	url string
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	srv, _ := servertest.New(t, servertest.Options{Tokens: []string{adminToken}})
	return &cliEnv{url: srv.URL}
}

// run executes one command line with --api and --token (the admin token
// unless token is given), and returns its stdout and stderr. The token must
// never appear in either.
func (e *cliEnv) run(t *testing.T, token string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	if token == "" {
		token = adminToken
	}
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"--api", e.url, "--token", token}, args...))
	err = root.Execute()
	for _, s := range []string{out.String(), errOut.String(), errString(err)} {
		if strings.Contains(s, token) {
			t.Fatalf("%v printed the --token value:\n%s", args, s)
		}
	}
	return out.String(), errOut.String(), err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (e *cliEnv) must(t *testing.T, token string, args ...string) string {
	t.Helper()
	out, _, err := e.run(t, token, args...)
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return out
}

func (e *cliEnv) runJSON(t *testing.T, v any, token string, args ...string) {
	t.Helper()
	out := e.must(t, token, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%v -o json: %v\n%s", args, err, out)
	}
}

// mustFail runs a command that must fail with an error containing want.
func (e *cliEnv) mustFail(t *testing.T, token, want string, args ...string) {
	t.Helper()
	out, _, err := e.run(t, token, args...)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("%v: err %v, want one containing %q\n%s", args, err, want, out)
	}
}

func TestTenantAndAPIKeyCommands(t *testing.T) {
	e := newCLIEnv(t)

	// Tenants: create with quotas, list, get, update only what is given.
	var tr tenantReply
	e.runJSON(t, &tr, "", "tenant", "create", "acme", "--max-projects", "2", "--max-compute-memory", "2Gi")
	acme := tr.Tenant
	if acme.ID == "" || acme.Name != "acme" || acme.Quotas.MaxProjects != 2 || acme.Quotas.MaxComputeMemory != "2Gi" {
		t.Fatalf("tenant create: %+v", acme)
	}
	if out := e.must(t, "", "tenant", "list"); !strings.Contains(out, acme.ID) || !strings.Contains(out, "default") {
		t.Fatalf("tenant list:\n%s", out)
	}
	if out := e.must(t, "", "tenant", "get", "acme"); !strings.Contains(out, "max_compute_memory:") || !strings.Contains(out, "2Gi") {
		t.Fatalf("tenant get:\n%s", out)
	}
	e.runJSON(t, &tr, "", "tenant", "update", "acme", "--max-projects", "3", "--max-connections-per-project", "10")
	if q := tr.Tenant.Quotas; q.MaxProjects != 3 || q.MaxConnectionsPerProject != 10 || q.MaxComputeMemory != "2Gi" || tr.Tenant.Name != "acme" {
		t.Fatalf("tenant update changed what it was not given: %+v", tr.Tenant)
	}
	e.mustFail(t, "", "nothing to update", "tenant", "update", "acme")
	e.mustFail(t, "", "max_compute_memory", "tenant", "update", "acme", "--max-compute-memory", "lots")
	e.mustFail(t, "", "not_found", "tenant", "get", "ghost")

	e.must(t, "", "tenant", "create", "tmp")
	e.runJSON(t, &tr, "", "tenant", "update", "tmp", "--name", "scratch")
	if tr.Tenant.Name != "scratch" {
		t.Fatalf("tenant rename: %+v", tr.Tenant)
	}
	if out := e.must(t, "", "tenant", "delete", "scratch"); !strings.Contains(out, "tenant scratch deleted") {
		t.Fatalf("tenant delete: %s", out)
	}
	e.mustFail(t, "", "not_found", "tenant", "get", "scratch")

	// A tenant API key: printed once, with a note on stderr.
	e.mustFail(t, "", "--scope must be admin, tenant or project", "api-key", "create", "--tenant", "acme", "--name", "ci", "--scope", "everything")
	e.mustFail(t, "", `required flag(s) "tenant"`, "api-key", "create", "--name", "ci", "--scope", "tenant")
	out, stderr, err := e.run(t, "", "api-key", "create", "--tenant", "acme", "--name", "ci", "--scope", "tenant", "-o", "json")
	if err != nil {
		t.Fatalf("api-key create: %v\n%s", err, out)
	}
	var kr apiKeyReply
	if err := json.Unmarshal([]byte(out), &kr); err != nil {
		t.Fatalf("api-key create -o json: %v\n%s", err, out)
	}
	if !strings.HasPrefix(kr.Key, "sdk_") || kr.APIKey.ID == "" || kr.APIKey.TenantID != acme.ID || kr.APIKey.Scope != "tenant" {
		t.Fatalf("api-key create: %s", out)
	}
	if !strings.Contains(stderr, "shown only now") || strings.Contains(stderr, kr.Key) {
		t.Fatalf("api-key create stderr: %q", stderr)
	}
	key := kr.Key

	// The key creates a project in its tenant; an admin creates another
	// there with --tenant, and one in the default tenant.
	var pr projectReply
	e.runJSON(t, &pr, key, "project", "create", "shop", "--no-compute")
	if pr.Project.TenantID != acme.ID {
		t.Fatalf("project created with the tenant key is in %q, want %s", pr.Project.TenantID, acme.ID)
	}
	e.runJSON(t, &pr, "", "project", "create", "blog", "--no-compute", "--tenant", "acme")
	if pr.Project.TenantID != acme.ID {
		t.Fatalf("project create --tenant acme is in %q, want %s", pr.Project.TenantID, acme.ID)
	}
	e.runJSON(t, &pr, "", "project", "create", "outside", "--no-compute")
	if pr.Project.TenantID != "ten_default" {
		t.Fatalf("project create without --tenant is in %q", pr.Project.TenantID)
	}
	e.mustFail(t, key, "not_found", "project", "create", "sneaky", "--no-compute", "--tenant", "default")

	for _, who := range []struct{ name, token string }{{"tenant key", key}, {"admin --tenant", ""}} {
		args := []string{"project", "list"}
		if who.token == "" {
			args = append(args, "--tenant", "acme")
		}
		out := e.must(t, who.token, args...)
		if !strings.Contains(out, "shop") || !strings.Contains(out, "blog") || strings.Contains(out, "outside") || !strings.Contains(out, "TENANT") {
			t.Fatalf("project list as %s:\n%s", who.name, out)
		}
	}
	if out := e.must(t, "", "project", "list"); !strings.Contains(out, "outside") || !strings.Contains(out, "shop") {
		t.Fatalf("project list as admin:\n%s", out)
	}
	e.mustFail(t, "", "not_found", "project", "list", "--tenant", "ghost")

	// The key's tenant sees its usage; the key list never shows the key.
	if out := e.must(t, key, "tenant", "usage", "acme", "--from", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)); !strings.Contains(out, "COMPUTE SECONDS") {
		t.Fatalf("tenant usage:\n%s", out)
	}
	e.mustFail(t, "", "RFC 3339", "tenant", "usage", "acme", "--to", "yesterday")
	out = e.must(t, key, "api-key", "list", "--tenant", "acme")
	if !strings.Contains(out, kr.APIKey.ID) || !strings.Contains(out, "ci") || strings.Contains(out, key) {
		t.Fatalf("api-key list:\n%s", out)
	}
	var kl struct {
		APIKeys []map[string]any `json:"api_keys"`
	}
	e.runJSON(t, &kl, "", "api-key", "list", "--tenant", "acme")
	if len(kl.APIKeys) != 1 || kl.APIKeys[0]["id"] != kr.APIKey.ID {
		t.Fatalf("api-key list -o json: %+v", kl)
	}

	// Revoked, the key is refused at once.
	if out := e.must(t, "", "api-key", "revoke", "--tenant", "acme", kr.APIKey.ID); !strings.Contains(out, "revoked") {
		t.Fatalf("api-key revoke: %s", out)
	}
	e.mustFail(t, key, "unauthorized", "project", "list")
	e.mustFail(t, key, "HTTP 401", "project", "create", "late", "--no-compute")
	e.mustFail(t, "", "not_found", "api-key", "revoke", "--tenant", "acme", kr.APIKey.ID)
}
