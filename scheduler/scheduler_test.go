package scheduler_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/metrics"
	"github.com/serverlessd/serverlessd/proxy"
	"github.com/serverlessd/serverlessd/scheduler"
	"github.com/serverlessd/serverlessd/server"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/cache"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

const (
	idle     = 2 * time.Second
	interval = 200 * time.Millisecond
)

// env is a daemon in miniature: store, local driver, manager, the real
// proxy on a loopback port, the scheduler and the API.
type env struct {
	st    store.Store
	mgr   *compute.Manager
	met   *metrics.Metrics
	proxy string
	api   *httptest.Server
}

func logger() *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := localtest.Dir(t)
	raw, err := sqlite.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	st := cache.New(raw, time.Hour)
	drv, err := local.New(local.Options{Dir: filepath.Join(dir, "computes"), StopTimeout: 30 * time.Second, Logger: logger()})
	if err != nil {
		t.Fatalf("local driver (is mariadb-server installed?): %v", err)
	}
	met := metrics.New(false)
	mgr := compute.New(compute.Options{Store: st, Driver: drv, Node: "test", Logger: logger(), Metrics: met})
	px, err := proxy.New(proxy.Config{}, proxy.StoreDirectory{Store: st}, mgr, logger())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go px.Serve(ln)
	ctx, cancel := context.WithCancel(context.Background())
	sched := scheduler.New(scheduler.Options{Store: st, Manager: mgr, Interval: interval,
		StorageInterval: 100 * time.Millisecond, Metrics: met, Logger: logger()})
	done := make(chan struct{})
	go func() { sched.Run(ctx); close(done) }()
	api := httptest.NewServer(server.New(server.Options{Store: st, Manager: mgr, Logger: logger(),
		Extra: map[string]http.Handler{"GET /metrics": met.Handler()}}).Handler())
	t.Cleanup(func() {
		cancel()
		<-done
		api.Close()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = px.Shutdown(sctx)
		_ = mgr.SuspendAll(context.Background(), compute.ReasonShutdown)
	})
	return &env{st: st, mgr: mgr, met: met, proxy: ln.Addr().String(), api: api}
}

// project makes a project with an active compute and returns its id, its
// compute id and the root password.
func (e *env) project(t *testing.T, name string, cfg store.ProjectConfig) (string, string, string) {
	t.Helper()
	return e.projectSpec(t, name, cfg, store.ComputeSpec{Resources: store.Resources{Memory: "128Mi"}})
}

// projectSpec is project with a compute of the given spec.
func (e *env) projectSpec(t *testing.T, name string, cfg store.ProjectConfig, spec store.ComputeSpec) (string, string, string) {
	t.Helper()
	ctx := context.Background()
	p := &store.Project{ID: store.NewID("prj"), Name: name, Config: cfg}
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
	return p.ID, c.ID, pw
}

// db opens a client through the proxy, the way users connect.
func (e *env) db(t *testing.T, project, pw string) *sql.DB {
	t.Helper()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = project+"."+compute.OwnerRole, pw, "tcp", e.proxy
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	t.Cleanup(func() { db.Close() })
	return db
}

func (e *env) state(t *testing.T, computeID string) store.ComputeState {
	t.Helper()
	c, err := e.st.GetCompute(context.Background(), computeID)
	if err != nil {
		t.Fatal(err)
	}
	return c.State
}

// waitSuspended waits up to limit for the compute to be suspended and
// returns how long that took.
func (e *env) waitSuspended(t *testing.T, computeID string, limit time.Duration) {
	t.Helper()
	t0 := time.Now()
	for time.Since(t0) < limit {
		if e.state(t, computeID) == store.StateSuspended {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("compute %s is %s after %s, want suspended", computeID, e.state(t, computeID), limit)
}

// slack absorbs a loaded CI machine; the figure that matters is logged.
const slack = time.Second

func TestIdleComputeSuspends(t *testing.T) {
	e := newEnv(t)
	pid, cid, pw := e.project(t, "idle", store.ProjectConfig{IdleTimeout: 2})
	db := e.db(t, "idle", pw)
	if _, err := db.Exec("SELECT 1"); err != nil {
		t.Fatal(err)
	}
	db.Close() // no more traffic from here
	t0 := time.Now()
	e.waitSuspended(t, cid, idle+interval+slack)
	t.Logf("suspended %s after the last traffic (limit idle+interval = %s)", time.Since(t0).Round(time.Millisecond), idle+interval)
	// Check twice: it stays suspended, and the operation says why.
	time.Sleep(2 * interval)
	if s := e.state(t, cid); s != store.StateSuspended {
		t.Fatalf("second check: %s", s)
	}
	ops, _ := e.st.ListOperations(context.Background(), pid, 1)
	if ops[0].Action != store.ActionSuspend || ops[0].Reason != compute.ReasonIdle {
		t.Fatalf("last operation %+v, want an idle suspend", ops[0])
	}
	// The next login wakes it.
	if _, err := e.db(t, "idle", pw).Exec("SELECT 1"); err != nil {
		t.Fatalf("login after idle suspend: %v", err)
	}
	if s := e.state(t, cid); s != store.StateActive {
		t.Fatalf("after login: %s", s)
	}
}

func TestTrickleKeepsComputeUp(t *testing.T) {
	e := newEnv(t)
	_, cid, pw := e.project(t, "trickle", store.ProjectConfig{IdleTimeout: 2})
	db := e.db(t, "trickle", pw)
	for i := 0; i < 20; i++ { // one query every 500 ms for 10 s
		if _, err := db.Exec("SELECT 1"); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		if s := e.state(t, cid); s != store.StateActive {
			t.Fatalf("after %d queries the compute is %s", i+1, s)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func TestOpenTransactionPostponesSuspend(t *testing.T) {
	e := newEnv(t)
	_, cid, pw := e.project(t, "trx", store.ProjectConfig{IdleTimeout: 2})
	db := e.db(t, "trx", pw)
	for _, q := range []string{"CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO app.t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	// Idle in transaction for well past idle_timeout: that is work.
	time.Sleep(idle + 5*interval + slack)
	if s := e.state(t, cid); s != store.StateActive {
		t.Fatalf("an open transaction was cut: compute is %s", s)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit after the postponed suspend: %v", err)
	}
	db.Close()
	e.waitSuspended(t, cid, idle+interval+slack)
	var n int
	if err := e.db(t, "trx", pw).QueryRow("SELECT COUNT(*) FROM app.t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("committed row after resume: n=%d err=%v", n, err)
	}
	if got := scrape(t, e.api.URL)["serverlessd_suspends_postponed_total"]; got < 1 {
		t.Fatalf("postponed suspends metric %v, want at least 1", got)
	}
}

func TestOpenConnectionsKeepComputeUpWhenAsked(t *testing.T) {
	e := newEnv(t)
	no := false
	_, cid, pw := e.project(t, "conns", store.ProjectConfig{IdleTimeout: 2, SuspendWithOpenConnections: &no})
	db := e.db(t, "conns", pw)
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.PingContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(idle + 5*interval + slack)
	if s := e.state(t, cid); s != store.StateActive {
		t.Fatalf("compute with an open connection is %s", s)
	}
	conn.Close()
	db.Close()
	e.waitSuspended(t, cid, idle+interval+slack)
}

// TestUsage: two active stretches of about 3 s give about 6 compute-seconds,
// and the billing report adds projects up.
func TestUsage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pid, cid, _ := e.project(t, "meter", store.ProjectConfig{})
	from := time.Now().Add(-time.Minute)
	time.Sleep(3 * time.Second)
	if _, _, err := e.mgr.Suspend(ctx, cid, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.Wake(ctx, pid); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if _, _, err := e.mgr.Suspend(ctx, cid, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	_, _, _ = e.project(t, "other", store.ProjectConfig{})
	q := fmt.Sprintf("from=%s&to=%s", from.UTC().Format(time.RFC3339), time.Now().Add(time.Minute).UTC().Format(time.RFC3339))

	var pu struct {
		Buckets []struct {
			ComputeSeconds float64 `json:"compute_seconds"`
			StorageBytes   int64   `json:"storage_bytes"`
		} `json:"buckets"`
	}
	getJSON(t, e.api.URL+"/api/v1/projects/meter/usage?granularity=hour&"+q, &pu)
	var secs float64
	var storage int64
	for _, b := range pu.Buckets {
		secs += b.ComputeSeconds
		storage = max(storage, b.StorageBytes)
	}
	if secs < 5.4 || secs > 6.6 {
		t.Fatalf("compute_seconds %.2f, want 6 within 10%%", secs)
	}
	if storage < 1<<20 {
		t.Fatalf("storage_bytes %d: a datadir is several MiB", storage)
	}

	var report struct {
		Projects []struct {
			ProjectName    string  `json:"project_name"`
			ComputeSeconds float64 `json:"compute_seconds"`
		} `json:"projects"`
		Tenants []struct {
			TenantName       string  `json:"tenant_name"`
			ComputeSeconds   float64 `json:"compute_seconds"`
			MemoryGiBSeconds float64 `json:"memory_gib_seconds"`
			StorageGiBHours  float64 `json:"storage_gib_hours"`
		} `json:"tenants"`
		Total struct {
			ComputeSeconds float64 `json:"compute_seconds"`
		} `json:"total"`
	}
	getJSON(t, e.api.URL+"/api/v1/usage?"+q, &report)
	if len(report.Tenants) != 1 || report.Tenants[0].TenantName != "default" ||
		report.Tenants[0].ComputeSeconds != report.Total.ComputeSeconds ||
		report.Tenants[0].MemoryGiBSeconds <= 0 || report.Tenants[0].StorageGiBHours <= 0 {
		t.Fatalf("the report by tenant: %+v", report.Tenants)
	}
	var sum float64
	for _, p := range report.Projects {
		sum += p.ComputeSeconds
	}
	if len(report.Projects) != 2 || sum != report.Total.ComputeSeconds || sum < secs {
		t.Fatalf("report: %+v", report)
	}
	req, _ := http.NewRequest("GET", e.api.URL+"/api/v1/usage?"+q, nil)
	req.Header.Set("Accept", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if lines := strings.Split(strings.TrimSpace(string(body)), "\n"); len(lines) != 4 || !strings.HasPrefix(lines[0], "project_id,") {
		t.Fatalf("CSV report:\n%s", body)
	}
	req, _ = http.NewRequest("GET", e.api.URL+"/api/v1/usage?group=tenant&"+q, nil)
	req.Header.Set("Accept", "text/csv")
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if lines := strings.Split(strings.TrimSpace(string(body)), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "tenant_id,tenant_name,") ||
		!strings.HasPrefix(lines[1], "ten_default,default,") {
		t.Fatalf("CSV report by tenant:\n%s", body)
	}
}

// TestWakeMetric: /metrics parses, and each cold login adds one cold wake.
func TestWakeMetric(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, cid, pw := e.project(t, "metric", store.ProjectConfig{})
	for i := 0; i < 3; i++ {
		before := scrape(t, e.api.URL)[`serverlessd_wake_duration_seconds_count{kind="cold"}`]
		if _, _, err := e.mgr.Suspend(ctx, cid, compute.ReasonAPI); err != nil {
			t.Fatal(err)
		}
		db := e.db(t, "metric", pw)
		if _, err := db.Exec("SELECT 1"); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if after := scrape(t, e.api.URL)[`serverlessd_wake_duration_seconds_count{kind="cold"}`]; after != before+1 {
			t.Fatalf("cold wakes %v -> %v after one cold login", before, after)
		}
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// scrape parses /metrics with the Prometheus text parser and flattens it
// to "name{labels}" -> value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[strings.Replace(key, name, name+"_count", 1)] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestPasswordsChangedInSQL: a role that changes its own password in SQL
// logs in through the proxy with the new one once it is copied (while
// active, or by the suspend); CREATE USER is refused (users are made
// through the API).
func TestPasswordsChangedInSQL(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, cid, pw := e.project(t, "sqlusers", store.ProjectConfig{})
	root := e.db(t, "sqlusers", pw)
	root.SetMaxOpenConns(1)
	login := func(user, pass string) error {
		cfg := mysql.NewConfig()
		cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = "sqlusers."+user, pass, "tcp", e.proxy
		c, _ := mysql.NewConnector(cfg)
		db := sql.OpenDB(c)
		defer db.Close()
		return db.Ping()
	}
	var me *mysql.MySQLError
	if _, err := root.Exec("CREATE USER 'bob'@'%' IDENTIFIED BY 'bob-secret'"); !errors.As(err, &me) || me.Number != 1227 {
		t.Fatalf("CREATE USER by a tenant: %v, want 1227", err)
	}
	if _, err := root.Exec("SET PASSWORD = PASSWORD('new-root-secret')"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * interval)
	for login("root", "new-root-secret") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the new password does not log in")
		}
		time.Sleep(interval / 2)
	}
	if err := login("root", pw); err == nil {
		t.Fatal("the old password still logs in")
	}
	// Changed right before a suspend: copied by the suspend itself.
	if _, err := root.Exec("SET PASSWORD = PASSWORD('newer-root-secret')"); err != nil {
		t.Fatal(err)
	}
	root.Close()
	if _, _, err := e.mgr.Suspend(ctx, cid, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	if err := login("root", "newer-root-secret"); err != nil {
		t.Fatalf("a password changed before a suspend does not log in after it: %v", err)
	}
}

// TestLoginsRacingIdleSuspends: logins that land right around the idle
// timeout, when the scheduler is deciding to suspend, never fail: they
// either keep the compute up or wait for the suspend and wake it.
func TestLoginsRacingIdleSuspends(t *testing.T) {
	e := newEnv(t)
	pid, _, pw := e.project(t, "racy", store.ProjectConfig{IdleTimeout: 1})
	var failures int
	for i := range 12 {
		// Around the 1 s idle timeout, give or take a scheduler interval.
		time.Sleep(time.Second - interval + time.Duration(i%5)*interval/2)
		db := e.db(t, "racy", pw)
		var one int
		if err := db.QueryRow("SELECT 1").Scan(&one); err != nil {
			failures++
			t.Logf("login %d: %v", i, err)
		}
		db.Close()
	}
	if failures > 0 {
		t.Fatalf("%d of 12 logins racing idle suspends failed", failures)
	}
	ops, err := e.st.ListOperations(context.Background(), pid, 100)
	if err != nil {
		t.Fatal(err)
	}
	suspends := 0
	for _, op := range ops {
		if op.Action == store.ActionSuspend && op.Reason == compute.ReasonIdle {
			suspends++
		}
	}
	t.Logf("%d idle suspends raced the logins", suspends)
	if suspends == 0 {
		t.Fatal("no idle suspend happened: the test did not race anything")
	}
}

// The daemon's account cannot be touched by a tenant (its roles hold no
// CREATE USER), and a compute whose account is broken all the same (here
// by the daemon's own hand) still suspends at its idle timeout, on its
// traffic alone, and its next start gives the daemon its account back.
func TestLockedOutAdminStillSuspends(t *testing.T) {
	e := newEnv(t)
	_, cid, pw := e.project(t, "lock", store.ProjectConfig{IdleTimeout: 1})
	db := e.db(t, "lock", pw)
	for _, attack := range []string{
		"ALTER USER serverlessd_admin@localhost IDENTIFIED BY 'tenant-knows-this'",
		"DROP USER serverlessd_admin@localhost",
		"RENAME USER serverlessd_admin@localhost TO mine@'%'",
		"SET PASSWORD FOR serverlessd_admin@localhost = PASSWORD('x')",
	} {
		var me *mysql.MySQLError
		if _, err := db.Exec(attack); !errors.As(err, &me) || (me.Number != 1227 && me.Number != 1044) {
			t.Fatalf("%s: %v, want refused", attack, err)
		}
	}
	lockOut(t, e, cid)
	if _, err := e.mgr.Busy(context.Background(), cid); err == nil {
		t.Fatal("the idle check still logs in")
	}
	db.Close()
	e.waitSuspended(t, cid, 1*time.Second+interval+3*slack)
	if _, err := e.db(t, "lock", pw).Exec("SELECT 1"); err != nil {
		t.Fatalf("login after the suspend: %v", err)
	}
	if _, err := e.mgr.Busy(context.Background(), cid); err != nil {
		t.Fatalf("the daemon's account is still locked out after a restart: %v", err)
	}
}

// lockOut changes the daemon's password on the running compute.
func lockOut(t *testing.T, e *env, computeID string) {
	t.Helper()
	ctx := context.Background()
	c, err := e.st.GetCompute(ctx, computeID)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := e.mgr.Driver().Admin(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = cred.User, cred.Password, "unix", strings.TrimPrefix(c.Address, "unix:")
	conn, _ := mysql.NewConnector(cfg)
	admin := sql.OpenDB(conn)
	defer admin.Close()
	if _, err := admin.Exec("ALTER USER serverlessd_admin@localhost IDENTIFIED BY 'lost'"); err != nil {
		t.Fatal(err)
	}
}

// TestStorageLimitThroughTheProxy: a tenant writing past its compute's
// 100Mi storage limit through the proxy gets a clear error, keeps its
// committed rows, and its own DROP TABLE makes the compute writable again.
func TestStorageLimitThroughTheProxy(t *testing.T) {
	e := newEnv(t)
	_, cid, pw := e.projectSpec(t, "full", store.ProjectConfig{},
		store.ComputeSpec{Storage: "100Mi", Resources: store.Resources{Memory: "128Mi"}})
	db := e.db(t, "full", pw)
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		"CREATE DATABASE app", "USE app",
		"CREATE TABLE keep (id INT PRIMARY KEY)", "INSERT INTO keep VALUES (1), (2), (3)",
		"CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, v LONGBLOB)",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var writeErr error
	for i := 0; i < 300 && writeErr == nil; i++ {
		_, writeErr = db.Exec("INSERT INTO big (v) VALUES (REPEAT('x', 1048576))")
		time.Sleep(20 * time.Millisecond)
	}
	var me *mysql.MySQLError
	if !errors.As(writeErr, &me) || me.Number != 1290 {
		t.Fatalf("writing past 100Mi: %v, want 1290 (read-only)", writeErr)
	}
	t.Logf("writes stopped with: %v", writeErr)
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM keep").Scan(&n); err != nil || n != 3 {
		t.Fatalf("committed rows after the limit: %d, %v", n, err)
	}
	if _, err := db.Exec("DROP TABLE big"); err != nil {
		t.Fatalf("DROP TABLE while read-only: %v", err)
	}
	for t0 := time.Now(); e.mgr.Activity(cid).StorageFull(); time.Sleep(20 * time.Millisecond) {
		if time.Since(t0) > 5*time.Second {
			t.Fatal("the compute is still read-only 5 s after the DROP")
		}
	}
	time.Sleep(time.Second) // past the recheck of the lift: it must stay writable
	if _, err := db.Exec("INSERT INTO keep VALUES (4)"); err != nil {
		t.Fatalf("write after the DROP: %v", err)
	}
}
