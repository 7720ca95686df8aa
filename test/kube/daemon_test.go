package kube

import (
	"bytes"
	"context"
	"database/sql"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// daemon is one `serverlessd serve` with compute.driver kubernetes, the
// kubeconfig of its ServiceAccount and a SQLite store in dataDir.
type daemon struct {
	kubetest.API // its API at api
	t            *testing.T
	dataDir      string
	api          string
	proxy        string
	cmd          *exec.Cmd
	exited       chan struct{}
	log          *syncBuffer
}

// syncBuffer is a bytes.Buffer that the daemon's output and the test may
// use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
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

func startDaemon(t *testing.T, dataDir, api, proxy string) *daemon {
	return startDaemonWith(t, dataDir, api, proxy, "store:\n  driver: sqlite\nscheduler:\n  interval: 1s\n")
}

// startDaemonWith starts a daemon with more config: its store at least.
func startDaemonWith(t *testing.T, dataDir, api, proxy, more string) *daemon {
	return startDaemonConfig(t, kubetest.DaemonConfig{DataDir: dataDir, API: api, Proxy: proxy,
		Kubeconfig: kubeconfig, Namespace: namespace, Image: "mariadb:10.11.10", CPU: "250m", More: more})
}

// startDaemonConfig starts a daemon with the config cfg.
func startDaemonConfig(t *testing.T, cfg kubetest.DaemonConfig) *daemon {
	t.Helper()
	dataDir, api, proxy := cfg.DataDir, cfg.API, cfg.Proxy
	d := &daemon{t: t, dataDir: dataDir, api: api, proxy: proxy, log: &syncBuffer{}}
	d.API = kubetest.API{T: t, Base: "http://" + api, Logs: func() string { return kubetest.Tail(d.log.String(), 6000) }}
	path, err := cfg.Write()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(daemonBinary(t), "--config", path, "serve")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(d.stop)
	if err := kubetest.WaitDaemonReady(api, d.exited); err != nil {
		t.Fatalf("%v; its log:\n%s", err, d.log)
	}
	return d
}

// stop sends SIGTERM and waits: computes on Kubernetes outlive the daemon.
func (d *daemon) stop() {
	if kubetest.Closed(d.exited) {
		return
	}
	if !kubetest.Terminate(d.cmd.Process, d.exited, 60*time.Second) {
		d.t.Errorf("serverlessd did not exit on SIGTERM; its log:\n%s", d.log)
	}
}

// kill stops the daemon with SIGKILL, as a crash or an OOM kill would.
func (d *daemon) kill() {
	_ = d.cmd.Process.Kill()
	<-d.exited
}

type computeOut struct {
	Compute struct {
		ID      string `json:"id"`
		State   string `json:"state"`
		Address string `json:"address"`
	} `json:"compute"`
}

func (d *daemon) compute(project string) computeOut {
	var c computeOut
	d.Call("GET", "/api/v1/projects/"+project+"/compute", "", 200, &c)
	return c
}

// readyz returns the status of the daemon's /readyz.
func (d *daemon) readyz() int {
	resp, err := http.Get("http://" + d.api + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// dsn is the Go driver's DSN for user@project through the proxy.
func (d *daemon) dsn(project, user, password string) string {
	return kubetest.DSN(d.proxy, project, user, password)
}

// open returns a MySQL client of the proxy for user@project.
func (d *daemon) open(project, user, password string) *sql.DB {
	d.t.Helper()
	db, err := sql.Open("mysql", d.dsn(project, user, password))
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { db.Close() })
	return db
}

// TestDaemonFullPath drives the real daemon binary on the harness: create a
// project and its compute through the API, write rows through the proxy,
// suspend (Pod gone, PVC kept), wake by logging in (a new Pod, the rows
// still there), restarts that adopt a live Pod and reconcile one deleted
// behind the daemon's back, and destroy (nothing left).
func TestDaemonFullPath(t *testing.T) {
	ctx := ctxFor(t, 8*time.Minute)
	dataDir := t.TempDir()
	api, proxy := freeAddr(t), freeAddr(t)
	d := startDaemon(t, dataDir, api, proxy)

	pw := d.CreateProject(`{"name":"shop"}`)
	var c computeOut
	d.Call("POST", "/api/v1/projects/shop/compute", `{}`, 201, &c)
	cid := c.Compute.ID
	name := "serverlessd-" + strings.ReplaceAll(cid, "_", "-")
	if c.Compute.State != "active" {
		t.Fatalf("new compute is %s, want active", c.Compute.State)
	}
	db := d.open("shop", "root", pw)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.orders (id INT PRIMARY KEY, item TEXT)",
		"INSERT INTO app.orders VALUES (1, 'tea'), (2, 'cake')")
	checkBound(t, ctx, d, name, "root", pw)
	// A password changed in SQL is bound as soon as the daemon copies it.
	kubetest.MustExec(t, db, "SET PASSWORD = PASSWORD('changed-in-sql-1')")
	db.Close()
	pw = "changed-in-sql-1"
	waitLogin(t, d, "shop", "root", pw)
	checkBound(t, ctx, d, name, "root", pw)

	uid := podUID(t, ctx, name)
	d.Call("POST", "/api/v1/projects/shop/compute/"+cid+"/suspend", "", 200, nil)
	checkSuspended(t, ctx, name)

	// A login wakes it on a new Pod, and the rows are there.
	db = d.open("shop", "root", pw)
	if n := count(t, db, "SELECT COUNT(*) FROM app.orders"); n != 2 {
		t.Errorf("%d rows after suspend and wake, want 2", n)
	}
	db.Close()
	if podUID(t, ctx, name) == uid {
		t.Error("the wake reused the old pod")
	}
	measureResumes(t, d, cid, name, pw, 5)

	d = checkRestarts(t, ctx, d, dataDir, cid, name, pw)

	d.Call("DELETE", "/api/v1/projects/shop/compute/"+cid, "", 200, nil)
	waitNothingLeft(t, ctx, name)
	checkEvents(t, ctx, name, "Provisioned", "Resumed", "Suspended")
}

// checkBound checks that a role's password opens the compute through the
// proxy only: straight to the Pod's address, MariaDB refuses it.
func checkBound(t *testing.T, ctx context.Context, d *daemon, name, role, pw string) {
	t.Helper()
	pod, err := kube.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	direct, err := sql.Open("mysql", role+":"+pw+"@tcp("+pod.Status.PodIP+":3306)/")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if err := direct.PingContext(ctx); err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Errorf("%s logged in straight to the compute's pod: %v; want access denied", role, err)
	}
	db := d.open("shop", role, pw)
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		t.Errorf("%s through the proxy: %v", role, err)
	}
}

// waitLogin waits until the daemon lets role in with pw: its scheduler
// copies a password changed in SQL into the store each interval after
// client traffic.
func waitLogin(t *testing.T, d *daemon, project, role, pw string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		db, err := sql.Open("mysql", d.dsn(project, role, pw))
		if err != nil {
			t.Fatal(err)
		}
		err = db.Ping()
		db.Close()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never logged in with its new password: %v", role, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkSuspended checks that the Pod is gone and the PVC and Secret stay.
func checkSuspended(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	cs := kube.client.CoreV1()
	if _, err := cs.Pods(namespace).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("pod after suspend: %v, want not found", err)
	}
	if _, err := cs.PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("pvc after suspend: %v", err)
	}
	if _, err := cs.Secrets(namespace).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("secret after suspend: %v", err)
	}
}

// checkRestarts restarts the daemon twice: first with the Pod alive (it is
// adopted: same Pod, no start), then after deleting the Pod while the
// daemon was down (reconciled: the compute is no longer active, and the
// next login starts a new Pod with the data). It returns the last daemon.
func checkRestarts(t *testing.T, ctx context.Context, d *daemon, dataDir, cid, name, pw string) *daemon {
	t.Helper()
	uid := podUID(t, ctx, name)
	d.stop()
	if podUID(t, ctx, name) != uid {
		t.Fatal("stopping the daemon touched the compute's pod")
	}
	// The data dir of a daemon Pod is an emptyDir: its certificate comes
	// back from the Secret.
	tlsDir := filepath.Join(dataDir, "tls")
	before, err := os.ReadFile(filepath.Join(tlsDir, "proxy-tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(tlsDir); err != nil {
		t.Fatal(err)
	}
	d = startDaemon(t, dataDir, d.api, d.proxy)
	if after, err := os.ReadFile(filepath.Join(tlsDir, "proxy-tls.crt")); err != nil || !bytes.Equal(after, before) {
		t.Errorf("the proxy certificate changed across a restart with an empty data dir (%v)", err)
	}
	if c := d.compute("shop"); c.Compute.State != "active" || podUID(t, ctx, name) != uid {
		t.Fatalf("after a restart: %s, pod changed: %v; want the live pod adopted", c.Compute.State, podUID(t, ctx, name) != uid)
	}
	db := d.open("shop", "root", pw)
	kubetest.MustExec(t, db, "INSERT INTO app.orders VALUES (3, 'scone')")
	db.Close()

	d.stop()
	if err := kube.client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	checkGone(t, ctx, name)
	// The daemon serves before it has settled the computes, so the store
	// may still say active at the gone Pod's address: the login that meets
	// it must still succeed, on a new Pod.
	d = startDaemon(t, dataDir, d.api, d.proxy)
	if c := d.compute("shop"); !slices.Contains([]string{"failed", "suspended", "active"}, c.Compute.State) {
		t.Fatalf("after a restart with the pod deleted: state %s, want failed, suspended or (not yet settled) active", c.Compute.State)
	}
	db = d.open("shop", "root", pw)
	if n := count(t, db, "SELECT COUNT(*) FROM app.orders"); n != 3 {
		t.Errorf("%d rows after the reconciled restart, want 3", n)
	}
	db.Close()
	if c := d.compute("shop"); c.Compute.State != "active" {
		t.Errorf("after the wake: state %s, want active", c.Compute.State)
	}
	return d
}

func checkGone(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := kube.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s still there: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// measureResumes suspends and wakes the compute n times and reports, for
// each, the time from the login that wakes it to the first SELECT 1, split
// into the database's start (mariadbd exec to its first greeting, measured
// by the node) and the rest: API server round trips and watch deliveries,
// the proxy's login and the role sync.
func measureResumes(t *testing.T, d *daemon, cid, name, pw string, n int) {
	t.Helper()
	var totals, dbs []time.Duration
	for i := range n {
		d.Call("POST", "/api/v1/projects/shop/compute/"+cid+"/suspend", "", 200, nil)
		db := d.open("shop", "root", pw)
		t0 := time.Now()
		var one int
		if err := db.QueryRow("SELECT 1").Scan(&one); err != nil {
			t.Fatalf("resume %d: %v", i, err)
		}
		total := time.Since(t0)
		db.Close()
		tm, ok := kubeNode.lastTiming(name)
		if !ok || tm.Seen.Before(t0) {
			t.Fatalf("resume %d: the node did not start a new pod", i)
		}
		dbStart := tm.DBUp.Sub(tm.DBStart)
		totals, dbs = append(totals, total), append(dbs, dbStart)
		t.Logf("resume %d: wake to SELECT 1 %s = database start %s + API server and daemon %s "+
			"(login to pod seen by node %s, pod seen to mariadbd exec %s, mariadbd up to Ready written %s, Ready to SELECT 1 %s)",
			i, ms(total), ms(dbStart), ms(total-dbStart),
			ms(tm.Seen.Sub(t0)), ms(tm.DBStart.Sub(tm.Seen)), ms(tm.ReadySet.Sub(tm.DBUp)), ms(t0.Add(total).Sub(tm.ReadySet)))
	}
	slices.Sort(totals)
	slices.Sort(dbs)
	t.Logf("resume over %d runs: median wake to SELECT 1 %s, median database start %s", n, ms(totals[n/2]), ms(dbs[n/2]))
}

func ms(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := kubetest.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", port)
}
