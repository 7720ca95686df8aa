package server_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/server"
	"github.com/serverlessd/serverlessd/server/openapitest"
)

// endpoints returns the document's operations as ServeMux patterns,
// "METHOD /path", sorted.
func endpoints(t *testing.T) []string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(server.OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	methods := []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}
	var out []string
	for path, item := range doc.Paths {
		for key := range item {
			if slices.Contains(methods, key) {
				out = append(out, strings.ToUpper(key)+" "+path)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIRoutes: every route the server registers is an operation of
// the document, with the same path parameters, and every operation of the
// document is a route.
func TestOpenAPIRoutes(t *testing.T) {
	noop := http.NotFoundHandler()
	s := server.New(server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics: &server.Metrics{Full: noop, Public: noop}})
	served := s.Patterns()
	slices.Sort(served)
	documented := endpoints(t)
	for _, p := range served {
		if !slices.Contains(documented, p) {
			t.Errorf("%s is served but not in openapi.json", p)
		}
	}
	for _, p := range documented {
		if !slices.Contains(served, p) {
			t.Errorf("%s is in openapi.json but not served", p)
		}
	}
}

// TestOpenAPIServed: the document is served, without a token, and is
// valid OpenAPI 3.1.
func TestOpenAPIServed(t *testing.T) {
	doc, err := openapitest.Document()
	if err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi.json is OpenAPI %s, want 3.1.0", doc.OpenAPI)
	}
	srv, _ := newAPI(t, token)
	r := call(t, srv, "GET", "/api/v1/openapi.json", "")
	if r.status != 200 || r.raw != string(server.OpenAPI()) {
		t.Fatalf("GET /api/v1/openapi.json without a token: %d %.200s", r.status, r.raw)
	}
}

// TestREADMEEndpoints: the README's table of endpoints lists the
// document's operations, no more, no fewer. Path parameters may be named
// differently there, and carry query strings.
func TestREADMEEndpoints(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := readmeEndpoints(t, string(readme))
	documented := []string{}
	for _, e := range endpoints(t) {
		documented = append(documented, anyParam(e))
	}
	for _, e := range listed {
		if !slices.Contains(documented, e) {
			t.Errorf("the README lists %s, which openapi.json does not have", e)
		}
	}
	for _, e := range documented {
		if !slices.Contains(listed, e) {
			t.Errorf("openapi.json has %s, which the README's table of endpoints does not list", e)
		}
	}
}

var (
	endpointCode = regexp.MustCompile("`([A-Z]+ /[^`?]*)[^`]*`")
	pathParam    = regexp.MustCompile(`\{[^}]*\}`)
)

// readmeEndpoints returns the endpoints in the first cells of the table
// headed "method and path", as "METHOD /path" with anonymous parameters.
func readmeEndpoints(t *testing.T, readme string) []string {
	_, table, found := strings.Cut(readme, "| method and path |")
	if !found {
		t.Fatal(`README.md has no table headed "| method and path |"`)
	}
	var out []string
	for _, line := range strings.Split(table, "\n")[1:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.ReplaceAll(line, `\|`, "/"), "|") // \| is a | inside a cell
		if len(cells) < 3 || strings.HasPrefix(cells[1], "---") {
			continue
		}
		for _, m := range endpointCode.FindAllStringSubmatch(cells[1], -1) {
			out = append(out, anyParam(m[1]))
		}
	}
	if len(out) == 0 {
		t.Fatal("the README's table of endpoints lists none")
	}
	return out
}

func anyParam(endpoint string) string { return pathParam.ReplaceAllString(endpoint, "{}") }

// TestOpenAPIReplies takes the operations that the other tests reach
// with errors only, or not at all, to success, so that call checks those
// replies against the document too: the probes, the document itself, a
// suspend with nothing to do, the usage reports as CSV, a restore, a
// branch and an undelete.
func TestOpenAPIReplies(t *testing.T) {
	srv, _ := newAPI(t)
	must := func(want int, method, path, body string, hdr ...string) reply {
		t.Helper()
		r := call(t, srv, method, path, body, hdr...)
		if r.status != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, r.status, r.raw, want)
		}
		return r
	}
	for _, path := range []string{"/healthz", "/readyz", "/api/v1/openapi.json"} {
		must(200, "GET", path, "")
	}
	id := str(must(201, "POST", "/api/v1/projects", `{"name":"src"}`), "project", "id")
	cid := str(must(201, "POST", "/api/v1/projects/src/compute", `{"config":{"resources":{"memory":"128Mi"}}}`), "compute", "id")
	c := "/api/v1/projects/src/compute/" + cid
	must(200, "POST", c+"/suspend", "")
	if r := must(200, "POST", c+"/suspend", ""); r.body["operation"] != nil {
		t.Fatalf("suspending a suspended compute ran an operation: %s", r.raw)
	}
	waitSnapshot(t, srv, "src")
	must(200, "POST", "/api/v1/projects/src/restore", `{"to":"latest"}`)
	must(201, "POST", "/api/v1/projects/src/branches", `{"name":"src-dev","at":"now"}`)

	csv := []string{"Accept", "text/csv"}
	for _, path := range []string{"/api/v1/usage", "/api/v1/usage?group=tenant", "/api/v1/tenants/default/usage"} {
		if r := must(200, "GET", path, "", csv...); !strings.Contains(r.raw, "compute_seconds") {
			t.Fatalf("GET %s as CSV: %s", path, r.raw)
		}
	}
	must(200, "GET", "/api/v1/projects/src/usage?granularity=day&from="+time.Now().Add(-72*time.Hour).UTC().Format(time.RFC3339), "")

	must(200, "DELETE", "/api/v1/projects/src", "")
	must(200, "POST", "/api/v1/projects/"+id+"/undelete", "")
}

// waitSnapshot waits until the project's compute has a snapshot.
func waitSnapshot(t *testing.T, srv *httptest.Server, project string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := call(t, srv, "GET", "/api/v1/projects/"+project+"/backups", "")
		b, _ := r.body["backups"].(map[string]any)
		if snaps, _ := b["snapshots"].([]any); len(snaps) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot of %s a minute on: %d %s", project, r.status, r.raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
