package kubernetes

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/serverlessd/serverlessd/compute"
)

// managedSelector selects every Pod the driver creates.
var managedSelector = ManagedByLabel + "=" + ManagedByValue

// adoptWait bounds how long Running waits for a Pod that an earlier daemon
// was starting when it died.
const adoptWait = time.Minute

// orphanAfter is the age past which a Pod that is not Ready has no start
// behind it (a start waits minutes at most) and Running deletes it.
const orphanAfter = 10 * time.Minute

// Running lists the computes whose Pods are Ready, and watches them for
// crashes from now on. A Pod still starting (its daemon died mid-start) is
// waited for, at most adoptWait; if it does not become Ready it is deleted,
// since no one would ever use it. A Pod on a lost node is force-deleted.
// Terminating and terminated Pods are left out. The waits run side by side,
// so one stuck Pod delays the list by adoptWait at most.
func (d *Driver) Running(ctx context.Context) ([]compute.Instance, error) {
	list, err := d.cli.CoreV1().Pods(d.opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: managedSelector})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	d.waitNodesSynced(ctx)
	var (
		mu  sync.Mutex
		out []compute.Instance
		g   errgroup.Group
	)
	g.SetLimit(16)
	for i := range list.Items {
		pod := &list.Items[i]
		id := pod.Labels[ComputeLabel]
		if name, err := objectName(id); err != nil || name != pod.Name || pod.DeletionTimestamp != nil || terminal(pod) {
			continue
		}
		g.Go(func() error {
			pod, err := d.adopt(ctx, id, pod)
			if pod == nil || err != nil {
				return err
			}
			d.setActive(id, pod)
			addr := net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(MySQLPort))
			mu.Lock()
			out = append(out, compute.Instance{ComputeID: id, Address: addr})
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}

// adopt returns the Pod if it runs, or nil after deleting it when it will
// not: its node is lost, or it does not become Ready within adoptWait.
func (d *Driver) adopt(ctx context.Context, id string, pod *corev1.Pod) (*corev1.Pod, error) {
	if lost := d.lostNode(pod.Spec.NodeName); lost != "" {
		return nil, d.forceDelete(ctx, pod, lost)
	}
	if isReady(pod) {
		return pod, nil
	}
	wctx, cancel := context.WithTimeout(ctx, adoptWait)
	defer cancel()
	ready, err := d.waitReady(wctx, pod.Name)
	if err == nil {
		return ready, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if time.Since(pod.CreationTimestamp.Time) < orphanAfter {
		// Another daemon may still be starting it (a slow image pull):
		// leave it to that start, or to a later reconciliation.
		d.log.Info("leaving a pod that is not ready yet", "compute", id, "pod", pod.Name, "err", err)
		return nil, nil
	}
	d.log.Warn("deleting a pod that did not become ready", "compute", id, "pod", pod.Name, "err", err)
	if _, err := d.deletePod(ctx, pod.Name); err != nil {
		d.log.Error("could not delete a pod that did not become ready", "compute", id, "pod", pod.Name, "err", err)
	}
	return nil, nil
}

// monitor watches the driver's Pods until ctx ends, and reports the loss of
// an active compute's Pod to the exit handler.
func (d *Driver) monitor(ctx context.Context) {
	factory := informers.NewSharedInformerFactoryWithOptions(d.cli, 0,
		informers.WithNamespace(d.opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = managedSelector }))
	inf := factory.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(oldObj, newObj any) {
			old, _ := oldObj.(*corev1.Pod)
			pod, _ := newObj.(*corev1.Pod)
			if old != nil && pod != nil {
				d.observe(old, pod, false)
			}
		},
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				d.observe(pod, pod, true)
			}
		},
	})
	if err != nil {
		d.log.Error("cannot watch pods: crashes will go unnoticed", "err", err)
		return
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
}

// observe looks at one change of a Pod. A Pod that an active compute runs on
// and that is deleted, starts terminating or terminates was lost: its
// compute is reported once. A container restart (kubelet restarted a
// crashed mariadbd in place, on the same IP) is only logged.
func (d *Driver) observe(old, pod *corev1.Pod, deleted bool) {
	id := pod.Labels[ComputeLabel]
	var lost error
	switch {
	case deleted:
		lost = fmt.Errorf("pod %s was deleted", pod.Name)
	case pod.DeletionTimestamp != nil:
		lost = fmt.Errorf("pod %s is being deleted by someone else than serverlessd", pod.Name)
	case terminal(pod):
		lost = fmt.Errorf("pod %s is %s: %s %s", pod.Name, pod.Status.Phase, pod.Status.Reason, pod.Status.Message)
	default:
		if n, was := restarts(pod), restarts(old); n > was && d.isActive(id, pod) {
			d.log.Warn("mariadbd restarted in its pod", "compute", id, "pod", pod.Name, "restarts", n)
			d.event(pod.Name, corev1.EventTypeWarning, "BackendRestarted", "mariadbd in pod %s restarted (%d restarts)", pod.Name, n)
		}
		return
	}
	d.mu.Lock()
	a, ok := d.active[id]
	fn := d.onExit
	if ok && a.uid == pod.UID {
		delete(d.active, id)
	}
	d.mu.Unlock()
	if !ok || a.uid != pod.UID {
		return
	}
	d.log.Error("compute lost its pod", "compute", id, "pod", pod.Name, "err", lost)
	d.event(pod.Name, corev1.EventTypeWarning, "BackendLost", "%v; the next connection starts a new pod", lost)
	if fn != nil {
		go fn(id, lost)
	}
}

// isActive reports whether pod is the active Pod of compute id.
func (d *Driver) isActive(id string, pod *corev1.Pod) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.active[id]
	return ok && a.uid == pod.UID
}

func restarts(pod *corev1.Pod) int32 {
	var n int32
	for _, cs := range pod.Status.ContainerStatuses {
		n += cs.RestartCount
	}
	return n
}
