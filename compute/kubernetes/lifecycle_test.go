package kubernetes

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/serverlessd/serverlessd/compute"
)

func TestStartWaitsForReadyThenStopKeepsVolume(t *testing.T) {
	d, cs, rec := newTestDriver(t)
	ctx := ctxT(t)
	ip := mysqlStub(t, cs)
	c := testCompute()
	if _, err := d.Start(ctx, c); !errors.Is(err, compute.ErrNotProvisioned) {
		t.Fatalf("Start before Provision: %v, want ErrNotProvisioned", err)
	}
	if err := d.Provision(ctx, c); err != nil {
		t.Fatal(err)
	}
	startKubelet(t, cs, ip)
	addr, err := d.Start(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if addr != net.JoinHostPort(ip, "3306") {
		t.Errorf("address = %s, want %s:3306", addr, ip)
	}
	// A second Start takes the running Pod.
	if again, err := d.Start(ctx, c); err != nil || again != addr {
		t.Errorf("second Start = %s, %v", again, err)
	}
	cred, err := d.Admin(ctx, c)
	if err != nil || cred.User != AdminUser || len(cred.Password) < 32 {
		t.Errorf("Admin = %+v, %v", cred, err)
	}
	name, _ := objectName(c.ID)
	if err := d.Stop(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods(testNS).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod after Stop: %v, want not found", err)
	}
	for _, get := range []func() error{
		func() error {
			_, err := cs.CoreV1().PersistentVolumeClaims(testNS).Get(ctx, name, metav1.GetOptions{})
			return err
		},
		func() error { _, err := cs.CoreV1().Secrets(testNS).Get(ctx, name, metav1.GetOptions{}); return err },
	} {
		if err := get(); err != nil {
			t.Errorf("Stop removed storage or secret: %v", err)
		}
	}
	if err := d.Stop(ctx, c); err != nil {
		t.Errorf("stopping a stopped compute: %v", err)
	}
	ev := events(rec)
	for _, want := range []string{"Resumed", "Suspended"} {
		if !strings.Contains(ev, want) {
			t.Errorf("events %q: no %s", ev, want)
		}
	}
}

func TestDestroyRemovesEverything(t *testing.T) {
	d, cs, _ := newTestDriver(t)
	ctx := ctxT(t)
	startKubelet(t, cs, mysqlStub(t, cs))
	c := testCompute()
	if err := d.Provision(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Start(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := d.Destroy(ctx, c); err != nil {
		t.Fatal(err)
	}
	pods, _ := cs.CoreV1().Pods(testNS).List(ctx, metav1.ListOptions{})
	pvcs, _ := cs.CoreV1().PersistentVolumeClaims(testNS).List(ctx, metav1.ListOptions{})
	secs, _ := cs.CoreV1().Secrets(testNS).List(ctx, metav1.ListOptions{})
	if n := len(pods.Items) + len(pvcs.Items) + len(secs.Items); n != 0 {
		t.Errorf("%d objects left after Destroy", n)
	}
	if _, err := d.Admin(ctx, c); !errors.Is(err, compute.ErrNotProvisioned) {
		t.Errorf("Admin after Destroy: %v, want ErrNotProvisioned (no stale cache)", err)
	}
	if err := d.Destroy(ctx, c); err != nil {
		t.Errorf("destroying twice: %v", err)
	}
}

func TestStartFailsFast(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status func(*corev1.Pod)
		want   string
	}{
		{"crash loop", func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "mariadb", State: corev1.ContainerState{
				Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 10s"}}}}
		}, "CrashLoopBackOff"},
		{"evicted", func(p *corev1.Pod) {
			p.Status.Phase, p.Status.Reason = corev1.PodFailed, "Evicted"
		}, "Evicted"},
		{"image pull", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodPending
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "mariadb", Image: "mariadb:nope", State: corev1.ContainerState{
				Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "manifest unknown"}}}}
		}, "image mariadb:nope cannot be run: ImagePullBackOff"},
		{"unschedulable", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodPending
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: corev1.PodReasonUnschedulable, Message: "0/3 nodes are available: 3 Insufficient memory."}}
		}, "no node can run pod"},
		{"node lost", func(p *corev1.Pod) {
			p.Spec.NodeName = "node-gone"
		}, "node node-gone no longer exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, cs, _ := newTestDriver(t)
			ctx := ctxT(t)
			k := startKubelet(t, cs, "")
			k.setStatus(tc.status)
			c := testCompute()
			if err := d.Provision(ctx, c); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			_, err := d.Start(ctx, c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start = %v, want an error naming %s", err, tc.want)
			}
			if time.Since(t0) > 5*time.Second {
				t.Errorf("Start took %s to fail", time.Since(t0))
			}
		})
	}
}

func TestStartTimesOutWithStatus(t *testing.T) {
	d, cs, _ := newTestDriver(t)
	c := testCompute()
	if err := d.Provision(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	k := startKubelet(t, cs, "")
	k.setStatus(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := d.Start(ctx, c)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not scheduled") {
		t.Errorf("Start = %v, want a deadline error that says the pod is not scheduled", err)
	}
}

func TestStartReplacesFailedPod(t *testing.T) {
	d, cs, _ := newTestDriver(t)
	ctx := ctxT(t)
	c := testCompute()
	if err := d.Provision(ctx, c); err != nil {
		t.Fatal(err)
	}
	name, _ := objectName(c.ID)
	pvc, _ := cs.CoreV1().PersistentVolumeClaims(testNS).Get(ctx, name, metav1.GetOptions{})
	old, _ := d.podFor(c, name, pvc)
	old.UID = "old"
	old.Status.Phase = corev1.PodFailed
	if _, err := cs.CoreV1().Pods(testNS).Create(ctx, old, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	startKubelet(t, cs, mysqlStub(t, cs))
	if _, err := d.Start(ctx, c); err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods(testNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil || pod.UID == "old" {
		t.Errorf("pod after Start: uid %v, %v; want a new pod", pod.UID, err)
	}
}

func TestCrashReportedOnceAndNotAfterStop(t *testing.T) {
	d, cs, rec := newTestDriver(t)
	ctx := ctxT(t)
	startKubelet(t, cs, mysqlStub(t, cs))
	exits := make(chan string, 4)
	d.SetExitHandler(func(id string, err error) { exits <- id + ": " + err.Error() })
	a, b := testCompute(), testCompute()
	for _, step := range []func() error{
		func() error { return d.Provision(ctx, a) }, func() error { return d.Provision(ctx, b) },
		func() error { _, err := d.Start(ctx, a); return err }, func() error { _, err := d.Start(ctx, b); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	// b is suspended by the driver: no report.
	if err := d.Stop(ctx, b); err != nil {
		t.Fatal(err)
	}
	// a's Pod is deleted behind the driver's back.
	name, _ := objectName(a.ID)
	if err := cs.CoreV1().Pods(testNS).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-exits:
		if !strings.HasPrefix(got, a.ID+": ") || !strings.Contains(got, "deleted") {
			t.Errorf("exit report %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the lost pod was not reported")
	}
	select {
	case got := <-exits:
		t.Errorf("unexpected second report %q", got)
	case <-time.After(200 * time.Millisecond):
	}
	if !strings.Contains(events(rec), "BackendLost") {
		t.Error("no BackendLost event")
	}
}

func TestFailedStartLeavesNoPod(t *testing.T) {
	d, cs, rec := newTestDriver(t)
	ctx := ctxT(t)
	k := startKubelet(t, cs, "")
	k.setStatus(func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "mariadb", State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: "secret not found"}}}}
	})
	c := testCompute()
	if err := d.Provision(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Start(ctx, c); err == nil {
		t.Fatal("Start succeeded")
	}
	name, _ := objectName(c.ID)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := cs.CoreV1().Pods(testNS).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pod of a failed start is still there")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(events(rec), "StartFailed") {
		t.Error("no StartFailed event")
	}
}
