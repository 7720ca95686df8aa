package kubetest

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DaemonConfig is a serverlessd config with the kubernetes driver. What
// the tests share is fixed here: the stop timeout, the sizes of a compute
// and debug logs, which the tests' failures are read from.
type DaemonConfig struct {
	DataDir, API, Proxy          string // API and Proxy: host:port
	Kubeconfig, Namespace, Image string
	CPU                          string // a compute's CPU request
	AgentImage                   string // kubernetes.agent_image, for backups
	More                         string // YAML appended: the store at least
}

// Write makes DataDir and writes the config in it as config.yaml, readable
// by this user only (a store's DSN may have a password); it returns the
// file's path.
func (c DaemonConfig) Write() (string, error) {
	cfg := fmt.Sprintf(`data_dir: %s
api:
  listen: %s
proxy:
  listen: %s
compute:
  driver: kubernetes
  stop_timeout: 30s
  default_memory: 256Mi
kubernetes:
  kubeconfig: %s
  namespace: %s
  image: %s
  storage_size: 1Gi
  cpu: %s
  memory: 256Mi
  agent_image: "%s"
log:
  level: debug
`, c.DataDir, c.API, c.Proxy, c.Kubeconfig, c.Namespace, c.Image, c.CPU, c.AgentImage) + c.More
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(c.DataDir, "config.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

// API is a client of a serverlessd's HTTP API, for a test: a call that
// fails ends the test, with the daemon's log.
type API struct {
	T     testing.TB
	Base  string        // http://host:port
	Token string        // a bearer token, or "" where the API wants none
	Logs  func() string // the end of the daemon's log (or logs)
}

// Call makes a call and decodes the JSON answer into out, unless out is
// nil. An error, a status other than want or an answer that does not
// decode ends the test.
func (a *API) Call(method, path, body string, want int, out any) {
	a.T.Helper()
	req, _ := http.NewRequest(method, a.Base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	// A call that hangs fails here, with the log, and not at the
	// test binary's timeout.
	resp, err := (&http.Client{Timeout: 3 * time.Minute}).Do(req)
	if err != nil {
		a.T.Fatalf("%s %s: %v; daemon log:\n%s", method, path, err, a.Logs())
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		a.T.Fatalf("%s %s: %d %s, want %d; daemon log:\n%s", method, path, resp.StatusCode, raw, want, a.Logs())
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			a.T.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
}

// CreateProject creates a project (body is the request's JSON: the name
// at least) and returns the password of its root role, which the API
// shows only in this answer.
func (a *API) CreateProject(body string) string {
	a.T.Helper()
	var created struct {
		Role struct {
			Password string `json:"password"`
		} `json:"role"`
	}
	a.Call("POST", "/api/v1/projects", body, 201, &created)
	return created.Role.Password
}

// WaitDaemonReady polls a serverlessd's /readyz at addr (host:port) until
// it answers 200, exited is closed, or a minute passes.
func WaitDaemonReady(addr string, exited <-chan struct{}) error {
	return WaitFor(60*time.Second, 20*time.Millisecond, "serverlessd /readyz", func() (bool, error) {
		if Closed(exited) {
			return false, Abort(fmt.Errorf("exited"))
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("status %s", resp.Status)
	})
}

// DSN is the Go MySQL driver's DSN for user@project through the proxy at
// addr. A login may wake a suspended compute: its timeout allows for the
// Pod's start.
func DSN(addr, project, user, password string) string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = project+"."+user, password, "tcp", addr
	cfg.Timeout = 2 * time.Minute
	return cfg.FormatDSN()
}

// MustExec runs stmts in order on db; the first that fails ends the test.
func MustExec(t testing.TB, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// WaitSnapshots waits, at most limit, until a project's backups list n
// snapshots or more.
func (a *API) WaitSnapshots(project string, n int, limit time.Duration) {
	a.T.Helper()
	var out struct {
		Backups struct {
			Snapshots []struct{ TakenAt time.Time } `json:"snapshots"`
		} `json:"backups"`
	}
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		a.Call("GET", "/api/v1/projects/"+project+"/backups", "", 200, &out)
		if len(out.Backups.Snapshots) >= n {
			return
		}
	}
	a.T.Fatalf("project %s lists %d snapshots after %s, want %d; daemon log:\n%s", project,
		len(out.Backups.Snapshots), limit, n, a.Logs())
}
