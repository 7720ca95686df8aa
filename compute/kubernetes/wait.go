package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/mariadb"
)

// fatalWaiting are container waiting reasons that no amount of waiting
// fixes within a login's patience: a resume fails at once with the reason
// instead of at its timeout. A failed pull counts: the kubelet retries it
// only after a back-off of seconds to minutes.
var fatalWaiting = map[string]bool{
	"InvalidImageName":           true,
	"ErrImageNeverPull":          true,
	"ErrImagePull":               true,
	"ImagePullBackOff":           true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"CrashLoopBackOff":           true,
}

// imageWaiting are the fatal reasons that concern the image.
var imageWaiting = map[string]bool{"InvalidImageName": true, "ErrImageNeverPull": true, "ErrImagePull": true, "ImagePullBackOff": true}

// podListWatch lists and watches the one Pod called name.
func (d *Driver) podListWatch(name string) cache.ListerWatcher {
	pods := d.cli.CoreV1().Pods(d.opts.Namespace)
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	// The wrapper carries over whether the client can stream lists
	// (WatchList): a real API server can, the fake clientset cannot.
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return pods.Watch(ctx, o)
		},
	}, d.cli)
}

// waitPod waits with a watch (resumed across disconnects by UntilWithSync)
// until check reports done for the Pod called name; check gets nil once the
// Pod does not exist.
func (d *Driver) waitPod(ctx context.Context, name string, check func(*corev1.Pod) (bool, error)) error {
	key := d.opts.Namespace + "/" + name
	pre := func(s cache.Store) (bool, error) {
		obj, ok, err := s.GetByKey(key)
		if err != nil {
			return false, err
		}
		if !ok {
			return check(nil)
		}
		return check(obj.(*corev1.Pod))
	}
	cond := func(ev watch.Event) (bool, error) {
		pod, ok := ev.Object.(*corev1.Pod)
		if !ok || pod.Name != name {
			return false, nil
		}
		if ev.Type == watch.Deleted {
			return check(nil)
		}
		return check(pod)
	}
	_, err := watchtools.UntilWithSync(ctx, d.podListWatch(name), &corev1.Pod{}, pre, cond)
	return err
}

// waitReady waits until the Pod is Ready with an IP, failing early when it
// is deleted, terminates, shows a fatal waiting reason or its node is lost.
func (d *Driver) waitReady(ctx context.Context, name string) (*corev1.Pod, error) {
	return d.waitUntil(ctx, name, "ready", isReady)
}

// waitRunning waits until the Pod has an IP and its container runs (or it
// is Ready), failing early as waitReady does.
func (d *Driver) waitRunning(ctx context.Context, name string) (*corev1.Pod, error) {
	return d.waitUntil(ctx, name, "running", func(pod *corev1.Pod) bool {
		return isReady(pod) || pod.Status.PodIP != "" && pod.DeletionTimestamp == nil && containerRunning(pod)
	})
}

// waitUntil waits until done(pod), failing early when the Pod is deleted,
// terminates, shows a fatal waiting reason or its node is lost.
func (d *Driver) waitUntil(ctx context.Context, name, what string, done func(*corev1.Pod) bool) (*corev1.Pod, error) {
	var found, last *corev1.Pod
	err := d.waitPod(ctx, name, func(pod *corev1.Pod) (bool, error) {
		if pod == nil {
			return false, errPodGone
		}
		last = pod
		if err := d.podTrouble(pod); err != nil {
			return false, err
		}
		if done(pod) {
			found = pod
			return true, nil
		}
		return false, nil
	})
	if err != nil && ctx.Err() != nil {
		// UntilWithSync reports a timeout of its own: keep the context's
		// error for errors.Is, and say what the Pod was waiting on.
		return nil, fmt.Errorf("pod %s not %s (%s): %w", name, what, describe(last), ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", name, err)
	}
	return found, nil
}

// containerRunning reports whether the mariadb container has started.
func containerRunning(pod *corev1.Pod) bool {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == containerName && cs.State.Running != nil {
			return true
		}
	}
	return false
}

// waitGone waits until the Pod with uid no longer exists.
func (d *Driver) waitGone(ctx context.Context, name string, uid types.UID) error {
	err := d.waitPod(ctx, name, func(pod *corev1.Pod) (bool, error) { return pod == nil || pod.UID != uid, nil })
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("wait for pod %s to terminate: %w", name, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("wait for pod %s to terminate: %w", name, err)
	}
	return nil
}

// isReady reports whether the Pod is Ready and has an IP.
func isReady(pod *corev1.Pod) bool {
	if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podTrouble returns why a Pod will not serve: podFailure, or its node is
// lost.
func (d *Driver) podTrouble(pod *corev1.Pod) error {
	if err := podFailure(pod); err != nil {
		return err
	}
	if lost := d.lostNode(pod.Spec.NodeName); lost != "" {
		return errors.New(lost)
	}
	return nil
}

// podFailure returns why a Pod will not become Ready, or nil while it may.
func podFailure(pod *corev1.Pod) error {
	if pod.DeletionTimestamp != nil {
		return errors.New("pod is being deleted")
	}
	if terminal(pod) {
		return fmt.Errorf("pod %s: %s %s", pod.Status.Phase, pod.Status.Reason, pod.Status.Message)
	}
	for _, cs := range slices.Concat(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses) {
		w := cs.State.Waiting
		switch {
		case w == nil || !fatalWaiting[w.Reason]:
		case imageWaiting[w.Reason]:
			return fmt.Errorf("image %s cannot be run: %s: %s (check kubernetes.image and that the nodes reach its registry)",
				cs.Image, w.Reason, w.Message)
		default:
			return fmt.Errorf("container %s: %s: %s", cs.Name, w.Reason, w.Message)
		}
	}
	for _, c := range pod.Status.Conditions {
		// While a claim with Immediate binding is being provisioned the
		// scheduler says Unschedulable too: that one passes.
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable &&
			!strings.Contains(c.Message, "unbound") {
			return fmt.Errorf("no node can run pod %s: %s (check kubernetes.node_selector, tolerations, resources and the volume's node affinity)",
				pod.Name, c.Message)
		}
	}
	return nil
}

// describe summarizes a Pod's status for an error message.
func describe(pod *corev1.Pod) string {
	if pod == nil {
		return "no pod seen"
	}
	s := "phase " + string(pod.Status.Phase)
	if pod.Spec.NodeName == "" {
		s += ", not scheduled"
	}
	for _, c := range pod.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Reason != "" {
			s += fmt.Sprintf(", %s: %s %s", c.Type, c.Reason, c.Message)
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			s += fmt.Sprintf(", container %s waiting: %s %s", cs.Name, w.Reason, w.Message)
		}
	}
	return s
}

// loginPoll is the pause between two login attempts while mariadbd starts.
const loginPoll = 10 * time.Millisecond

// pollLogin waits until the daemon's account logs in at addr, at most
// DialTimeout. It fails early when the Pod fails, goes, is replaced or its
// node is lost (watched meanwhile), or when the password is refused. The
// daemon's own path to the Pod IP (CNI routes, network policies) is what
// it proves, not the kubelet's.
func (d *Driver) pollLogin(ctx context.Context, name string, uid types.UID, addr string, creds compute.Credentials) error {
	ctx, cancel := context.WithTimeoutCause(ctx, d.opts.DialTimeout, fmt.Errorf("%s does not answer within %s", addr, d.opts.DialTimeout))
	defer cancel()
	wctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	go func() {
		err := d.waitPod(wctx, name, func(pod *corev1.Pod) (bool, error) {
			if pod == nil || pod.UID != uid {
				return false, errPodGone
			}
			return false, d.podTrouble(pod)
		})
		if err != nil && wctx.Err() == nil {
			fail(fmt.Errorf("pod %s: %w", name, err))
		}
	}()
	var last error
	for {
		if last = mariadb.Login(wctx, "tcp", addr, creds.User, creds.Password); last == nil {
			return nil
		}
		if mariadb.IsAccessDenied(last) {
			return fmt.Errorf("mariadbd is up but the admin login fails: %w", last)
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("%w (last attempt: %v)", context.Cause(wctx), last)
		case <-time.After(loginPoll):
		}
	}
}
