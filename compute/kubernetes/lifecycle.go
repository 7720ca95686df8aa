package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

var (
	getOpts    = metav1.GetOptions{}
	createOpts = metav1.CreateOptions{FieldManager: "serverlessd"}
)

// notProvisioned maps a NotFound from the API server to compute.ErrNotProvisioned.
func notProvisioned(err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %w", compute.ErrNotProvisioned, err)
	}
	return err
}

// Provision creates the compute's PVC, then its Secret, owned by the PVC.
// It is idempotent: objects that exist are kept as they are (the Secret
// holds the admin password). It does not wait for the PVC to bind, since
// WaitForFirstConsumer storage classes bind only when the Pod is scheduled.
func (d *Driver) Provision(ctx context.Context, c *store.Compute) error {
	name, err := objectName(c.ID)
	if err != nil {
		return err
	}
	want, err := d.pvcFor(c, name)
	if err != nil {
		return err
	}
	if _, _, err := d.resourcesFor(c); err != nil {
		return err
	}
	claims := d.cli.CoreV1().PersistentVolumeClaims(d.opts.Namespace)
	pvc, err := claims.Create(ctx, want, createOpts)
	created := err == nil
	if apierrors.IsAlreadyExists(err) {
		pvc, err = claims.Get(ctx, name, getOpts)
	}
	if err != nil {
		return fmt.Errorf("provision compute %s: create volume claim: %w", c.ID, err)
	}
	_, err = d.cli.CoreV1().Secrets(d.opts.Namespace).Create(ctx, secretFor(c, name, d.opts.Namespace, pvc), createOpts)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("provision compute %s: create secret: %w", c.ID, err)
	}
	if !created {
		return nil
	}
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	d.log.Info("compute provisioned", "compute", c.ID, "project", c.ProjectID, "pvc", name, "size", size.String())
	d.event(name, corev1.EventTypeNormal, "Provisioned", "Compute %s of project %s: volume claim of %s created", c.ID, c.ProjectID, size.String())
	return nil
}

// Start creates the compute's Pod, or takes the one that exists, waits
// with a watch until its container runs with an IP, then polls a login of
// the daemon's account there: it does not wait for the kubelet's readiness
// probe, whose period would add up to a second. A Pod that is still
// terminating (a suspend in progress) is waited out first, and a failed
// one, or one on a lost node, is replaced.
func (d *Driver) Start(ctx context.Context, c *store.Compute) (string, error) {
	name, err := objectName(c.ID)
	if err != nil {
		return "", err
	}
	pvc, err := d.cli.CoreV1().PersistentVolumeClaims(d.opts.Namespace).Get(ctx, name, getOpts)
	if err != nil {
		return "", fmt.Errorf("start compute %s: %w", c.ID, notProvisioned(err))
	}
	creds, err := d.Admin(ctx, c)
	if err != nil {
		return "", fmt.Errorf("start compute %s: %w", c.ID, err)
	}
	t0 := time.Now()
	pod, err := d.ensurePod(ctx, c, name, pvc)
	if err == nil && d.opts.AgentImage != "" {
		pod, err = d.yieldToAgents(ctx, c, name, pvc, pod)
	}
	if err != nil {
		return "", fmt.Errorf("start compute %s: %w", c.ID, err)
	}
	created, uid := time.Since(t0), pod.UID
	if pod, err = d.waitRunning(ctx, name); err != nil {
		d.abandon(c, name, uid, err)
		return "", fmt.Errorf("start compute %s: %w", c.ID, err)
	}
	running := time.Since(t0)
	addr := net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(MySQLPort))
	if err := d.pollLogin(ctx, name, uid, addr, creds); err != nil {
		d.abandon(c, name, uid, err)
		return "", fmt.Errorf("start compute %s: pod %s runs but %w", c.ID, name, err)
	}
	d.setActive(c.ID, pod)
	d.log.Info("compute started", "compute", c.ID, "project", c.ProjectID, "pod", name, "address", addr,
		"node", pod.Spec.NodeName, "create_ms", ms(created), "running_ms", ms(running), "duration_ms", ms(time.Since(t0)))
	d.event(name, corev1.EventTypeNormal, "Resumed", "Pod %s serving at %s in %s", name, addr, time.Since(t0).Round(time.Millisecond))
	return addr, nil
}

// ensurePod returns the compute's live Pod, creating it if there is none.
// It tries the create first: on a resume the Pod is almost always gone, and
// each request to the API server is on the client's wait.
func (d *Driver) ensurePod(ctx context.Context, c *store.Compute, name string, pvc *corev1.PersistentVolumeClaim) (*corev1.Pod, error) {
	want, err := d.podFor(c, name, pvc)
	if err != nil {
		return nil, err
	}
	pods := d.cli.CoreV1().Pods(d.opts.Namespace)
	for {
		pod, err := pods.Create(ctx, want, createOpts)
		if err == nil {
			return pod, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create pod: %w", err)
		}
		pod, err = pods.Get(ctx, name, getOpts)
		switch {
		case apierrors.IsNotFound(err):
			continue // deleted in between: create it again
		case err != nil:
			return nil, fmt.Errorf("get pod: %w", err)
		case pod.DeletionTimestamp != nil:
			// A suspend still flushing InnoDB: the new Pod must not open
			// the volume before the old one has let go of it.
			if _, err := d.deletePod(ctx, name); err != nil {
				return nil, err
			}
		case terminal(pod):
			d.log.Warn("replacing a terminated pod", "compute", c.ID, "pod", name, "phase", pod.Status.Phase, "reason", pod.Status.Reason)
			if _, err := d.deletePod(ctx, name); err != nil {
				return nil, err
			}
		case d.lostNode(pod.Spec.NodeName) != "":
			if _, err := d.deletePod(ctx, name); err != nil {
				return nil, err
			}
		default:
			return pod, nil
		}
	}
}

// abandon deletes, in the background, the Pod of a start that failed: a
// failed compute runs nothing (as with the local driver), and the next wake
// starts from a new Pod rather than from one stuck in a crash loop. The UID
// precondition keeps a late delete from hitting the next start's Pod.
func (d *Driver) abandon(c *store.Compute, name string, uid types.UID, cause error) {
	d.log.Warn("deleting the pod of a failed start", "compute", c.ID, "pod", name, "err", cause)
	d.event(name, corev1.EventTypeWarning, "StartFailed", "Pod %s did not start: %v", name, cause)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}
		err := d.cli.CoreV1().Pods(d.opts.Namespace).Delete(ctx, name, opts)
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			d.log.Error("could not delete the pod of a failed start", "compute", c.ID, "pod", name, "err", err)
		}
	}()
}

// Stop deletes the compute's Pod and waits until it is gone, so that
// mariadbd has flushed InnoDB (kubelet sends SIGTERM and waits up to the
// grace period). The PVC and the Secret stay. Stopping a stopped compute is
// a no-op.
func (d *Driver) Stop(ctx context.Context, c *store.Compute) error {
	name, err := objectName(c.ID)
	if err != nil {
		return err
	}
	t0 := time.Now()
	// No crash report for a Pod we delete ourselves.
	d.clearActive(c.ID)
	existed, err := d.deletePod(ctx, name)
	if err != nil {
		return fmt.Errorf("stop compute %s: %w", c.ID, err)
	}
	if !existed {
		return nil
	}
	d.log.Info("compute stopped", "compute", c.ID, "project", c.ProjectID, "pod", name, "duration_ms", ms(time.Since(t0)))
	d.event(name, corev1.EventTypeNormal, "Suspended", "Pod %s deleted after a clean shutdown in %s; the volume claim is kept",
		name, time.Since(t0).Round(time.Millisecond))
	return nil
}

// deleteMargin is how long, past a Pod's grace period, a deletion waits for
// the kubelet to confirm that the container exited.
const deleteMargin = 30 * time.Second

// deletePod deletes a Pod with its own grace period and waits until the
// API server has removed it (its kubelet confirms the container exited),
// at most the grace period plus deleteMargin. A Pod whose node is lost is
// force-deleted: no kubelet will ever confirm, and its container cannot
// touch the volume any more. It reports whether there was a Pod to delete.
func (d *Driver) deletePod(ctx context.Context, name string) (bool, error) {
	pods := d.cli.CoreV1().Pods(d.opts.Namespace)
	pod, err := pods.Get(ctx, name, getOpts)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("get pod %s: %w", name, err)
	}
	if lost := d.lostNode(pod.Spec.NodeName); lost != "" {
		return true, d.forceDelete(ctx, pod, lost)
	}
	if pod.DeletionTimestamp == nil {
		opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}}
		err := pods.Delete(ctx, name, opts)
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return true, nil // gone already, or replaced by a newer Pod
		}
		if err != nil {
			return true, fmt.Errorf("delete pod %s: %w", name, err)
		}
	}
	grace := d.opts.StopTimeout
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, grace+deleteMargin)
	defer cancel()
	err = d.waitGone(wctx, name, pod.UID)
	if err == nil || ctx.Err() != nil {
		return true, err
	}
	if lost := d.lostNode(pod.Spec.NodeName); lost != "" {
		return true, d.forceDelete(ctx, pod, lost)
	}
	return true, fmt.Errorf("%w, although its node %s is Ready: see `kubectl describe pod %s`; the next suspend or resume tries again",
		err, pod.Spec.NodeName, name)
}

// forceDelete removes a Pod from the API server at once, without waiting
// for its kubelet (grace period 0), because its node is lost.
func (d *Driver) forceDelete(ctx context.Context, pod *corev1.Pod, why string) error {
	d.log.Warn("force-deleting a pod on a lost node", "pod", pod.Name, "node", pod.Spec.NodeName, "reason", why)
	d.event(pod.Name, corev1.EventTypeWarning, "ForceDeleted", "Pod %s force-deleted: %s", pod.Name, why)
	zero := int64(0)
	opts := metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &pod.UID}}
	err := d.cli.CoreV1().Pods(d.opts.Namespace).Delete(ctx, pod.Name, opts)
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("force-delete pod %s on lost node %s: %w", pod.Name, pod.Spec.NodeName, err)
	}
	return nil
}

// Destroy deletes the Pod (waiting for a clean stop), then the PVC and the
// Secret. The PVC disappears once its protection finalizer is lifted and
// the storage class reclaims the volume: that is not waited for.
func (d *Driver) Destroy(ctx context.Context, c *store.Compute) error {
	name, err := objectName(c.ID)
	if err != nil {
		return err
	}
	d.clearActive(c.ID)
	if _, err := d.deletePod(ctx, name); err != nil {
		return fmt.Errorf("destroy compute %s: %w", c.ID, err)
	}
	bg := metav1.DeletePropagationBackground
	del := metav1.DeleteOptions{PropagationPolicy: &bg}
	err = d.cli.CoreV1().PersistentVolumeClaims(d.opts.Namespace).Delete(ctx, name, del)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("destroy compute %s: delete volume claim: %w", c.ID, err)
	}
	err = d.cli.CoreV1().Secrets(d.opts.Namespace).Delete(ctx, name, del)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("destroy compute %s: delete secret: %w", c.ID, err)
	}
	d.mu.Lock()
	delete(d.admin, c.ID)
	d.mu.Unlock()
	d.log.Info("compute destroyed", "compute", c.ID, "project", c.ProjectID, "pvc", name)
	return nil
}

// StorageBytes is the size of the compute's volume: the capacity the
// storage class provisioned once bound, else the size requested.
func (d *Driver) StorageBytes(ctx context.Context, c *store.Compute) (int64, error) {
	name, err := objectName(c.ID)
	if err != nil {
		return 0, err
	}
	pvc, err := d.cli.CoreV1().PersistentVolumeClaims(d.opts.Namespace).Get(ctx, name, getOpts)
	if err != nil {
		return 0, fmt.Errorf("compute %s: %w", c.ID, notProvisioned(err))
	}
	if q, ok := pvc.Status.Capacity[corev1.ResourceStorage]; ok {
		return q.Value(), nil
	}
	q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	return q.Value(), nil
}

// terminal reports whether a Pod's containers will never run again.
func terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// errPodGone is returned when a Pod being waited for disappears.
var errPodGone = errors.New("pod was deleted")

// CheckBackend decides, for a client that could not reach addr, whether
// the compute's Pod will answer there again. The same Pod, at the same IP,
// on a node that is fine, is a mariadbd that kubelet restarts in place
// (after a crash or an OOM kill): its greeting is waited for, at most
// DialTimeout. Anything else is lost, and the next start makes a new Pod.
func (d *Driver) CheckBackend(ctx context.Context, c *store.Compute, addr string) error {
	name, err := objectName(c.ID)
	if err != nil {
		return err
	}
	pod, err := d.cli.CoreV1().Pods(d.opts.Namespace).Get(ctx, name, getOpts)
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("pod %s is gone", name)
	case err != nil:
		return fmt.Errorf("get pod %s: %w", name, err)
	case pod.DeletionTimestamp != nil || terminal(pod):
		return fmt.Errorf("pod %s is stopping or stopped (%s)", name, describe(pod))
	case net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(MySQLPort)) != addr:
		return fmt.Errorf("pod %s is not the one at %s", name, addr)
	}
	if lost := d.lostNode(pod.Spec.NodeName); lost != "" {
		return errors.New(lost)
	}
	d.log.Info("waiting for mariadbd to answer again in its pod", "compute", c.ID, "pod", name, "address", addr,
		"restarts", restarts(pod))
	creds, err := d.Admin(ctx, c)
	if err != nil {
		return err
	}
	return d.pollLogin(ctx, name, pod.UID, addr, creds)
}
