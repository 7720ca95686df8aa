package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/compute/mariadb"
	"github.com/serverlessd/serverlessd/store"
)

func TestNewReportsMissingMariadbd(t *testing.T) {
	_, err := New(Options{Dir: t.TempDir(), Mariadbd: "/nonexistent/mariadbd"})
	if err == nil || !strings.Contains(err.Error(), "mariadbd not found") {
		t.Fatalf("New with a missing mariadbd: got %v", err)
	}
}

func TestVersion(t *testing.T) {
	d, _ := newDriver(t, Options{})
	if v := d.Version(); !strings.Contains(v, "MariaDB") {
		t.Fatalf("Version() = %q, want a MariaDB version", v)
	}
}

// TestStartAdminAndUsers covers provisioning, the socket-only layout, the
// accounts left in the template and a user role logging in over the socket.
func TestStartAdminAndUsers(t *testing.T) {
	d, _ := newDriver(t, Options{})
	exits := watchExits(d)
	c := newCompute(t, d, "512Mi")
	addr := start(t, d, c)
	l := layout{root: filepath.Join(d.opts.Dir, c.ID)}
	if addr != "unix:"+l.socket() {
		t.Fatalf("address %q, want unix:%s", addr, l.socket())
	}
	checkMode(t, l.run(), 0o700)
	checkMode(t, l.password(), 0o600)
	checkMode(t, l.initSQL(), 0o600)

	admin := adminDB(t, d, c, addr)
	if n := queryInt(t, admin, "SELECT 1"); n != 1 {
		t.Fatalf("SELECT 1 = %d", n)
	}
	// Only the admin and the locked mariadb.sys: no root, no anonymous user.
	if n := queryInt(t, admin, "SELECT COUNT(*) FROM mysql.user WHERE NOT (user IN ('mariadb.sys', '"+AdminUser+"') AND host = 'localhost')"); n != 0 {
		t.Fatalf("%d unexpected accounts in the template", n)
	}
	if n := queryInt(t, admin, "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'test'"); n != 0 {
		t.Fatal("the test database exists")
	}
	if n := queryInt(t, admin, "SELECT @@innodb_buffer_pool_size"); n != 256<<20 {
		t.Fatalf("innodb_buffer_pool_size = %d, want half of 512Mi", n)
	}
	if n := queryInt(t, admin, "SELECT @@skip_networking"); n != 1 {
		t.Fatal("networking is on")
	}

	// The manager creates roles as 'name'@'%' with a native hash; the proxy
	// logs in as them over the same socket.
	mustExec(t, admin,
		"CREATE DATABASE app",
		"CREATE USER 'app'@'%' IDENTIFIED BY PASSWORD '"+mariadb.HashPassword("s3cret-pw")+"'",
		"GRANT ALL PRIVILEGES ON app.* TO 'app'@'%'")
	user := openDB(t, addr, "app", "s3cret-pw", "app")
	var who string
	if err := user.QueryRow("SELECT CURRENT_USER()").Scan(&who); err != nil {
		t.Fatalf("log in as the '%%' user over the socket: %v", err)
	}
	if who != "app@%" {
		t.Fatalf("CURRENT_USER() = %q, want app@%%", who)
	}
	if err := openDB(t, addr, "app", "wrong", "app").Ping(); err == nil {
		t.Fatal("a wrong password logged in")
	}
	if err := openDB(t, addr, AdminUser, "wrong", "").Ping(); err == nil {
		t.Fatal("the admin account accepted a wrong password")
	}
	stop(t, d, c)
	expectNoExit(t, exits)
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != want {
		t.Fatalf("%s has mode %o, want %o", path, got, want)
	}
}

func expectNoExit(t *testing.T, exits exitEvents) {
	t.Helper()
	select {
	case e := <-exits:
		t.Fatalf("exit handler called for a deliberate stop: %s: %v", e.id, e.err)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestDataSurvivesStopStart also checks that Stop and Provision are
// idempotent and that a deliberate stop is never reported as a crash.
func TestDataSurvivesStopStart(t *testing.T) {
	d, _ := newDriver(t, Options{})
	exits := watchExits(d)
	c := newCompute(t, d, "")
	addr := start(t, d, c)
	mustExec(t, adminDB(t, d, c, addr),
		"CREATE DATABASE shop",
		"CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(50))",
		"INSERT INTO shop.orders VALUES (1, 'one'), (2, 'two'), (3, 'three')")
	before, _ := d.Admin(ctx(t), c)
	if err := d.Provision(ctx(t), c); err != nil {
		t.Fatalf("Provision of a provisioned compute: %v", err)
	}
	if after, _ := d.Admin(ctx(t), c); after != before {
		t.Fatal("a second Provision changed the admin password")
	}
	for i := range 3 {
		stop(t, d, c)
		stop(t, d, c) // a no-op
		if pids := mariadbdPids(t, d, c.ID); len(pids) != 0 {
			t.Fatalf("cycle %d: mariadbd %v still runs after Stop", i, pids)
		}
		addr = start(t, d, c)
		if n := queryInt(t, adminDB(t, d, c, addr), "SELECT COUNT(*) FROM shop.orders"); n != 3 {
			t.Fatalf("cycle %d: %d rows after a restart, want 3", i, n)
		}
	}
	stop(t, d, c)
	expectNoExit(t, exits)
}

// TestCrashIsReportedAndRecovered kills mariadbd with SIGKILL.
func TestCrashIsReportedAndRecovered(t *testing.T) {
	d, _ := newDriver(t, Options{})
	exits := watchExits(d)
	c := newCompute(t, d, "")
	addr := start(t, d, c)
	db := adminDB(t, d, c, addr)
	mustExec(t, db, "CREATE DATABASE k", "CREATE TABLE k.t (id INT PRIMARY KEY)")
	for i := range 50 {
		mustExec(t, db, "INSERT INTO k.t VALUES ("+strconv.Itoa(i)+")")
	}
	pids := mariadbdPids(t, d, c.ID)
	if len(pids) != 1 {
		t.Fatalf("want one mariadbd, found %v", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-exits:
		if e.id != c.ID || e.err == nil {
			t.Fatalf("exit handler got (%q, %v)", e.id, e.err)
		}
		t.Logf("exit handler: %v", e.err)
	case <-time.After(10 * time.Second):
		t.Fatal("the exit handler was not called after kill -9")
	}
	addr = start(t, d, c)
	if n := queryInt(t, adminDB(t, d, c, addr), "SELECT COUNT(*) FROM k.t"); n != 50 {
		t.Fatalf("%d rows after crash recovery, want 50", n)
	}
	stop(t, d, c)
}

// TestComputeEnvironment: mariadbd gets its malloc arena cap and none of
// the daemon's own environment, which may hold its secrets.
func TestComputeEnvironment(t *testing.T) {
	t.Setenv("SERVERLESSD_API_TOKENS", "secret-token")
	t.Setenv("TZ", "UTC")
	d, _ := newDriver(t, Options{})
	c := newCompute(t, d, "")
	start(t, d, c)
	defer stop(t, d, c)
	pids := mariadbdPids(t, d, c.ID)
	if len(pids) != 1 {
		t.Fatalf("want one mariadbd, found %v", pids)
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if !slices.Contains(env, "MALLOC_ARENA_MAX=2") || !slices.Contains(env, "TZ=UTC") {
		t.Errorf("mariadbd's environment %q lacks MALLOC_ARENA_MAX=2 or TZ=UTC", env)
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "SERVERLESSD_") {
			t.Errorf("mariadbd inherited the daemon's %s", kv)
		}
	}
}

// TestAdoptionByANewDriver simulates a daemon restart: a second Driver on
// the same Dir adopts the running mariadbd instead of starting another.
func TestAdoptionByANewDriver(t *testing.T) {
	d1, _ := newDriver(t, Options{})
	c := newCompute(t, d1, "")
	addr := start(t, d1, c)
	pid := mariadbdPids(t, d1, c.ID)[0]

	d2, _ := newDriver(t, Options{Dir: d1.opts.Dir})
	exits2 := watchExits(d2)
	running, err := d2.Running(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(running) != 1 || running[0].ComputeID != c.ID || running[0].PID != pid || running[0].Address != addr {
		t.Fatalf("Running() = %+v, want %s pid %d at %s", running, c.ID, pid, addr)
	}
	addr2, err := d2.Start(ctx(t), c)
	if err != nil || addr2 != addr {
		t.Fatalf("Start on an adopted compute = %q, %v", addr2, err)
	}
	if pids := mariadbdPids(t, d2, c.ID); len(pids) != 1 || pids[0] != pid {
		t.Fatalf("after Start on the adopted compute: mariadbd %v, want only %d", pids, pid)
	}
	if err := d2.Stop(ctx(t), c); err != nil {
		t.Fatalf("Stop from the adopting driver: %v", err)
	}
	if pids := mariadbdPids(t, d2, c.ID); len(pids) != 0 {
		t.Fatalf("mariadbd %v still runs after Stop", pids)
	}
	expectNoExit(t, exits2)
	addr = start(t, d2, c)
	if n := queryInt(t, adminDB(t, d2, c, addr), "SELECT 1"); n != 1 {
		t.Fatal("SELECT 1 failed after a restart by the new driver")
	}
	stop(t, d2, c)
}

// TestAdoptedCrashIsReported: an adopted mariadbd is not our child, yet its
// death is noticed.
func TestAdoptedCrashIsReported(t *testing.T) {
	d1, _ := newDriver(t, Options{})
	c := newCompute(t, d1, "")
	start(t, d1, c)
	d2, _ := newDriver(t, Options{Dir: d1.opts.Dir})
	exits := watchExits(d2)
	if r, err := d2.Running(ctx(t)); err != nil || len(r) != 1 {
		t.Fatalf("Running() = %v, %v", r, err)
	}
	_ = syscall.Kill(r0(t, d2, c.ID), syscall.SIGKILL)
	select {
	case e := <-exits:
		if e.id != c.ID {
			t.Fatalf("exit handler called for %q", e.id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the death of an adopted mariadbd went unnoticed")
	}
}

func r0(t *testing.T, d *Driver, id string) int {
	pids := mariadbdPids(t, d, id)
	if len(pids) != 1 {
		t.Fatalf("want one mariadbd, found %v", pids)
	}
	return pids[0]
}

func TestStalePidFileIsIgnored(t *testing.T) {
	d, _ := newDriver(t, Options{})
	c := newCompute(t, d, "")
	l := layout{root: filepath.Join(d.opts.Dir, c.ID)}
	// A live pid that is not mariadbd: this test process.
	if err := os.WriteFile(l.pidFile(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	running, err := d.Running(ctx(t))
	if err != nil || len(running) != 0 {
		t.Fatalf("Running() = %v, %v; want nothing", running, err)
	}
	if _, err := os.Stat(l.pidFile()); !os.IsNotExist(err) {
		t.Fatal("the stale pid file was not removed")
	}
	start(t, d, c)
	stop(t, d, c)
}

func TestDestroyRemovesEverything(t *testing.T) {
	d, _ := newDriver(t, Options{})
	c := newCompute(t, d, "")
	start(t, d, c)
	if err := d.Destroy(ctx(t), c); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	entries, _ := os.ReadDir(d.opts.Dir)
	if len(entries) != 0 {
		t.Fatalf("Dir still holds %v after Destroy", entries)
	}
	if pids := mariadbdPids(t, d, c.ID); len(pids) != 0 {
		t.Fatalf("mariadbd %v runs after Destroy", pids)
	}
	if err := d.Destroy(ctx(t), c); err != nil {
		t.Fatalf("Destroy of a destroyed compute: %v", err)
	}
	if _, err := d.Start(ctx(t), c); !errors.Is(err, compute.ErrNotProvisioned) {
		t.Fatalf("Start after Destroy: %v, want ErrNotProvisioned", err)
	}
	if _, err := d.Admin(ctx(t), c); !errors.Is(err, compute.ErrNotProvisioned) {
		t.Fatalf("Admin after Destroy: %v, want ErrNotProvisioned", err)
	}
}

func TestStartHonoursContext(t *testing.T) {
	d, _ := newDriver(t, Options{})
	exits := watchExits(d)
	c := newCompute(t, d, "")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Start(cancelled, c); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a cancelled context: %v", err)
	}
	if pids := mariadbdPids(t, d, c.ID); len(pids) != 0 {
		t.Fatalf("a cancelled Start launched mariadbd %v", pids)
	}
	// A deadline that expires mid-start: the half-started mariadbd is
	// stopped, and is no crash.
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if _, err := d.Start(short, c); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start past its deadline: %v", err)
	}
	waitFor(t, 10*time.Second, "the half-started mariadbd to exit", func() bool { return len(mariadbdPids(t, d, c.ID)) == 0 })
	expectNoExit(t, exits)
	start(t, d, c)
	stop(t, d, c)
}

func TestStopTimeoutEscalatesToSIGKILL(t *testing.T) {
	d, logs := newDriver(t, Options{StopTimeout: time.Millisecond})
	exits := watchExits(d)
	c := newCompute(t, d, "")
	start(t, d, c)
	stop(t, d, c)
	if !strings.Contains(logs.String(), "SIGKILL") {
		t.Fatalf("no SIGKILL warning in the logs:\n%s", logs.String())
	}
	expectNoExit(t, exits)
	start(t, d, c) // InnoDB recovers
	stop(t, d, c)
}

func TestStartUnprovisioned(t *testing.T) {
	d, _ := newDriver(t, Options{})
	c := &store.Compute{ID: "cmp_never"}
	if _, err := d.Start(ctx(t), c); !errors.Is(err, compute.ErrNotProvisioned) {
		t.Fatalf("Start: %v, want ErrNotProvisioned", err)
	}
	if err := d.Stop(ctx(t), c); err != nil {
		t.Fatalf("Stop of an unknown compute: %v", err)
	}
}

func TestRejectsBadIDsAndLongSocketPaths(t *testing.T) {
	d, _ := newDriver(t, Options{})
	for _, id := range []string{"", "..", "a/b", ".hidden"} {
		if err := d.Provision(ctx(t), &store.Compute{ID: id}); err == nil {
			t.Errorf("Provision(%q) accepted a bad id", id)
		}
	}
	long := filepath.Join(localtest.Dir(t), strings.Repeat("x", 90), "computes")
	d2, _ := newDriver(t, Options{Dir: long})
	err := d2.Provision(ctx(t), &store.Compute{ID: "cmp_x"})
	if err == nil || !strings.Contains(err.Error(), "107") {
		t.Fatalf("Provision with a long socket path: %v", err)
	}
}

// TestStartReportsEarlyExit: a mariadbd that dies while starting fails
// Start with the tail of its error log, and is no crash.
func TestStartReportsEarlyExit(t *testing.T) {
	d, _ := newDriver(t, Options{})
	exits := watchExits(d)
	c := newCompute(t, d, "")
	l := layout{root: filepath.Join(d.opts.Dir, c.ID)}
	if err := os.Truncate(filepath.Join(l.data(), "ibdata1"), 0); err != nil {
		t.Fatal(err)
	}
	_, err := d.Start(ctx(t), c)
	if err == nil || !strings.Contains(err.Error(), "exited during start-up") || !strings.Contains(err.Error(), "[ERROR]") {
		t.Fatalf("Start on a broken datadir: %v", err)
	}
	t.Logf("Start: %v", err)
	expectNoExit(t, exits)
}
