package kube

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
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
		if err := c.apply(ctx, filepath.Join(deployDir, file)); err != nil {
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

// apply creates every object of a multi-document YAML manifest. Only the
// kinds deploy/kubernetes uses for RBAC are handled.
func (c *cluster) apply(ctx context.Context, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := c.create(ctx, obj); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
}

func (c *cluster) create(ctx context.Context, obj runtime.Object) error {
	opts := metav1.CreateOptions{}
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = c.client.CoreV1().Namespaces().Create(ctx, o, opts)
	case *corev1.ServiceAccount:
		_, err = c.client.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.Role:
		_, err = c.client.RbacV1().Roles(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.RoleBinding:
		_, err = c.client.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, opts)
	case *networkingv1.NetworkPolicy:
		_, err = c.client.NetworkingV1().NetworkPolicies(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.ClusterRole:
		_, err = c.client.RbacV1().ClusterRoles().Create(ctx, o, opts)
	case *rbacv1.ClusterRoleBinding:
		_, err = c.client.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
	default:
		err = fmt.Errorf("kind %T is not handled by the harness", obj)
	}
	return err
}

// driverConfig returns a client config that authenticates as the daemon's
// ServiceAccount, with a token from the TokenRequest API: the driver runs
// with exactly the Role's permissions.
func (c *cluster) driverConfig(ctx context.Context) (*rest.Config, error) {
	exp := int64(3600)
	tr, err := c.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for service account %s: %w", serviceAccount, err)
	}
	return &rest.Config{Host: c.url, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM}}, nil
}

// writeKubeconfig writes rc (token authentication) as a kubeconfig file.
func writeKubeconfig(rc *rest.Config, path string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["harness"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos["serverlessd"] = &clientcmdapi.AuthInfo{Token: rc.BearerToken}
	cfg.Contexts["harness"] = &clientcmdapi.Context{Cluster: "harness", AuthInfo: "serverlessd", Namespace: namespace}
	cfg.CurrentContext = "harness"
	return clientcmd.WriteToFile(*cfg, path)
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
