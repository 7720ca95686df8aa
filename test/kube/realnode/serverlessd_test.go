//go:build linux && realnode

package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// TestRealNodeDaemon runs `serverlessd serve` against the real node: a
// project's compute is created, suspended and woken by logins
// resumeCycles times, its mariadbd killed once (kubelet restarts it in
// place), and destroyed; it ends with the figures in one block.
func TestRealNodeDaemon(t *testing.T) {
	e := startEnv(t)
	ctx := t.Context()
	cs := e.cluster.client
	d := e.startDaemon(t, e.daemonKubeconfig(t))
	pods := watchPods(ctx, cs, daemonNS)
	var figures []string
	fig := func(format string, args ...any) { figures = append(figures, fmt.Sprintf(format, args...)) }

	pw := d.CreateProject(`{"name":"` + projectName + `"}`)
	var c struct {
		Compute struct{ ID, State string } `json:"compute"`
	}
	t0 := time.Now()
	d.Call("POST", "/api/v1/projects/"+projectName+"/compute", `{}`, 201, &c)
	createTook := time.Since(t0)
	cid, name := c.Compute.ID, "serverlessd-"+strings.ReplaceAll(c.Compute.ID, "_", "-")
	if c.Compute.State != "active" {
		t.Fatalf("new compute is %s, want active", c.Compute.State)
	}
	first := d.lastStarted()
	fig("create compute (POST until 201: claim provisioned and bound, datadir initialized): %s "+
		"(driver's Start: Pod create call %s, container running at %s, admin login at %s)",
		ms(createTook), ms(first.create), ms(first.running), ms(first.duration))
	pvc, err := cs.CoreV1().PersistentVolumeClaims(daemonNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != defaultClass {
		t.Fatalf("the compute's claim: %+v; want Bound, of the default class %s", pvc.Status, defaultClass)
	}
	volume := pvc.Spec.VolumeName

	db := d.open(projectName, "root", pw)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v TEXT)",
		"INSERT INTO app.t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
	db.Close()

	// Each cycle: suspend (the Pod goes, the claim stays), then a new
	// connection wakes the compute; its first query's answer ends the
	// time. A row is added each time, to check writes survive suspends.
	var totals []time.Duration
	var steps [][]time.Duration // per cycle: create, running, login (daemon); scheduled, running, ready (watch)
	for i := range resumeCycles {
		d.Call("POST", "/api/v1/projects/"+projectName+"/compute/"+cid+"/suspend", "", 200, nil)
		e.checkSuspended(t, name)
		db := d.open(projectName, "root", pw)
		t0 := time.Now()
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM app.t").Scan(&n); err != nil {
			t.Fatalf("resume %d: %v; daemon log:\n%s", i, err, d.tail())
		}
		total := time.Since(t0)
		if want := rowsAtCreation + i; n != want {
			t.Fatalf("resume %d: %d rows, want %d", i, n, want)
		}
		kubetest.MustExec(t, db, fmt.Sprintf("INSERT INTO app.t VALUES (%d, 'r')", 100+i))
		db.Close()
		st := d.lastStarted()
		pod, err := cs.CoreV1().Pods(daemonNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Ready comes from the kubelet's probe, up to a second after the
		// login may have answered: wait for it, outside the measure.
		var pt podTimes
		_ = kubetest.WaitFor(5*time.Second, 20*time.Millisecond, "Ready seen", func() (bool, error) {
			pt = pods.times(pod.UID)
			return !pt.ready.IsZero(), nil
		})
		steps = append(steps, []time.Duration{st.create, st.running, st.duration - st.running,
			pt.scheduled.Sub(t0), pt.running.Sub(t0), pt.ready.Sub(t0), total - st.duration})
		totals = append(totals, total)
		t.Logf("resume %d: login to answer %s; driver: pod created %s, running %s, login %s; watch: scheduled +%s, running +%s, Ready +%s",
			i, ms(total), ms(st.create), ms(st.running), ms(st.duration-st.running),
			ms(pt.scheduled.Sub(t0)), ms(pt.running.Sub(t0)), ms(pt.ready.Sub(t0)))
	}
	slices.Sort(totals)
	fig("resume (suspend, then a new login + SELECT COUNT(*), login start to answer) over %d cycles: p50 %s, p99 (= max) %s, min %s",
		resumeCycles, ms(totals[len(totals)/2]), ms(totals[len(totals)-1]), ms(totals[0]))
	labels := []string{"driver: Pod create call", "driver: create to container running (watch)", "driver: running to admin login",
		"test's watch: login start to Pod scheduled", "test's watch: login start to container running",
		"test's watch: login start to Ready (1 s probe)", "proxy and daemon outside the driver's start"}
	for j, l := range labels {
		col := make([]time.Duration, len(steps))
		for i := range steps {
			col[i] = steps[i][j]
		}
		slices.Sort(col)
		fig("  %s: p50 %s, max %s", l, ms(col[len(col)/2]), ms(col[len(col)-1]))
	}

	fig("%s", e.crashInPlace(t, d, name, pw, rowsAtCreation+resumeCycles))

	t0 = time.Now()
	d.Call("DELETE", "/api/v1/projects/"+projectName+"/compute/"+cid, "", 200, nil)
	apiTook := time.Since(t0)
	e.waitDestroyed(t, name, volume)
	fig("destroy: DELETE answered in %s; Pod, PVC, Secret, PV and folder gone in %s", ms(apiTook), ms(time.Since(t0)))

	t.Logf("REALNODE FIGURES (%s, %d cores, containerd+runc, cgroup v1, hostPath volumes):\n%s",
		time.Now().Format("2006-01-02"), runtime.NumCPU(), strings.Join(figures, "\n"))
}

// crashInPlace SIGKILLs the compute's mariadbd, then logs in through the
// proxy at once: the login must wait for kubelet's restart of the
// container in the same Pod, at the same IP, and find the rows.
func (e *env) crashInPlace(t *testing.T, d *daemon, name, pw string, rows int) string {
	ctx := t.Context()
	cs := e.cluster.client
	before, err := cs.CoreV1().Pods(daemonNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	procs := podProcesses("mariadbd")
	if len(procs) != 1 || procs[0].uid != mysqlUID {
		t.Fatalf("mariadbd processes %+v, want one of uid %d", procs, mysqlUID)
	}
	waits := d.logCount("waiting for mariadbd to answer again in its pod")
	t0 := time.Now()
	if err := syscall.Kill(procs[0].pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	db := d.open(projectName, "root", pw)
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM app.t").Scan(&n); err != nil {
		t.Fatalf("login after the kill: %v; daemon log:\n%s", err, d.tail())
	}
	took := time.Since(t0)
	if n != rows {
		t.Fatalf("%d rows after the crash, want %d", n, rows)
	}
	after, err := cs.CoreV1().Pods(daemonNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.UID != before.UID || after.Status.PodIP != before.Status.PodIP {
		t.Fatalf("the pod changed across the crash: uid %s -> %s, ip %s -> %s", before.UID, after.UID, before.Status.PodIP, after.Status.PodIP)
	}
	if err := kubetest.WaitFor(10*time.Second, 100*time.Millisecond, "restart counted", func() (bool, error) {
		p, err := cs.CoreV1().Pods(daemonNS).Get(ctx, name, metav1.GetOptions{})
		return err == nil && restarts(p) == restarts(before)+1, err
	}); err != nil {
		t.Fatal(err)
	}
	waited := d.logCount("waiting for mariadbd to answer again in its pod") > waits
	return fmt.Sprintf("in-place crash recovery (SIGKILL of mariadbd, then a new login + SELECT COUNT(*)): %s, same Pod and IP, "+
		"restarts %d -> %d, the proxy waited for the restart (CheckBackend): %v", ms(took), restarts(before), restarts(before)+1, waited)
}

// checkSuspended checks that the Pod is gone and the claim and Secret stay.
func (e *env) checkSuspended(t *testing.T, name string) {
	t.Helper()
	cs := e.cluster.client.CoreV1()
	if _, err := cs.Pods(daemonNS).Get(t.Context(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("pod after suspend: %v, want not found", err)
	}
	pvc, err := cs.PersistentVolumeClaims(daemonNS).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil || pvc.Status.Phase != corev1.ClaimBound {
		t.Fatalf("claim after suspend: %v, want it Bound", err)
	}
	if _, err := cs.Secrets(daemonNS).Get(t.Context(), name, metav1.GetOptions{}); err != nil {
		t.Fatalf("secret after suspend: %v", err)
	}
}

// waitDestroyed waits until the compute's Pod, claim and Secret are gone
// (the Secret and claim through their finalizers and the garbage
// collector), and its volume with its folder (the provisioner).
func (e *env) waitDestroyed(t *testing.T, name, volume string) {
	ctx := t.Context()
	cs := e.cluster.client.CoreV1()
	err := kubetest.WaitFor(60*time.Second, 50*time.Millisecond, "compute objects gone", func() (bool, error) {
		var left []string
		if _, err := cs.Pods(daemonNS).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "pod")
		}
		if _, err := cs.PersistentVolumeClaims(daemonNS).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "claim")
		}
		if _, err := cs.Secrets(daemonNS).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "secret")
		}
		if _, err := cs.PersistentVolumes().Get(ctx, volume, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "volume "+volume)
		}
		if _, err := os.Stat(e.volumePath(volume)); err == nil {
			left = append(left, "folder "+e.volumePath(volume))
		}
		return len(left) == 0, fmt.Errorf("left: %v", left)
	})
	if err != nil {
		e.fail(t, "%v", err)
	}
}

// volumePath is the provisioner's folder of a volume.
func (e *env) volumePath(volume string) string { return filepath.Join(e.dir, "volumes", volume) }

// podTimes are when the test's watch first saw a Pod in each state.
type podTimes struct{ added, scheduled, running, ready time.Time }

// podWatch records podTimes of every Pod of a namespace.
type podWatch struct {
	mu sync.Mutex
	m  map[types.UID]*podTimes
}

func watchPods(ctx context.Context, cs kubernetes.Interface, ns string) *podWatch {
	w := &podWatch{m: map[types.UID]*podTimes{}}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := factory.Core().V1().Pods().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.see(obj) },
		UpdateFunc: func(_, obj any) { w.see(obj) },
	})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	return w
}

func (w *podWatch) see(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	pt := w.m[pod.UID]
	if pt == nil {
		pt = &podTimes{added: now}
		w.m[pod.UID] = pt
	}
	set := func(at *time.Time, cond bool) {
		if cond && at.IsZero() {
			*at = now
		}
	}
	set(&pt.scheduled, pod.Spec.NodeName != "")
	running := slices.ContainsFunc(pod.Status.ContainerStatuses, func(c corev1.ContainerStatus) bool { return c.State.Running != nil })
	set(&pt.running, running && pod.Status.PodIP != "")
	set(&pt.ready, slices.ContainsFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool {
		return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
	}))
}

func (w *podWatch) times(uid types.UID) podTimes {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pt := w.m[uid]; pt != nil {
		return *pt
	}
	return podTimes{}
}

func restarts(pod *corev1.Pod) int32 {
	var n int32
	for _, c := range pod.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
