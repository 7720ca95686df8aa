package local

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/store"
)

// sharedTemplates is one templates folder for the whole test binary, so the
// template datadir (~0.5 s of mariadb-install-db) is built once.
var sharedTemplates string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sld-tpl-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedTemplates = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logBuffer collects a test's driver logs; they are printed if it fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newDriver returns a driver on a fresh Dir. A machine without mariadbd
// fails here, with New's message: these tests never skip.
func newDriver(t testing.TB, opts Options) (*Driver, *logBuffer) {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = filepath.Join(localtest.Dir(t), "computes")
	}
	if opts.TemplatesDir == "" {
		opts.TemplatesDir = sharedTemplates
	}
	logs := &logBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := New(opts)
	if err != nil {
		t.Fatalf("local driver needs a real mariadbd (apt-get install mariadb-server): %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("driver logs:\n%s", logs.String())
		}
	})
	return d, logs
}

var computeSeq int

// newCompute provisions a compute (with the given memory) and registers its
// destruction at cleanup, so no mariadbd outlives the test.
func newCompute(t testing.TB, d *Driver, memory string) *store.Compute {
	t.Helper()
	computeSeq++
	c := &store.Compute{ID: fmt.Sprintf("cmp_test%d", computeSeq), Spec: store.ComputeSpec{Resources: store.Resources{Memory: memory}}}
	if err := d.Provision(ctx(t), c); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), c) })
	return c
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func start(t testing.TB, d *Driver, c *store.Compute) string {
	t.Helper()
	addr, err := d.Start(ctx(t), c)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return addr
}

func stop(t testing.TB, d *Driver, c *store.Compute) {
	t.Helper()
	if err := d.Stop(ctx(t), c); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// openDB logs in over the compute's socket as user.
func openDB(t testing.TB, addr, user, password, db string) *sql.DB {
	t.Helper()
	sock := strings.TrimPrefix(addr, "unix:")
	dsn := fmt.Sprintf("%s:%s@unix(%s)/%s?timeout=5s", user, password, sock, db)
	conn, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// adminDB logs in as the daemon's admin account.
func adminDB(t testing.TB, d *Driver, c *store.Compute, addr string) *sql.DB {
	t.Helper()
	cr, err := d.Admin(ctx(t), c)
	if err != nil {
		t.Fatalf("Admin: %v", err)
	}
	return openDB(t, addr, cr.User, cr.Password, "")
}

func mustExec(t testing.TB, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func queryInt(t testing.TB, db *sql.DB, q string) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// mariadbdPids lists the live mariadbd processes running on the compute's
// my.cnf, straight from /proc.
func mariadbdPids(t testing.TB, d *Driver, id string) []int {
	t.Helper()
	l := layout{root: filepath.Join(d.opts.Dir, id)}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		if d.isOurs(pid, l) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// exitEvents records exit handler calls.
type exitEvents chan exitEvent

type exitEvent struct {
	id  string
	err error
}

func watchExits(d *Driver) exitEvents {
	ch := make(exitEvents, 16)
	d.SetExitHandler(func(id string, err error) { ch <- exitEvent{id, err} })
	return ch
}

var _ compute.Driver = (*Driver)(nil)
