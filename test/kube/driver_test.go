package kube

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	kubedriver "github.com/serverlessd/serverlessd/compute/kubernetes"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

func testLogger() *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newDriver returns the kubernetes driver authenticated as the daemon's
// ServiceAccount: every call it makes must be allowed by the Role.
func newDriver(t *testing.T) (*kubedriver.Driver, kubernetes.Interface) {
	t.Helper()
	rc := rest.CopyConfig(driverRC)
	rc.QPS, rc.Burst = 50, 100 // as cli/kube.go sets them
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	d, err := kubedriver.New(kubedriver.Options{
		Client: cs, Namespace: namespace, Image: "mariadb:10.11.10", StorageSize: "1Gi",
		CPU: "250m", Memory: "256Mi", StopTimeout: 30 * time.Second, Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, cs
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestDriverLifecycle runs the driver alone against the API server, as the
// daemon's ServiceAccount: provision, start, data written through the admin
// account, suspend (Pod gone, PVC kept), resume (same data), adoption by
// Running, crash report, destroy (nothing left).
func TestDriverLifecycle(t *testing.T) {
	ctx := ctxFor(t, 3*time.Minute)
	if err := forbidden(ctx, mustClient(t)); err != nil {
		t.Fatal(err)
	}
	d, _ := newDriver(t)
	exits := make(chan string, 4)
	d.SetExitHandler(func(id string, err error) { exits <- id })
	c := &store.Compute{ID: store.NewID("cmp"), ProjectID: store.NewID("prj"), Driver: "kubernetes"}
	name := "serverlessd-" + strings.ReplaceAll(c.ID, "_", "-")
	if err := d.Provision(ctx, c); err != nil {
		t.Fatal(err)
	}
	addr := start(t, ctx, d, c)
	checkOwnersAndLayout(t, ctx, name)
	db := adminDB(t, ctx, d, c, addr)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)", "INSERT INTO app.t VALUES (1), (2), (3)")
	db.Close()

	uid := podUID(t, ctx, name)
	if err := d.Stop(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("pod after Stop: %v, want not found", err)
	}
	if _, err := kube.client.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("pvc after Stop: %v", err)
	}
	addr = start(t, ctx, d, c)
	if podUID(t, ctx, name) == uid {
		t.Error("resume reused the old pod")
	}
	db = adminDB(t, ctx, d, c, addr)
	if n := count(t, db, "SELECT COUNT(*) FROM app.t"); n != 3 {
		t.Errorf("%d rows after a suspend and resume, want 3", n)
	}
	db.Close()
	if n, err := d.StorageBytes(ctx, c); err != nil || n != 1<<30 {
		t.Errorf("StorageBytes = %d, %v; want 1Gi", n, err)
	}

	checkAdoptionAndCrash(t, ctx, c, name, addr)
	select {
	case id := <-exits: // it ran the compute too
		if id != c.ID {
			t.Errorf("first driver reported %s lost, want %s", id, c.ID)
		}
	case <-time.After(10 * time.Second):
		t.Error("the first driver did not report its lost pod")
	}
	if err := d.Destroy(ctx, c); err != nil {
		t.Fatal(err)
	}
	waitNothingLeft(t, ctx, name)
	checkEvents(t, ctx, name, "Provisioned", "Resumed", "Suspended")
}

// checkOwnersAndLayout checks that the compute's volume claim owns its Pod
// (as controller: drain evicts it) and its Secret, and that the datadir is
// a folder of the volume, not its root.
func checkOwnersAndLayout(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	cs := kube.client.CoreV1()
	pvc, err := cs.PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := cs.Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if o := metav1.GetControllerOf(pod); o == nil || o.UID != pvc.UID {
		t.Errorf("pod controller = %+v, want the volume claim %s", o, pvc.UID)
	}
	sec, err := cs.Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != pvc.UID {
		t.Errorf("secret owners = %+v, want the volume claim", sec.OwnerReferences)
	}
	if _, err := os.Stat(filepath.Join(kubeNode.volume(pvc), "data", "mysql")); err != nil {
		t.Errorf("the datadir is not the volume's data folder: %v", err)
	}
}

// checkAdoptionAndCrash starts a second driver (a restarted daemon): Running
// adopts the live Pod, and deleting that Pod behind its back is reported.
func checkAdoptionAndCrash(t *testing.T, ctx context.Context, c *store.Compute, name, addr string) {
	t.Helper()
	d2, _ := newDriver(t)
	exits := make(chan string, 4)
	d2.SetExitHandler(func(id string, err error) { exits <- id + ": " + err.Error() })
	running, err := d2.Running(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(running) != 1 || running[0].ComputeID != c.ID || running[0].Address != addr {
		t.Fatalf("Running = %+v, want %s at %s", running, c.ID, addr)
	}
	if err := kube.client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-exits:
		if !strings.HasPrefix(got, c.ID) {
			t.Errorf("exit report %q, want %s", got, c.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the deleted pod was not reported to the exit handler")
	}
}

func start(t *testing.T, ctx context.Context, d *kubedriver.Driver, c *store.Compute) string {
	t.Helper()
	t0 := time.Now()
	addr, err := d.Start(ctx, c)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start took %s, address %s", time.Since(t0).Round(time.Millisecond), addr)
	return addr
}

// adminDB logs in with the daemon's admin account over TCP, as the
// manager's role sync does.
func adminDB(t *testing.T, ctx context.Context, d *kubedriver.Driver, c *store.Compute, addr string) *sql.DB {
	t.Helper()
	cred, err := d.Admin(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = cred.User, cred.Password, "tcp", addr
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	var grants string
	if err := db.QueryRowContext(ctx, "SHOW GRANTS").Scan(&grants); err != nil {
		t.Fatalf("admin login at %s: %v", addr, err)
	}
	if !strings.Contains(grants, "ALL PRIVILEGES ON *.*") || !strings.Contains(grants, "WITH GRANT OPTION") {
		t.Errorf("admin grants %q: the init script was not applied", grants)
	}
	return db
}

func count(t *testing.T, db *sql.DB, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func mustClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(driverRC)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func podUID(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	p, err := kube.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(p.UID)
}

// waitNothingLeft waits until the compute's Pod, PVC and Secret are gone
// (the PVC's protection finalizer is lifted asynchronously, as in a cluster).
func waitNothingLeft(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := leftovers(ctx, name)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func leftovers(ctx context.Context, name string) []string {
	var left []string
	cs := kube.client.CoreV1()
	if _, err := cs.Pods(namespace).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		left = append(left, fmt.Sprintf("pod (%v)", err))
	}
	if _, err := cs.PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		left = append(left, fmt.Sprintf("pvc (%v)", err))
	}
	if _, err := cs.Secrets(namespace).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		left = append(left, fmt.Sprintf("secret (%v)", err))
	}
	return left
}

// checkEvents checks that the driver recorded these Event reasons on the
// compute's PVC (events outlive it).
func checkEvents(t *testing.T, ctx context.Context, name string, reasons ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := kube.client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == name && e.InvolvedObject.Kind == "PersistentVolumeClaim" && e.Source.Component == "serverlessd" {
				seen[e.Reason] = true
			}
		}
		var missing []string
		for _, r := range reasons {
			if !seen[r] {
				missing = append(missing, r)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events %v missing for %s (seen %v)", missing, name, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
