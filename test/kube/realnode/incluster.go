//go:build linux && realnode

package realnode

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

const (
	daemonDeployment = "serverlessd"
	daemonSelector   = "app.kubernetes.io/name=serverlessd"
	leaderLease      = "serverlessd-leader"
)

// daemonPods lists the daemon's Pods that are not being deleted.
func (e *env) daemonPods(ctx context.Context) ([]corev1.Pod, error) {
	list, err := e.cluster.client.CoreV1().Pods(daemonNS).List(ctx, metav1.ListOptions{LabelSelector: daemonSelector})
	if err != nil {
		return nil, err
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			pods = append(pods, p)
		}
	}
	return pods, nil
}

// waitRolledOut waits until the Deployment has rolled out its current
// template: every replica updated, Ready and available, and no other
// daemon Pod left (terminating ones included: their drain is part of it).
func (e *env) waitRolledOut(ctx context.Context, limit time.Duration) error {
	return kubetest.WaitFor(limit, 100*time.Millisecond, "daemon Deployment rolled out", func() (bool, error) {
		d, err := e.cluster.client.AppsV1().Deployments(daemonNS).Get(ctx, daemonDeployment, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		want := *d.Spec.Replicas
		s := d.Status
		if s.ObservedGeneration < d.Generation || s.UpdatedReplicas != want || s.ReadyReplicas != want ||
			s.AvailableReplicas != want || s.Replicas != want {
			return false, fmt.Errorf("status %+v", s)
		}
		all, err := e.cluster.client.CoreV1().Pods(daemonNS).List(ctx, metav1.ListOptions{LabelSelector: daemonSelector})
		if err != nil {
			return false, err
		}
		return len(all.Items) == int(want), fmt.Errorf("%d daemon pods, want %d", len(all.Items), want)
	})
}

// leaseHolder returns the holder of the daemons' leader Lease.
func (e *env) leaseHolder(ctx context.Context) (string, error) {
	l, err := e.cluster.client.CoordinationV1().Leases(daemonNS).Get(ctx, leaderLease, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *l.Spec.HolderIdentity, nil
}

// holderPod returns the daemon Pod that holds the Lease: the holder's
// identity is the Pod's name (SERVERLESSD_NODE_NAME), perhaps with more.
func holderPod(holder string, pods []corev1.Pod) string {
	for _, p := range pods {
		if holder != "" && strings.HasPrefix(holder, p.Name) {
			return p.Name
		}
	}
	return ""
}

// daemonLogs returns the tail of every daemon Pod's log.
func (e *env) daemonLogs() string {
	var b strings.Builder
	pods, _ := e.cluster.client.CoreV1().Pods(daemonNS).List(context.Background(), metav1.ListOptions{LabelSelector: daemonSelector})
	if pods == nil {
		return ""
	}
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "--- daemon pod %s (%s)\n%s\n", p.Name, p.Status.Phase, kubetest.Tail(e.podLogIn(daemonNS, p.Name), 3000))
	}
	return b.String()
}

// undeploy deletes what the overlay made: the namespace (with the
// Deployment, the computes, the Lease) and the cluster-wide RBAC, and
// waits until the namespace is gone, so that a later test can make it.
func (e *env) undeploy(t *testing.T, objs []*unstructured.Unstructured) {
	ctx := context.Background()
	cs := e.cluster.client
	dyn, err := dynamic.NewForConfig(e.cluster.admin)
	if err != nil {
		t.Error(err)
		return
	}
	for _, o := range objs {
		if o.GetNamespace() != "" || o.GetKind() == "Namespace" {
			continue
		}
		gvr := o.GroupVersionKind().GroupVersion().WithResource(strings.ToLower(o.GetKind()) + "s")
		if err := dyn.Resource(gvr).Delete(ctx, o.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	if err := cs.CoreV1().Namespaces().Delete(ctx, daemonNS, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete namespace: %v", err)
		return
	}
	e.kubeconfig = ""
	if err := kubetest.WaitFor(3*time.Minute, 200*time.Millisecond, "namespace gone", func() (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, daemonNS, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	}); err != nil {
		t.Errorf("%v", err)
	}
}

// waitService waits until the Service answers through its ClusterIP:
// kube-proxy programs the Service's rules from its EndpointSlices some
// time after the Pods are Ready, and until then rejects connections. It
// asks for ten answers in a row, so that both replicas' rules are in.
func waitService(base string, limit time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	inRow := 0
	return kubetest.WaitFor(limit, 50*time.Millisecond, "the Service answers", func() (bool, error) {
		resp, err := hc.Get(base + "/readyz")
		if err != nil {
			inRow = 0
			return false, err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			inRow = 0
			return false, fmt.Errorf("status %s", resp.Status)
		}
		inRow++
		return inRow >= 10, nil
	})
}
