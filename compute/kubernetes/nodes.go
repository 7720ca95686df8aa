package kubernetes

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// nodeSyncWait bounds how long the node watch may take to list the nodes
// at start-up. Without permission to watch nodes the driver still works; it
// only notices lost nodes later, through the Pods' taint eviction.
const nodeSyncWait = 30 * time.Second

// watchNodes keeps d.nodes, a cache of the cluster's nodes, and reports the
// active computes of a node that stops being Ready as lost: the next wake
// then starts a new Pod rather than waiting on a dead kubelet.
func (d *Driver) watchNodes(ctx context.Context) {
	factory := informers.NewSharedInformerFactoryWithOptions(d.cli, 0)
	inf := factory.Core().V1().Nodes().Informer()
	var warned sync.Once
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		d.mu.Lock()
		d.nodeWatchFailed = true
		d.mu.Unlock()
		warned.Do(func() {
			d.log.Warn("cannot watch nodes: a lost node is noticed only when its pods are evicted (grant nodes get/list/watch)", "err", err)
		})
	})
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) {
			if n, ok := obj.(*corev1.Node); ok {
				d.checkNode(n.Name, nodeProblem(n))
			}
		},
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				d.checkNode(n.Name, fmt.Sprintf("node %s was deleted", n.Name))
			}
		},
	})
	if err != nil {
		d.log.Error("cannot watch nodes", "err", err)
		return
	}
	d.mu.Lock()
	d.nodes = inf.GetIndexer()
	d.nodesSynced = inf.HasSynced
	d.mu.Unlock()
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
}

// nodeProblem says why a node cannot run Pods now, or "" when it is Ready.
// Ready False is the kubelet's own report; Unknown is the node controller's,
// after the node missed its heartbeats for the node monitor grace period.
func nodeProblem(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return ""
			}
			return fmt.Sprintf("node %s is not Ready (%s: %s %s)", n.Name, c.Status, c.Reason, c.Message)
		}
	}
	return fmt.Sprintf("node %s reports no Ready condition", n.Name)
}

// lostNode says why the node called name cannot run or stop a Pod: it was
// deleted or is not Ready. It returns "" when the node is fine, and also
// when the driver cannot tell (no node watch): a Pod is then never
// force-deleted.
func (d *Driver) lostNode(name string) string {
	if name == "" {
		return ""
	}
	d.mu.Lock()
	nodes, synced := d.nodes, d.nodesSynced
	d.mu.Unlock()
	if nodes == nil || synced == nil || !synced() {
		return ""
	}
	obj, ok, err := nodes.GetByKey(name)
	if err != nil {
		return ""
	}
	if !ok {
		return fmt.Sprintf("node %s no longer exists", name)
	}
	return nodeProblem(obj.(*corev1.Node))
}

// checkNode reports as lost every active compute whose Pod runs on the
// node called name, when problem says the node is lost.
func (d *Driver) checkNode(name, problem string) {
	if problem == "" {
		return
	}
	d.mu.Lock()
	var lost []string
	for id, a := range d.active {
		if a.node == name {
			lost = append(lost, id)
			delete(d.active, id)
		}
	}
	fn := d.onExit
	d.mu.Unlock()
	for _, id := range lost {
		name, _ := objectName(id)
		err := fmt.Errorf("%s", problem)
		d.log.Error("compute lost its node", "compute", id, "pod", name, "err", err)
		d.event(name, corev1.EventTypeWarning, "BackendLost", "%v; the next connection starts a new pod", err)
		if fn != nil {
			go fn(id, err)
		}
	}
}

// waitNodesSynced waits, within nodeSyncWait, for the node cache to be
// filled, so that Running can tell a dead node's Pods. It returns at once
// when the driver may not watch nodes.
func (d *Driver) waitNodesSynced(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, nodeSyncWait)
	defer cancel()
	for ctx.Err() == nil {
		d.mu.Lock()
		synced, failed := d.nodesSynced, d.nodeWatchFailed
		d.mu.Unlock()
		if failed || synced != nil && synced() {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
