package proxy

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mariadbCLI runs the Debian mariadb client against the proxy.
func (e *env) mariadbCLI(ctx context.Context, user, pw string, args ...string) *exec.Cmd {
	e.t.Helper()
	bin, err := exec.LookPath("mariadb")
	if err != nil {
		e.t.Fatalf("mariadb client not found (install mariadb-client): %v", err)
	}
	host, port, _ := strings.Cut(e.addr, ":")
	base := []string{"--no-defaults", "-h", host, "-P", port, "-u", user, "-p" + pw, "--protocol=TCP"}
	return exec.CommandContext(ctx, bin, append(base, args...)...)
}

// TestMariaDBCLI logs in with the Debian mariadb client, with and without
// TLS, and checks the results and the TLS state the client reports.
func TestMariaDBCLI(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name string
		args []string
		tls  bool
	}{
		{"plain", []string{"--skip-ssl"}, false},
		{"ssl", []string{"--ssl"}, true},
		{"ssl-verify-ca", []string{"--ssl", "--ssl-ca=" + sharedData + "/" + selfSignedCertFile, "--ssl-verify-server-cert", "-h", "localhost"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append(tc.args, "-N", "-B", "app", "-e", "SELECT 6*7, CURRENT_USER(), DATABASE(); \\s")
			out, err := e.mariadbCLI(ctx, "shop.u", "pw", args...).CombinedOutput()
			if err != nil {
				t.Fatalf("mariadb: %v\n%s", err, out)
			}
			s := string(out)
			t.Logf("%s", s)
			if !strings.Contains(s, "42\tu@%\tapp") {
				t.Fatalf("unexpected output:\n%s", s)
			}
			if got := strings.Contains(s, "Cipher in use"); got != tc.tls {
				t.Fatalf("TLS in use = %v, want %v:\n%s", got, tc.tls, s)
			}
		})
	}
	t.Run("wrong-password", func(t *testing.T) {
		out, err := e.mariadbCLI(context.Background(), "shop.u", "nope", "-e", "SELECT 1").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "ERROR 1045 (28000): Access denied for user 'shop.u'") {
			t.Fatalf("want 1045, got %v:\n%s", err, out)
		}
	})
}

// TestMariaDBCLICtrlC sends SIGINT to the mariadb client during
// SELECT SLEEP(30): the client opens a second connection and sends
// KILL QUERY <our connection id>, which must stop the statement on the
// right backend at once; the session then goes on.
func TestMariaDBCLICtrlC(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := e.mariadbCLI(ctx, "shop.u", "pw", "-N", "-B", "--force", "-v")
	cmd.Stdin = strings.NewReader("SELECT SLEEP(30);\nSELECT CONCAT('al', 'ive');\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return backendRunning(t, e.db, "SELECT SLEEP(30)") })
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	waitFor(t, 2*time.Second, func() bool { return !backendRunning(t, e.db, "SELECT SLEEP(30)") })
	err := cmd.Wait()
	t.Logf("statement stopped %s after SIGINT; client: %v\n%s", time.Since(sent), err, out.String())
	s := out.String()
	if !strings.Contains(s, "alive") {
		t.Fatalf("the session did not go on after Ctrl-C:\n%s", s)
	}
	if e.srv.Count(CountKillRewritten) != 1 {
		t.Fatalf("kill_rewritten = %d", e.srv.Count(CountKillRewritten))
	}
}

// backendRunning reports whether the backend is executing q.
func backendRunning(t testing.TB, m *mariadb, q string) bool {
	db, err := m.admin()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = ?", q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func waitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
