package kubernetes

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

// reconcileEnv is a Manager with a SQLite store over the driver.
type reconcileEnv struct {
	t   *testing.T
	d   *Driver
	cs  *fake.Clientset
	st  store.Store
	mgr *compute.Manager
}

func newReconcileEnv(t *testing.T) *reconcileEnv {
	d, cs, _ := newTestDriver(t)
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mgr := compute.New(compute.Options{Store: st, Driver: d, Node: "n1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return &reconcileEnv{t: t, d: d, cs: cs, st: st, mgr: mgr}
}

// compute records a provisioned compute in state, with a Pod when withPod.
func (e *reconcileEnv) compute(ctx context.Context, state store.ComputeState, withPod bool) *store.Compute {
	e.t.Helper()
	p := &store.Project{ID: store.NewID("prj"), CreatedAt: store.Now(), UpdatedAt: store.Now()}
	p.Name = "p" + p.ID[4:12]
	if err := e.st.CreateProject(ctx, p); err != nil {
		e.t.Fatal(err)
	}
	c := &store.Compute{ID: store.NewID("cmp"), ProjectID: p.ID, State: state, Driver: "kubernetes",
		CreatedAt: store.Now(), UpdatedAt: store.Now()}
	if err := e.st.CreateCompute(ctx, c); err != nil {
		e.t.Fatal(err)
	}
	if err := e.d.Provision(ctx, c); err != nil {
		e.t.Fatal(err)
	}
	if withPod {
		e.pod(ctx, c)
	}
	return c
}

func (e *reconcileEnv) pod(ctx context.Context, c *store.Compute) {
	name, _ := objectName(c.ID)
	pvc, err := e.cs.CoreV1().PersistentVolumeClaims(testNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		pvc = &corev1.PersistentVolumeClaim{} // a stray Pod, with no claim
	}
	pod, err := e.d.podFor(c, name, pvc)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.cs.CoreV1().Pods(testNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *reconcileEnv) hasPod(ctx context.Context, c *store.Compute) bool {
	name, _ := objectName(c.ID)
	_, err := e.cs.CoreV1().Pods(testNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Fatal(err)
	}
	return err == nil
}

func (e *reconcileEnv) state(ctx context.Context, c *store.Compute) *store.Compute {
	got, err := e.st.GetCompute(ctx, c.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return got
}

// TestReconcile squares the store with the Pods at daemon start-up, as the
// issue asks: a Pod of a suspended compute is deleted; an active compute
// without a Pod is marked failed; a live Pod of an active compute is adopted
// (and watched for crashes); a Pod the store does not know is stopped.
func TestReconcile(t *testing.T) {
	e := newReconcileEnv(t)
	ctx := ctxT(t)
	ip := mysqlStub(t, e.cs)
	suspendedWithPod := e.compute(ctx, store.StateSuspended, true)
	activeNoPod := e.compute(ctx, store.StateActive, false)
	activeWithPod := e.compute(ctx, store.StateActive, true)
	resumingWithPod := e.compute(ctx, store.StateResuming, true)
	suspended := e.compute(ctx, store.StateSuspended, false)
	stray := &store.Compute{ID: store.NewID("cmp"), ProjectID: "prj_gone"}
	e.pod(ctx, stray)
	startKubelet(t, e.cs, ip)

	if err := e.mgr.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(ip, "3306")
	for _, tc := range []struct {
		name  string
		c     *store.Compute
		state store.ComputeState
		pod   bool
		addr  string
	}{
		{"suspended with a pod", suspendedWithPod, store.StateSuspended, false, ""},
		{"active without a pod", activeNoPod, store.StateFailed, false, ""},
		{"active with a pod", activeWithPod, store.StateActive, true, addr},
		{"resuming with a pod", resumingWithPod, store.StateActive, true, addr},
		{"suspended", suspended, store.StateSuspended, false, ""},
	} {
		got := e.state(ctx, tc.c)
		if got.State != tc.state || got.Address != tc.addr {
			t.Errorf("%s: state %s at %q, want %s at %q", tc.name, got.State, got.Address, tc.state, tc.addr)
		}
		if has := e.hasPod(ctx, tc.c); has != tc.pod {
			t.Errorf("%s: has pod = %v, want %v", tc.name, has, tc.pod)
		}
	}
	if e.hasPod(ctx, stray) {
		t.Error("the pod of a compute the store does not know still runs")
	}
	if secret, _ := e.cs.CoreV1().Secrets(testNS).List(ctx, metav1.ListOptions{}); len(secret.Items) != 5 {
		t.Errorf("%d secrets, want the 5 computes' (reconcile never deletes storage)", len(secret.Items))
	}

	// An adopted Pod is watched: losing it marks the compute failed.
	name, _ := objectName(activeWithPod.ID)
	if err := e.cs.CoreV1().Pods(testNS).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.state(ctx, activeWithPod).State != store.StateFailed {
		if time.Now().After(deadline) {
			t.Fatal("the adopted compute whose pod was deleted is not marked failed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
