package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/compute"
	mdb "github.com/serverlessd/serverlessd/compute/mariadb"
)

// The shared backend, started once on first use (so fuzz workers that
// never need it do not start it) and stopped by TestMain.
var (
	backendOnce sync.Once
	backend     *mariadb
	backendErr  error
	testRoot    string
	sharedData  string // DataDir shared by the tests' proxies (one RSA key)
)

// Users in the shared backend and their passwords.
var backendUsers = map[string]string{"u": "pw", "v": "pw2", "a.b": "dotted", "nohash": "x", "pool": "pw3"}

func TestMain(m *testing.M) {
	var err error
	if testRoot, err = os.MkdirTemp("", "proxytest-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedData = testRoot + "/proxydata"
	code := m.Run()
	if backend != nil {
		backend.stop()
	}
	os.RemoveAll(testRoot)
	os.Exit(code)
}

// needBackend returns the shared mariadbd, failing (never skipping) the
// test when it cannot run.
func needBackend(t testing.TB) *mariadb {
	t.Helper()
	backendOnce.Do(func() {
		dir, err := os.MkdirTemp(testRoot, "mariadb-")
		if err != nil {
			backendErr = err
			return
		}
		if backend, backendErr = startMariaDB(dir); backendErr == nil {
			backendErr = backend.createUsers(backendUsers)
		}
	})
	if backendErr != nil {
		t.Fatalf("mariadbd: %v", backendErr)
	}
	return backend
}

// testDir is the Directory: projects by name and id, roles by project id.
type testDir struct {
	mu       sync.Mutex
	projects map[string]string            // name or id -> project id
	roles    map[string]map[string]string // project id -> role -> hash
	limits   map[string]int               // project id -> max_connections (0: unset)
	pools    map[string]PoolSettings      // project id -> pooling (unset: session mode)
	calls    atomic.Int64
}

// ProjectMaxConnections makes testDir a ProjectLimits.
func (d *testDir) ProjectMaxConnections(ctx context.Context, projectID string) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.limits[projectID], nil
}

// ProjectPooling makes testDir a ProjectPooling.
func (d *testDir) ProjectPooling(ctx context.Context, projectID string) (PoolSettings, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pools[projectID], nil
}

func (d *testDir) LookupRole(ctx context.Context, project, user string) (string, string, error) {
	d.calls.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	id, ok := d.projects[project]
	if !ok {
		return "", "", errors.New("no such project")
	}
	h, ok := d.roles[id][user]
	if !ok {
		return "", "", errors.New("no such role")
	}
	return id, h, nil
}

func (d *testDir) addProject(name, id string, roles map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.projects[name], d.projects[id] = id, id
	d.roles[id] = map[string]string{}
	for r, pw := range roles {
		h := ""
		if pw != "" {
			h = mysql.EncodePasswordHex(mysql.NativePasswordHash([]byte(pw)))
		}
		d.roles[id][r] = h
	}
}

// testWaker is the Waker: fixed addresses per project, optional delay and
// failures, and a call count per project.
type testWaker struct {
	mu      sync.Mutex
	addrs   map[string]string // project id -> address
	fail    map[string]error
	delay   time.Duration
	calls   map[string]int
	total   atomic.Int64
	actMu   sync.Mutex
	acts    map[string]*compute.Activity
	started map[string]bool
	backend *mariadb     // where KillThread kills, as its root
	clients int          // WakeResult.MaxClients
	kills   atomic.Int64 // KillThread and KillStatement calls
	warm    bool         // Warm answers for a started project, as the manager does
}

// Warm answers for a started project without a failure or a delay when
// w.warm is set; otherwise every attach goes through Wake.
func (w *testWaker) Warm(projectID string) (compute.WakeResult, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	addr, ok := w.addrs[projectID]
	if !w.warm || !ok || !w.started[projectID] || w.fail[projectID] != nil || w.delay > 0 {
		return compute.WakeResult{}, false
	}
	return compute.WakeResult{Address: addr, ComputeID: "c-" + projectID, ProjectID: projectID, MaxClients: w.clients}, true
}

// KillThread kills as the backend's root, as compute.Manager does as the
// daemon's account.
func (w *testWaker) KillThread(_ context.Context, _ string, thread uint32, queryOnly bool) error {
	w.kills.Add(1)
	what := "CONNECTION"
	if queryOnly {
		what = "QUERY"
	}
	return w.backend.exec(fmt.Sprintf("KILL %s %d", what, thread))
}

// KillStatement runs mariadb.KillStatement as the backend's root, as
// compute.Manager does as the daemon's account.
func (w *testWaker) KillStatement(_ context.Context, _ string, thread uint32, still func() bool) error {
	w.kills.Add(1)
	conn, err := client.Connect(w.backend.sock, "root", "", "")
	if err != nil {
		return err
	}
	defer conn.Close()
	return mdb.KillStatement(conn, thread, still)
}

func (w *testWaker) Wake(ctx context.Context, projectID string) (compute.WakeResult, error) {
	w.total.Add(1)
	w.mu.Lock()
	w.calls[projectID]++
	addr, ok := w.addrs[projectID]
	err := w.fail[projectID]
	cold := !w.started[projectID]
	w.started[projectID] = true
	delay := w.delay
	w.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return compute.WakeResult{}, ctx.Err()
		}
	}
	if err != nil {
		return compute.WakeResult{}, err
	}
	if !ok {
		return compute.WakeResult{}, fmt.Errorf("project %s: %w", projectID, compute.ErrNoCompute)
	}
	return compute.WakeResult{Address: addr, ComputeID: "c-" + projectID, ProjectID: projectID, ColdStart: cold, MaxClients: w.clients}, nil
}

func (w *testWaker) Activity(computeID string) *compute.Activity {
	w.actMu.Lock()
	defer w.actMu.Unlock()
	a, ok := w.acts[computeID]
	if !ok {
		a = &compute.Activity{}
		w.acts[computeID] = a
	}
	return a
}

func (w *testWaker) wakes(projectID string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls[projectID]
}

// env is one proxy in front of the shared backend.
type env struct {
	t     testing.TB
	srv   *Server
	addr  string
	dir   *testDir
	waker *testWaker
	db    *mariadb
	serve chan error
}

// newEnv starts a proxy with projects:
//
//	shop    (p-shop):   the shared backend over its unix socket
//	tcpshop (p-tcp):    the shared backend over TCP
//	other   (p-other):  the shared backend too, as another project
//	broken  (p-broken): Wake fails
//	nocompute (p-none): Wake finds no compute
func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	return newEnvLogger(t, mod, testLogger(t))
}

// newEnvLogger is newEnv with the proxy logging to logger.
func newEnvLogger(t testing.TB, mod func(*Config), logger *slog.Logger) *env {
	t.Helper()
	m := needBackend(t)
	e := &env{t: t, db: m,
		dir:   &testDir{projects: map[string]string{}, roles: map[string]map[string]string{}, limits: map[string]int{}, pools: map[string]PoolSettings{}},
		waker: &testWaker{addrs: map[string]string{}, fail: map[string]error{}, calls: map[string]int{}, acts: map[string]*compute.Activity{}, started: map[string]bool{}, backend: m},
	}
	roles := map[string]string{"u": "pw", "v": "pw2", "a.b": "dotted", "nohash": "", "pool": "pw3"}
	for _, p := range []struct{ name, id, addr string }{
		{"shop", "p-shop", m.unixAddr()}, {"tcpshop", "p-tcp", m.tcpAddr()},
		{"other", "p-other", m.unixAddr()}, {"broken", "p-broken", ""}, {"nocompute", "p-none", ""},
	} {
		e.dir.addProject(p.name, p.id, roles)
		if p.addr != "" {
			e.waker.addrs[p.id] = p.addr
		}
	}
	e.waker.fail["p-broken"] = errors.New("mariadbd exited during start-up: status 1")
	cfg := Config{DataDir: sharedData, RateLimitBurst: -1}
	if mod != nil {
		mod(&cfg)
	}
	e.start(cfg, logger)
	return e
}

func (e *env) start(cfg Config, logger *slog.Logger) {
	t := e.t
	srv, err := New(cfg, e.dir, e.waker, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.srv, e.addr, e.serve = srv, ln.Addr().String(), make(chan error, 1)
	go func() { e.serve <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-e.serve; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
}

// syncBuffer is a log sink tests can read while the proxy writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger writes the proxy's logs to the test log (shown on failure or
// with -v); benchmarks and PROXY_TEST_QUIET silence them.
func testLogger(t testing.TB) *slog.Logger {
	if _, bench := t.(*testing.B); bench || os.Getenv("PROXY_TEST_QUIET") != "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// dsn is a go-sql-driver DSN through the proxy.
func (e *env) dsn(user, pw, db, params string) string {
	return fmt.Sprintf("%s:%s@tcp(%s)/%s?%s", user, pw, e.addr, db, params)
}
