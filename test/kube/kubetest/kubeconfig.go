package kubetest

import (
	"context"
	"fmt"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Kubeconfig is a kubeconfig with one context: User, authenticated by a
// bearer Token, on the API server at Server that CAData signs, in
// Namespace (or the default one when empty).
type Kubeconfig struct {
	Cluster, Server string
	CAData          []byte
	User, Token     string
	Namespace       string
}

// Write writes k as a kubeconfig file at path.
func (k Kubeconfig) Write(path string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[k.Cluster] = &clientcmdapi.Cluster{Server: k.Server, CertificateAuthorityData: k.CAData}
	cfg.AuthInfos[k.User] = &clientcmdapi.AuthInfo{Token: k.Token}
	cfg.Contexts[k.Cluster] = &clientcmdapi.Context{Cluster: k.Cluster, AuthInfo: k.User, Namespace: k.Namespace}
	cfg.CurrentContext = k.Cluster
	return clientcmd.WriteToFile(*cfg, path)
}

// ServiceAccountToken returns an hour's token of the ServiceAccount
// namespace/name from the TokenRequest API: whoever uses it has exactly
// the account's permissions.
func ServiceAccountToken(ctx context.Context, cs kubernetes.Interface, namespace, name string) (string, error) {
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for service account %s: %w", name, err)
	}
	return tr.Status.Token, nil
}
