package e2e

import (
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/store/postgres/pgtest"
)

// TestPostgresOutage runs the daemon on a PostgreSQL store, kills
// PostgreSQL, and checks that the API answers 503 (no panic), that a
// connection already proxied keeps working, and that the daemon recovers
// by itself when PostgreSQL is back.
func TestPostgresOutage(t *testing.T) {
	pg := pgtest.New(t)
	dsn := pg.CreateDatabase(t)
	d := startDaemon(t, "", "SERVERLESSD_STORE_DRIVER=postgres", "SERVERLESSD_STORE_DSN="+dsn)
	var p projectOut
	d.cliJSON(&p, "project", "create", "pgshop", "--memory", "128Mi")

	db := d.openDB(t, p.Role.MySQLUser, p.Role.Password, "")
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatalf("login through the proxy: %v", err)
	}
	defer conn.Close()

	pg.Kill(t)
	for _, path := range []string{"/api/v1/projects", "/api/v1/projects/pgshop/operations", "/readyz"} {
		resp, err := http.Get("http://" + d.api + path)
		if err != nil {
			t.Fatalf("the daemon stopped answering: %v\n%s", err, d.log)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("GET %s with PostgreSQL down: HTTP %d, want 503", path, resp.StatusCode)
		}
	}
	var one int
	if err := conn.QueryRowContext(t.Context(), "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("an established proxied connection broke with the store: %v", err)
	}

	pg.Restart(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var out projectOut
		if code := d.getJSON("/api/v1/projects/pgshop", &out); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not recover after PostgreSQL came back\n%s", d.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(d.log.String(), "panic") {
		t.Fatalf("the daemon panicked:\n%s", d.log)
	}
}

// TestBadDSNIsOneLine: serve with an unreachable PostgreSQL stops at
// start-up with one clear line, not a stack trace, and no password.
func TestBadDSNIsOneLine(t *testing.T) {
	cmd := exec.Command(binary, "serve", "--data-dir", localtest.Dir(t), "--api-listen", freePort(t), "--proxy-listen", freePort(t))
	cmd.Env = append(cmd.Environ(), "SERVERLESSD_STORE_DRIVER=postgres",
		"SERVERLESSD_STORE_DSN=postgres://app:s3cret-pw@"+freePort(t)+"/state?connect_timeout=2")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("serve started with an unreachable store")
	}
	text := strings.TrimSpace(string(out))
	if strings.Count(text, "\n") != 0 || !strings.Contains(text, "connection refused") || strings.Contains(text, "s3cret") {
		t.Fatalf("want one line naming the cause without the password, got:\n%s", text)
	}
}
