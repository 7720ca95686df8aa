package compute_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

// env is one daemon's worth of real parts: a SQLite store, the local
// mariadbd driver and a manager.
type env struct {
	dir string
	st  store.Store
	drv *local.Driver
	mgr *compute.Manager
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newEnv starts a manager on dir (a fresh temp dir when empty).
func newEnv(t testing.TB, dir string) *env {
	t.Helper()
	if dir == "" {
		dir = localtest.Dir(t)
	}
	st, err := sqlite.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	drv, err := local.New(local.Options{Dir: filepath.Join(dir, "computes"), StopTimeout: 30 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("local driver (is mariadb-server installed? `make test` installs it): %v", err)
	}
	mgr := compute.New(compute.Options{Store: st, Driver: drv, Node: "test", Logger: testLogger(t)})
	return &env{dir: dir, st: st, drv: drv, mgr: mgr}
}

// project creates a project with its root role and an active compute, and
// stops the compute when the test ends.
func (e *env) project(t testing.TB, name string) (*store.Project, *store.Compute, string) {
	t.Helper()
	return e.projectMem(t, name, "128Mi")
}

// projectMem is project with a compute of the given memory.
func (e *env) projectMem(t testing.TB, name, mem string) (*store.Project, *store.Compute, string) {
	t.Helper()
	p := e.projectWith(t, name, storeSpec(mem, ""))
	return p.p, p.c, p.pw
}

// testProject is a project, its compute and its root password.
type testProject struct {
	p  *store.Project
	c  *store.Compute
	pw string
}

func storeSpec(mem, storage string) store.ComputeSpec {
	return store.ComputeSpec{Storage: storage, Resources: store.Resources{Memory: mem}}
}

// projectWith is project with a compute of the given spec.
func (e *env) projectWith(t testing.TB, name string, spec store.ComputeSpec) testProject {
	t.Helper()
	ctx := context.Background()
	p := &store.Project{ID: store.NewID("prj"), Name: name, CreatedAt: store.Now(), UpdatedAt: store.Now()}
	if err := e.st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	_, pw, err := e.mgr.CreateRole(ctx, p.ID, compute.OwnerRole)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := e.mgr.Create(ctx, p.ID, spec)
	if err != nil {
		t.Fatal(err)
	}
	if c.State != store.StateActive {
		t.Fatalf("new compute is %s, want active", c.State)
	}
	t.Cleanup(func() { _ = e.drv.Stop(context.Background(), c) })
	return testProject{p, c, pw}
}

// open connects to a compute's backend directly as user.
func open(t testing.TB, address, user, pw string) *sql.DB {
	t.Helper()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = user, pw, "unix", strings.TrimPrefix(address, "unix:")
	cfg.DBName = "app"
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxIdleConns(0)
	t.Cleanup(func() { db.Close() })
	return db
}

// rootDB returns a connection to the project's compute as root, after
// making sure the "app" database exists.
func rootDB(t testing.TB, address, pw string) *sql.DB {
	t.Helper()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = compute.OwnerRole, pw, "unix", strings.TrimPrefix(address, "unix:")
	c, _ := mysql.NewConnector(cfg)
	db := sql.OpenDB(c)
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE IF NOT EXISTS app"); err != nil {
		t.Fatalf("root login to %s: %v", address, err)
	}
	return open(t, address, compute.OwnerRole, pw)
}

func countRows(t testing.TB, db *sql.DB) int {
	t.Helper()
	return countTable(t, db, "t")
}

// countTable counts the rows of table.
func countTable(t testing.TB, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDataSurvivesSuspendResumeCycles(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	p, c, pw := e.project(t, "cycles")
	db := rootDB(t, c.Address, pw)
	if _, err := db.Exec("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	for cycle := 1; cycle <= 20; cycle++ {
		if _, err := db.Exec("INSERT INTO t VALUES (?, ?)", cycle, fmt.Sprint("row ", cycle)); err != nil {
			t.Fatalf("cycle %d insert: %v", cycle, err)
		}
		sc, op, err := e.mgr.Suspend(ctx, c.ID, compute.ReasonAPI)
		if err != nil || sc.State != store.StateSuspended || op.Status != store.OpSucceeded {
			t.Fatalf("cycle %d suspend: state %v, op %+v, err %v", cycle, sc.State, op, err)
		}
		if res, ok := e.mgr.Warm(p.ID); ok {
			t.Fatalf("cycle %d: Warm answers %+v for a suspended compute", cycle, res)
		}
		res, err := e.mgr.Wake(ctx, p.ID)
		if err != nil || !res.ColdStart {
			t.Fatalf("cycle %d wake: %+v %v", cycle, res, err)
		}
		if w, ok := e.mgr.Warm(p.ID); !ok || w.Address != res.Address || w.ColdStart {
			t.Fatalf("cycle %d: Warm after the wake = %+v, %v; want %s, warm", cycle, w, ok, res.Address)
		}
		db = open(t, res.Address, compute.OwnerRole, pw)
		if n := countRows(t, db); n != cycle {
			t.Fatalf("cycle %d: %d rows after resume, want %d", cycle, n, cycle)
		}
	}
	ops, err := e.st.ListOperations(ctx, p.ID, 1000)
	if err != nil {
		t.Fatal(err)
	}
	// 1 create + 1 initial start + 20 suspends + 20 starts.
	if len(ops) != 42 {
		t.Fatalf("%d operations recorded, want 42", len(ops))
	}
}

func TestConcurrentWakesShareOneStart(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	p, c, _ := e.project(t, "storm")
	if _, _, err := e.mgr.Suspend(ctx, c.ID, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	const n = 100
	addrs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			res, err := e.mgr.Wake(ctx, p.ID)
			addrs[i], errs[i] = res.Address, err
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || addrs[i] == "" || addrs[i] != addrs[0] {
			t.Fatalf("wake %d: address %q (first %q), err %v", i, addrs[i], addrs[0], errs[i])
		}
	}
	if got := countOps(t, e.st, p.ID, store.ActionStart); got != 2 { // the creation's start + this one
		t.Fatalf("%d start operations, want 2", got)
	}
}

func countOps(t testing.TB, st store.Store, projectID, action string) int {
	t.Helper()
	ops, err := st.ListOperations(context.Background(), projectID, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, op := range ops {
		if op.Action == action {
			n++
		}
	}
	return n
}

func TestWakeDuringSuspendWaitsThenResumes(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	p, c, pw := e.project(t, "during")
	suspended := make(chan error, 1)
	go func() {
		_, _, err := e.mgr.Suspend(ctx, c.ID, compute.ReasonAPI)
		suspended <- err
	}()
	// Wait until the suspend is under way, then wake.
	waitState(t, e.st, c.ID, store.StateSuspending, store.StateSuspended)
	res, err := e.mgr.Wake(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-suspended; err != nil {
		t.Fatal(err)
	}
	if err := open(t, res.Address, compute.OwnerRole, pw).Ping(); err != nil && !isUnknownDB(err) {
		t.Fatalf("login after wake-during-suspend: %v", err)
	}
	got, _ := e.st.GetCompute(ctx, c.ID)
	if got.State != store.StateActive {
		t.Fatalf("state %s after wake, want active", got.State)
	}
}

func isUnknownDB(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1049
}

func waitState(t testing.TB, st store.Store, id string, states ...store.ComputeState) store.ComputeState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := st.GetCompute(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range states {
			if c.State == s {
				return s
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("compute %s never reached %v", id, states)
	return ""
}

func TestCrashedBackendIsRecovered(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	p, c, pw := e.project(t, "crash")
	db := rootDB(t, c.Address, pw)
	if _, err := db.Exec("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	// Write in a loop; every acknowledged insert is committed.
	var committed int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			if _, err := db.Exec("INSERT INTO t VALUES (?)", i); err != nil {
				return
			}
			committed = i
		}
	}()
	time.Sleep(200 * time.Millisecond)
	pid := backendPID(t, e.drv, c.ID)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	if committed == 0 {
		t.Fatal("no insert committed before the kill")
	}
	if s := waitState(t, e.st, c.ID, store.StateFailed); s != store.StateFailed {
		t.Fatalf("state %s", s)
	}
	res, err := e.mgr.Wake(ctx, p.ID)
	if err != nil {
		t.Fatalf("wake after crash: %v", err)
	}
	if n := countRows(t, open(t, res.Address, compute.OwnerRole, pw)); n < committed {
		t.Fatalf("%d rows after recovery, but %d were committed", n, committed)
	}
}

func backendPID(t testing.TB, drv *local.Driver, computeID string) int {
	t.Helper()
	ins, err := drv.Running(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		if in.ComputeID == computeID && in.PID > 0 {
			return in.PID
		}
	}
	t.Fatalf("compute %s is not running", computeID)
	return 0
}

// TestRestartedDaemonAdopts simulates serverlessd dying with -9: a second
// store+driver+manager on the same data dir reconciles, adopts the running
// mariadbd and serves it, without a second mariadbd on the datadir.
func TestRestartedDaemonAdopts(t *testing.T) {
	dir := localtest.Dir(t)
	first := newEnv(t, dir)
	ctx := context.Background()
	p, c, pw := first.project(t, "adopt")
	pid := backendPID(t, first.drv, c.ID)

	second := newEnv(t, dir)
	if err := second.mgr.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := second.mgr.Wake(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if res.ColdStart {
		t.Fatal("adopted compute was started again")
	}
	if got := backendPID(t, second.drv, c.ID); got != pid {
		t.Fatalf("backend pid %d, want the adopted %d", got, pid)
	}
	if err := open(t, res.Address, compute.OwnerRole, pw).Ping(); err != nil && !isUnknownDB(err) {
		t.Fatal(err)
	}
	if _, _, err := second.mgr.Suspend(ctx, c.ID, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	// An exited child of the first driver, which this test process is,
	// stays a zombie (and kill(pid, 0) succeeds on it) until that driver
	// reaps it, which it does at once.
	for deadline := time.Now().Add(5 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("adopted mariadbd still runs after suspend")
		}
	}
}

func TestRolesFollowTheStore(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	p, c, _ := e.project(t, "roles")
	ping := func(addr, user, pw string) error {
		err := open(t, addr, user, pw).Ping()
		if isUnknownDB(err) {
			return nil // logged in; the "app" database just does not exist
		}
		return err
	}
	_, pw, err := e.mgr.CreateRole(ctx, p.ID, "app")
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(c.Address, "app", pw); err != nil {
		t.Fatalf("role created while active cannot log in: %v", err)
	}
	_, pw2, err := e.mgr.ResetPassword(ctx, p.ID, "app")
	if err != nil {
		t.Fatal(err)
	}
	if ping(c.Address, "app", pw) == nil || ping(c.Address, "app", pw2) != nil {
		t.Fatal("after a reset the old password must fail and the new one work")
	}
	if _, _, err := e.mgr.Suspend(ctx, c.ID, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	_, pw3, err := e.mgr.CreateRole(ctx, p.ID, "late")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.mgr.DeleteRole(ctx, p.ID, "app"); err != nil {
		t.Fatal(err)
	}
	res, err := e.mgr.Wake(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(res.Address, "late", pw3); err != nil {
		t.Fatalf("role created while suspended cannot log in after resume: %v", err)
	}
	if ping(res.Address, "app", pw2) == nil {
		t.Fatal("role deleted while suspended can still log in")
	}
	for _, bad := range []string{"serverlessd_admin", "", "a b", "mariadb.sys", strings.Repeat("x", 33)} {
		if _, _, err := e.mgr.CreateRole(ctx, p.ID, bad); !errors.Is(err, compute.ErrInvalidRole) {
			t.Errorf("role name %q: want ErrInvalidRole, got %v", bad, err)
		}
	}
}
