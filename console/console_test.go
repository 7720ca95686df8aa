package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRoutes serves the page and its assets, with the headers that keep
// the pages to their own scripts, and nothing else under /console/.
func TestRoutes(t *testing.T) {
	mux := http.NewServeMux()
	for pattern, h := range Routes() {
		mux.Handle(pattern, h)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, tc := range []struct {
		path, wantType, wantBody string
		status                   int
	}{
		{"/", "text/html", `<script type="module" src="/console/app.js">`, 200},
		{"/console/app.js", "text/javascript", "function route()", 200},
		{"/console/style.css", "text/css", ":root", 200},
		{"/console/nothing.js", "", "", 404},
		{"/console/../console.go", "", "", 404},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("GET %s: %d, want %d", tc.path, resp.StatusCode, tc.status)
		}
		if tc.status != 200 {
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.wantType) {
			t.Fatalf("GET %s: Content-Type %q, want %s", tc.path, ct, tc.wantType)
		}
		if !strings.Contains(string(body), tc.wantBody) {
			t.Fatalf("GET %s: the body lacks %q", tc.path, tc.wantBody)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") ||
			!strings.Contains(csp, "frame-ancestors 'none'") {
			t.Fatalf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
	}
}
