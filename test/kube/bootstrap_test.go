package kube

import (
	"context"
	"fmt"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// deployDir holds the manifests users apply; the harness applies the same
// files, so the test proves them.
const deployDir = "../../deploy/kubernetes"

// namespace and serviceAccount are those of deploy/kubernetes.
const (
	namespace      = "serverlessd"
	serviceAccount = "serverlessd"
	nodeName       = "harness-node"
)

// bootstrap applies deploy/kubernetes's Namespace, ServiceAccount, Role,
// RoleBinding, node ClusterRole and NetworkPolicy (the API server validates
// it; the harness's node does not enforce it), plus what a
// controller-manager would have made (the default ServiceAccount) and the
// harness's Node.
func (c *cluster) bootstrap(ctx context.Context) error {
	for _, file := range []string{"namespace.yaml", "rbac.yaml", "networkpolicy.yaml"} {
		if err := kubetest.Apply(ctx, c.client, filepath.Join(deployDir, file)); err != nil {
			return err
		}
	}
	cs := c.client.CoreV1()
	// With no controller-manager nobody makes the namespace's default
	// ServiceAccount, which the ServiceAccount admission plugin requires.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	if _, err := cs.ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create default service account: %w", err)
	}
	return createNode(ctx, c.client, nodeName)
}

// createNode registers a node that reports Ready, as a kubelet does.
func createNode(ctx context.Context, cs kubernetes.Interface, name string) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}
	node, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	return setNodeReady(ctx, cs, node, corev1.ConditionTrue)
}

// setNodeReady writes the node's Ready condition: True as its kubelet
// reports it, Unknown as the node controller does once heartbeats stop.
func setNodeReady(ctx context.Context, cs kubernetes.Interface, node *corev1.Node, status corev1.ConditionStatus) error {
	now := metav1.Now()
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status,
		Reason: "Harness", LastHeartbeatTime: now, LastTransitionTime: now}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node %s status: %w", node.Name, err)
	}
	return nil
}

// driverConfig returns a client config that authenticates as the daemon's
// ServiceAccount, with a token from the TokenRequest API: the driver runs
// with exactly the Role's permissions.
func (c *cluster) driverConfig(ctx context.Context) (*rest.Config, error) {
	token, err := kubetest.ServiceAccountToken(ctx, c.client, namespace, serviceAccount)
	if err != nil {
		return nil, err
	}
	return &rest.Config{Host: c.url, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM}}, nil
}

// writeKubeconfig writes rc (token authentication) as a kubeconfig file.
func writeKubeconfig(rc *rest.Config, path string) error {
	return kubetest.Kubeconfig{Cluster: "harness", Server: rc.Host, CAData: rc.CAData,
		User: "serverlessd", Token: rc.BearerToken, Namespace: namespace}.Write(path)
}

// forbidden checks that the driver's identity cannot do what the Role does
// not grant: the manifests must be least privilege, not just sufficient.
func forbidden(ctx context.Context, cs kubernetes.Interface) error {
	checks := map[string]func() error{
		"list secrets": func() error {
			_, err := cs.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{})
			return err
		},
		"list pods in kube-system": func() error {
			_, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
			return err
		},
		"delete nodes": func() error {
			return cs.CoreV1().Nodes().Delete(ctx, nodeName, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		},
		"create services": func() error {
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 1}}}}
			_, err := cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
			return err
		},
	}
	for what, check := range checks {
		if err := check(); err == nil {
			return fmt.Errorf("the serverlessd service account may %s: the Role grants too much", what)
		}
	}
	return nil
}
