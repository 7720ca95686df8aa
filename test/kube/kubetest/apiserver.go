package kubetest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Token is a line of kube-apiserver's static token file: a bearer token
// and the user, uid and groups (comma-separated, or none) it stands for.
type Token struct{ Token, User, UID, Groups string }

// WriteCredentials writes in dir what kube-apiserver serves and signs
// with: a CA named caName (ca.crt), a serving certificate it signs for ips
// and dnsNames (tls.crt, tls.key), the service-account signing key
// (sa.key) and the static token file of tokens (tokens.csv). It returns
// the files' paths by those names, and the CA's PEM for clients.
func WriteCredentials(dir, caName string, ips, dnsNames []string, tokens []Token) (map[string]string, []byte, error) {
	ca, err := NewCA(caName)
	if err != nil {
		return nil, nil, err
	}
	certPEM, keyPEM, err := ca.ServingCert(ips, dnsNames)
	if err != nil {
		return nil, nil, err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sa)})
	var csv []byte
	for _, t := range tokens {
		csv = fmt.Appendf(csv, "%s,%s,%s", t.Token, t.User, t.UID)
		if t.Groups != "" {
			csv = fmt.Appendf(csv, ",%q", t.Groups)
		}
		csv = append(csv, '\n')
	}
	files := map[string][]byte{"ca.crt": ca.PEM, "tls.crt": certPEM, "tls.key": keyPEM, "sa.key": saPEM, "tokens.csv": csv}
	paths := map[string]string{}
	for name, data := range files {
		p := filepath.Join(dir, name)
		// Keys and tokens: readable by this user only.
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return nil, nil, err
		}
		paths[name] = p
	}
	return paths, ca.PEM, nil
}

// APIServerFlags are the kube-apiserver flags both clusters share: etcd
// e, serving on ip:port with the files of WriteCredentials, its generated
// certificates in dir/certs, Services in serviceCIDR. Authorization,
// admission and the endpoint reconciler differ, and are the caller's.
func APIServerFlags(e *embed.Etcd, ip, port, dir string, files map[string]string, serviceCIDR string) []string {
	return []string{
		"--etcd-servers=" + EtcdURL(e),
		"--bind-address=" + ip, "--advertise-address=" + ip,
		"--secure-port=" + port,
		"--tls-cert-file=" + files["tls.crt"], "--tls-private-key-file=" + files["tls.key"],
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--token-auth-file=" + files["tokens.csv"],
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + files["sa.key"],
		"--service-account-signing-key-file=" + files["sa.key"],
		"--service-cluster-ip-range=" + serviceCIDR,
		"--profiling=false",
	}
}

// AdminClient returns a client config and clientset of the API server at
// url for token, trusting caPEM. Its rate limit is well above client-go's
// default (5/s): a test's bursts of calls must not queue behind it.
func AdminClient(url, token string, caPEM []byte) (*rest.Config, kubernetes.Interface, error) {
	rc := &rest.Config{Host: url, BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}, QPS: 200, Burst: 400}
	cs, err := kubernetes.NewForConfig(rc)
	return rc, cs, err
}

// WaitReady polls the API server's /readyz with token, trusting caPEM,
// until it answers 200, exited reports the process gone, or limit passes:
// the process has no other way to say it is up.
func WaitReady(url, token string, caPEM []byte, limit time.Duration, exited func() bool) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return WaitFor(limit, 100*time.Millisecond, "kube-apiserver /readyz", func() (bool, error) {
		if exited() {
			return false, Abort(fmt.Errorf("kube-apiserver exited"))
		}
		req, _ := http.NewRequest("GET", url+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("status %s", resp.Status)
	})
}
