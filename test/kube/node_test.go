package kube

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// node plays what a cluster has and the harness's API server lacks: the
// scheduler (it binds Pods to itself), the kubelet (it runs each Pod's
// mariadbd on its own loopback address, reports the Pod Ready, stops the
// server and confirms the deletion), a volume provisioner (it binds PVCs to
// folders) and the PVC protection controller.
type node struct {
	cs     kubernetes.Interface
	name   string
	dir    string // shared by every node of the harness: volumes are folders in it
	ipBase int    // the node's Pods get 127.0.0.N from N = ipBase up
	logf   func(format string, args ...any)

	mu      sync.Mutex
	dead    bool // powered off: it binds, runs and stops nothing
	pods    map[types.UID]*podRun
	ips     map[string]bool
	timings []podTiming
}

// podRun is one Pod the node runs.
type podRun struct {
	uid      types.UID
	name     string
	ip       string
	claim    string
	db       *mariadbd
	started  chan struct{} // closed once start has finished, well or not
	stopping bool
}

// podTiming is when the node saw a Pod and how long its database took.
type podTiming struct {
	Pod      string
	Seen     time.Time // the node's watch delivered the new Pod
	DBStart  time.Time // mariadbd exec'd
	DBUp     time.Time // mariadbd accepts connections
	ReadySet time.Time // the Ready status is written
}

func newNode(cs kubernetes.Interface, name, dir string, ipBase int) *node {
	return &node{cs: cs, name: name, dir: dir, ipBase: ipBase, pods: map[types.UID]*podRun{}, ips: map[string]bool{},
		logf: log.New(os.Stderr, name+": ", log.Ltime|log.Lmicroseconds).Printf}
}

// kill powers the node off: its databases die at once (InnoDB recovers
// them at their next start), it stops answering for its Pods, and the node
// controller's view, Ready Unknown, is written.
func (n *node) kill(ctx context.Context) error {
	n.mu.Lock()
	n.dead = true
	n.mu.Unlock()
	for _, r := range n.startedRuns() {
		if r.db != nil {
			r.db.kill()
		}
	}
	node, err := n.cs.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	return setNodeReady(ctx, n.cs, node, corev1.ConditionUnknown)
}

// revive brings a killed node back, empty, as after a reboot.
func (n *node) revive(ctx context.Context) error {
	n.mu.Lock()
	n.dead = false
	for uid, r := range n.pods {
		if r.db != nil {
			n.releaseIPLocked(r.ip)
		}
		delete(n.pods, uid)
	}
	n.mu.Unlock()
	node, err := n.cs.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	return setNodeReady(ctx, n.cs, node, corev1.ConditionTrue)
}

// run watches Pods and PVCs of the namespace until ctx ends, then stops
// every mariadbd it runs.
func (n *node) run(ctx context.Context) {
	f := informers.NewSharedInformerFactoryWithOptions(n.cs, 0, informers.WithNamespace(namespace))
	pods := f.Core().V1().Pods().Informer()
	_, _ = pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { n.onPod(ctx, o.(*corev1.Pod)) },
		UpdateFunc: func(_, o any) { n.onPod(ctx, o.(*corev1.Pod)) },
		DeleteFunc: func(o any) {
			if tomb, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = tomb.Obj
			}
			if p, ok := o.(*corev1.Pod); ok {
				n.forget(p.UID, time.Second)
			}
		},
	})
	pvcs := f.Core().V1().PersistentVolumeClaims().Informer()
	_, _ = pvcs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { n.onPVC(ctx, o.(*corev1.PersistentVolumeClaim)) },
		UpdateFunc: func(_, o any) { n.onPVC(ctx, o.(*corev1.PersistentVolumeClaim)) },
		DeleteFunc: func(o any) {
			if p, ok := o.(*corev1.PersistentVolumeClaim); ok {
				// Reclaim policy Delete: the volume goes with the claim.
				_ = os.RemoveAll(n.volume(p))
			}
		},
	})
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
	for _, r := range n.startedRuns() {
		if r.db != nil {
			r.db.stop(30 * time.Second)
		}
	}
}

// startedRuns returns the node's Pods once each has finished starting:
// a run's db is set then, or nil for good.
func (n *node) startedRuns() []*podRun {
	n.mu.Lock()
	runs := make([]*podRun, 0, len(n.pods))
	for _, r := range n.pods {
		runs = append(runs, r)
	}
	n.mu.Unlock()
	for _, r := range runs {
		<-r.started
	}
	return runs
}

// onPod reacts to a Pod as the scheduler and the kubelet would.
func (n *node) onPod(ctx context.Context, pod *corev1.Pod) {
	n.mu.Lock()
	dead := n.dead
	n.mu.Unlock()
	if dead {
		return
	}
	switch {
	case pod.DeletionTimestamp != nil && pod.Spec.NodeName != "" && pod.Spec.NodeName != n.name:
		// Another node's kubelet confirms its own Pods' deletions.
	case pod.DeletionTimestamp != nil:
		n.mu.Lock()
		r := n.pods[pod.UID]
		first := r != nil && !r.stopping
		if first {
			r.stopping = true
		}
		n.mu.Unlock()
		if r == nil || first {
			go n.terminate(ctx, pod, r)
		}
	case pod.Spec.NodeName == "":
		go n.bind(ctx, pod)
	case pod.Spec.NodeName == n.name:
		n.mu.Lock()
		_, known := n.pods[pod.UID]
		if !known {
			r := &podRun{uid: pod.UID, name: pod.Name, started: make(chan struct{})}
			n.pods[pod.UID] = r
			n.timings = append(n.timings, podTiming{Pod: pod.Name, Seen: time.Now()})
			go n.start(ctx, pod, r)
		}
		n.mu.Unlock()
	}
}

func (n *node) bind(ctx context.Context, pod *corev1.Pod) {
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, UID: pod.UID},
		Target: corev1.ObjectReference{Kind: "Node", Name: n.name}}
	if err := n.cs.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{}); err != nil && !apierrors.IsConflict(err) {
		n.logf("bind %s: %v", pod.Name, err)
	}
}

// start runs the Pod's mariadbd and reports the Pod Ready.
func (n *node) start(ctx context.Context, pod *corev1.Pod, r *podRun) {
	defer close(r.started)
	if isAgent(pod) {
		n.runAgent(ctx, pod)
		return
	}
	if err := n.startDB(ctx, pod, r); err != nil {
		n.logf("pod %s: %v", pod.Name, err)
		n.setStatus(ctx, pod, func(p *corev1.Pod) { failedStatus(p, err) })
		return
	}
	n.setStatus(ctx, pod, func(p *corev1.Pod) { readyStatus(p, r.ip) })
	n.mark(pod.Name, func(t *podTiming) { t.ReadySet = time.Now() })
}

func (n *node) startDB(ctx context.Context, pod *corev1.Pod, r *podRun) error {
	env, claim, err := n.resolve(ctx, pod)
	if err != nil {
		return err
	}
	pvc, err := n.cs.CoreV1().PersistentVolumeClaims(pod.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("volume claim %s: %w", claim, err)
	}
	datadir := filepath.Join(n.volume(pvc), strings.TrimPrefix(env.datadir, env.volume))
	initFile, err := initialize(n.dir, datadir, env)
	if err != nil {
		return err
	}
	if r.ip, err = n.allocIP(); err != nil {
		return err
	}
	runDir, err := os.MkdirTemp("", "kube-pod-")
	if err != nil {
		return err
	}
	r.claim = claim
	n.mark(pod.Name, func(t *podTiming) { t.DBStart = time.Now() })
	if r.db, err = startMariadbd(datadir, runDir, r.ip, initFile, env); err != nil {
		n.releaseIP(r.ip)
		return err
	}
	n.mark(pod.Name, func(t *podTiming) { t.DBUp = time.Now() })
	go n.watchExit(pod.Name, r)
	if initFile != "" {
		_ = os.Remove(initFile)
	}
	return nil
}

// watchExit logs a mariadbd that exits while its Pod is not terminating.
func (n *node) watchExit(pod string, r *podRun) {
	<-r.db.done
	n.mu.Lock()
	stopping := r.stopping || n.pods[r.uid] != r
	n.mu.Unlock()
	if !stopping {
		log, _ := os.ReadFile(r.db.logPath)
		n.logf("mariadbd of pod %s exited on its own: %v\n%s", pod, r.db.err, kubetest.Tail(string(log), 3000))
	}
}

// resolve reads what the container gets from the API: its environment
// (with secretKeyRef values) and the claim mounted at SERVERLESSD_VOLUME.
func (n *node) resolve(ctx context.Context, pod *corev1.Pod) (podEnv, string, error) {
	ct := pod.Spec.Containers[0]
	env := podEnv{args: ct.Args}
	for _, e := range ct.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			data, err := n.secret(ctx, pod.Namespace, ref.Name)
			if err != nil {
				return env, "", err
			}
			v = string(data[ref.Key])
		}
		switch e.Name {
		case "SERVERLESSD_DATADIR":
			env.datadir = v
		case "SERVERLESSD_VOLUME":
			env.volume = v
		case "SERVERLESSD_ADMIN_PASSWORD":
			env.password = v
		case "SERVERLESSD_INIT_SQL":
			env.initSQL = v
		}
	}
	if !strings.HasPrefix(env.datadir, env.volume) {
		return env, "", fmt.Errorf("datadir %q is not on the volume at %q", env.datadir, env.volume)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range ct.VolumeMounts {
		if v := volumes[m.Name]; m.MountPath == env.volume && v.PersistentVolumeClaim != nil {
			return env, v.PersistentVolumeClaim.ClaimName, nil
		}
	}
	return env, "", fmt.Errorf("no volume claim mounted at %q", env.volume)
}

func (n *node) secret(ctx context.Context, ns, name string) (map[string][]byte, error) {
	s, err := n.cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return s.Data, nil
}

// terminate stops the Pod's mariadbd within its grace period, then confirms
// the deletion (grace 0), as kubelet does.
func (n *node) terminate(ctx context.Context, pod *corev1.Pod, r *podRun) {
	grace := 30 * time.Second
	if g := pod.DeletionGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if r != nil {
		n.forget(r.uid, grace)
	}
	zero := int64(0)
	err := n.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		n.logf("confirm deletion of %s: %v", pod.Name, err)
	}
}

// forget stops a Pod's mariadbd, if it runs, and frees its address.
func (n *node) forget(uid types.UID, grace time.Duration) {
	n.mu.Lock()
	r := n.pods[uid]
	delete(n.pods, uid)
	n.mu.Unlock()
	if r == nil {
		return
	}
	<-r.started
	if r.db != nil {
		r.db.stop(grace)
		n.releaseIP(r.ip)
	}
}

// onPVC binds new claims at once (a provisioner with Immediate binding) and
// lifts the protection finalizer of a deleted claim no Pod uses.
func (n *node) onPVC(ctx context.Context, pvc *corev1.PersistentVolumeClaim) {
	switch {
	case pvc.DeletionTimestamp != nil && slices.Contains(pvc.Finalizers, "kubernetes.io/pvc-protection"):
		go n.unprotect(ctx, pvc)
	case pvc.DeletionTimestamp == nil && pvc.Status.Phase != corev1.ClaimBound:
		go n.bindPVC(ctx, pvc)
	}
}

func (n *node) bindPVC(ctx context.Context, pvc *corev1.PersistentVolumeClaim) {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := n.cs.CoreV1().PersistentVolumeClaims(pvc.Namespace).Get(ctx, pvc.Name, metav1.GetOptions{})
		if err != nil || cur.UID != pvc.UID || cur.Status.Phase == corev1.ClaimBound {
			return err
		}
		cur.Status.Phase = corev1.ClaimBound
		cur.Status.AccessModes = cur.Spec.AccessModes
		cur.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: cur.Spec.Resources.Requests[corev1.ResourceStorage]}
		_, err = n.cs.CoreV1().PersistentVolumeClaims(pvc.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		n.logf("bind claim %s: %v", pvc.Name, err)
	}
}

func (n *node) unprotect(ctx context.Context, pvc *corev1.PersistentVolumeClaim) {
	n.mu.Lock()
	for _, r := range n.pods {
		if r.claim == pvc.Name {
			n.mu.Unlock()
			return // in use: the claim waits for the Pod to go
		}
	}
	n.mu.Unlock()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := n.cs.CoreV1().PersistentVolumeClaims(pvc.Namespace).Get(ctx, pvc.Name, metav1.GetOptions{})
		if err != nil || cur.UID != pvc.UID {
			return err
		}
		cur.Finalizers = slices.DeleteFunc(cur.Finalizers, func(f string) bool { return f == "kubernetes.io/pvc-protection" })
		_, err = n.cs.CoreV1().PersistentVolumeClaims(pvc.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		n.logf("release claim %s: %v", pvc.Name, err)
	}
}

// volume is the folder that stands for a claim's volume: one per claim UID,
// so a destroyed and recreated claim starts empty.
func (n *node) volume(pvc *corev1.PersistentVolumeClaim) string {
	return filepath.Join(n.dir, "volumes", string(pvc.UID))
}

// setStatus writes a Pod's status, retrying on conflicts.
func (n *node) setStatus(ctx context.Context, pod *corev1.Pod, fn func(*corev1.Pod)) {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := n.cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || cur.UID != pod.UID {
			return err
		}
		fn(cur)
		_, err = n.cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		n.logf("status of %s: %v", pod.Name, err)
	}
}

func readyStatus(p *corev1.Pod, ip string) {
	now := metav1.Now()
	p.Status.Phase = corev1.PodRunning
	p.Status.HostIP, p.Status.PodIP = "127.0.0.1", ip
	p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	p.Status.StartTime = &now
	p.Status.Conditions = nil
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	ct := p.Spec.Containers[0]
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ct.Name, Image: ct.Image, Ready: true, Started: ptr(true),
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}
}

func failedStatus(p *corev1.Pod, err error) {
	p.Status.Phase, p.Status.Reason, p.Status.Message = corev1.PodFailed, "HarnessError", err.Error()
}

// allocIP picks a free 127.0.0.N for a Pod.
func (n *node) allocIP() (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := n.ipBase; i < 255; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		if n.ips[ip] {
			continue
		}
		ln, err := net.Listen("tcp", ip+":3306")
		if err != nil {
			continue // taken by something else on this machine
		}
		ln.Close()
		n.ips[ip] = true
		return ip, nil
	}
	return "", fmt.Errorf("no free 127.0.0.N:3306")
}

func (n *node) releaseIP(ip string) {
	n.mu.Lock()
	n.releaseIPLocked(ip)
	n.mu.Unlock()
}

func (n *node) releaseIPLocked(ip string) { delete(n.ips, ip) }

func (n *node) mark(pod string, fn func(*podTiming)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.timings) - 1; i >= 0; i-- {
		if n.timings[i].Pod == pod {
			fn(&n.timings[i])
			return
		}
	}
}

// lastTiming returns the timings of the newest Pod called name.
func (n *node) lastTiming(pod string) (podTiming, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.timings) - 1; i >= 0; i-- {
		if n.timings[i].Pod == pod {
			return n.timings[i], true
		}
	}
	return podTiming{}, false
}

// running is the number of mariadbd the node runs.
func (n *node) running() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.pods)
}

func ptr[T any](v T) *T { return &v }
