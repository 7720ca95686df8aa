//go:build linux && realnode

package realnode

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The cluster's address ranges. They must not overlap the host's networks.
const (
	serviceCIDR  = "10.0.0.0/24"
	apiServiceIP = "10.0.0.1" // the kubernetes Service: the range's first address
	podCIDR      = "10.244.0.0/24"
	nodeName     = "realnode"
)

// identities are the users of the static token file: each component gets
// the user name the API server's bootstrap RBAC policy binds its role to
// (system:kube-controller-manager, system:kube-scheduler, system:kube-proxy)
// and the kubelet is a member of system:nodes, which the Node authorizer
// and the NodeRestriction admission plugin recognize.
var identities = []struct{ name, user, groups string }{
	{"admin", "realnode-admin", "system:masters"},
	{"kube-controller-manager", "system:kube-controller-manager", ""},
	{"kube-scheduler", "system:kube-scheduler", ""},
	{"kube-proxy", "system:kube-proxy", ""},
	{"kubelet", "system:node:" + nodeName, "system:nodes"},
}

// cluster is a control plane: etcd in this process, kube-apiserver,
// kube-controller-manager and kube-scheduler as child processes. Most of it
// is copied from test/kube/cluster_test.go (startEtcd, waitReady, the
// certificate code), which cannot be imported from here.
type cluster struct {
	dir    string
	logDir string
	ip     string // the node's address: the API server listens on it
	etcd   *embed.Etcd
	procs  []*proc
	url    string
	caPEM  []byte
	files  map[string]string // credentials by name: ca.crt, sa.key...
	tokens map[string]string // token by identity name
	admin  *rest.Config
	client kubernetes.Interface
}

// startCluster starts the control plane in dir, with its processes' logs
// in logDir, and waits until the API server is ready.
func startCluster(bins map[string]string, dir, logDir, ip string) (*cluster, error) {
	c := &cluster{dir: dir, logDir: logDir, ip: ip}
	if err := os.MkdirAll(c.logDir, 0o755); err != nil {
		return nil, err
	}
	if err := c.startEtcd(); err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return c.startAPIServer(bins["kube-apiserver"]) },
		func() error { return c.startControllers(bins) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *cluster) startEtcd() error {
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(c.dir, "etcd")
	// Its logs (even "error" ones at shutdown) would bury the test's.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	local, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*local}, []url.URL{*local}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*local}, []url.URL{*local}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return fmt.Errorf("etcd did not become ready")
	}
	c.etcd = e
	return nil
}

// startAPIServer runs kube-apiserver on the node's address, so that the
// kubelet and Pods reach it, and waits for /readyz.
func (c *cluster) startAPIServer(bin string) error {
	if err := c.writeCredentials(); err != nil {
		return err
	}
	port, err := freePort(c.ip)
	if err != nil {
		return err
	}
	f := c.files
	args := []string{
		"--etcd-servers=http://" + c.etcd.Clients[0].Addr().String(),
		// The advertised address is the endpoint of the kubernetes Service
		// (the default lease endpoint reconciler writes it): kube-proxy
		// DNATs 10.0.0.1:443 to it, so in-cluster clients reach this port.
		"--bind-address=" + c.ip, "--advertise-address=" + c.ip,
		"--secure-port=" + port,
		"--tls-cert-file=" + f["tls.crt"], "--tls-private-key-file=" + f["tls.key"],
		"--cert-dir=" + filepath.Join(c.dir, "certs"),
		"--token-auth-file=" + f["tokens.csv"],
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + f["sa.key"],
		"--service-account-signing-key-file=" + f["sa.key"],
		"--service-cluster-ip-range=" + serviceCIDR,
		// For logs and exec: the kubelet serves a self-signed certificate
		// on the node's address.
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
	}
	p, err := startProc(c.logDir, "kube-apiserver", bin, args...)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	c.url = "https://" + net.JoinHostPort(c.ip, port)
	c.admin = &rest.Config{Host: c.url, BearerToken: c.tokens["admin"],
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM}, QPS: 200, Burst: 400}
	if c.client, err = kubernetes.NewForConfig(c.admin); err != nil {
		return err
	}
	return c.waitReady(p, 90*time.Second)
}

// startControllers runs kube-controller-manager and kube-scheduler, each
// with its own kubeconfig. Neither serves (--secure-port=0): nothing here
// scrapes them, and fixed ports could collide with another run.
func (c *cluster) startControllers(bins map[string]string) error {
	kcm, err := c.kubeconfig("kube-controller-manager")
	if err != nil {
		return err
	}
	p, err := startProc(c.logDir, "kube-controller-manager", bins["kube-controller-manager"],
		"--kubeconfig="+kcm, "--secure-port=0", "--leader-elect=false",
		// Each controller uses its own ServiceAccount, as in a real cluster,
		// so that missing RBAC shows here and not in production.
		"--use-service-account-credentials=true",
		// The token controller signs nothing (the API server does) but the
		// root CA is what it publishes in every namespace (kube-root-ca.crt).
		"--service-account-private-key-file="+c.files["sa.key"],
		"--root-ca-file="+c.files["ca.crt"],
		// The CNI configuration has the node's Pod range: no IPAM controller.
		"--allocate-node-cidrs=false",
		// A node whose kubelet stopped is marked Unknown (and tainted)
		// after 15 s rather than 50: the node-loss test waits for it.
		"--node-monitor-grace-period=15s", "--node-monitor-period=1s",
		"--profiling=false")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	sched, err := c.kubeconfig("kube-scheduler")
	if err != nil {
		return err
	}
	p, err = startProc(c.logDir, "kube-scheduler", bins["kube-scheduler"],
		"--kubeconfig="+sched, "--secure-port=0", "--leader-elect=false", "--profiling=false")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

// waitReady polls /readyz: the process has no other way to say it is up.
func (c *cluster) waitReady(p *proc, limit time.Duration) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	err := waitFor(limit, 100*time.Millisecond, "kube-apiserver /readyz", func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("kube-apiserver exited")
		}
		req, _ := http.NewRequest("GET", c.url+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.tokens["admin"])
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("status %s", resp.Status)
	})
	if err != nil {
		return fmt.Errorf("%w; its log:\n%s", err, p.tailLog(4000))
	}
	return nil
}

// writeCredentials writes a CA, the API server's serving certificate, the
// service-account signing key and the static token file.
func (c *cluster) writeCredentials() error {
	caCert, caKey, caPEM, err := newCA()
	if err != nil {
		return err
	}
	c.caPEM = caPEM
	certPEM, keyPEM, err := servingCert(caCert, caKey, c.ip)
	if err != nil {
		return err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sa)})
	c.tokens = map[string]string{}
	var tokens []byte
	for i, id := range identities {
		tok := fmt.Sprintf("realnode-%s-%s", id.name, rand.Text())
		c.tokens[id.name] = tok
		tokens = fmt.Appendf(tokens, "%s,%s,uid%d", tok, id.user, i)
		if id.groups != "" {
			tokens = fmt.Appendf(tokens, ",%q", id.groups)
		}
		tokens = append(tokens, '\n')
	}
	files := map[string][]byte{"ca.crt": caPEM, "tls.crt": certPEM, "tls.key": keyPEM, "sa.key": saPEM, "tokens.csv": tokens}
	c.files = map[string]string{}
	for name, data := range files {
		p := filepath.Join(c.dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return err
		}
		c.files[name] = p
	}
	return nil
}

// kubeconfig writes a kubeconfig for one of identities and returns its path.
func (c *cluster) kubeconfig(identity string) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["realnode"] = &clientcmdapi.Cluster{Server: c.url, CertificateAuthorityData: c.caPEM}
	cfg.AuthInfos[identity] = &clientcmdapi.AuthInfo{Token: c.tokens[identity]}
	cfg.Contexts["realnode"] = &clientcmdapi.Context{Cluster: "realnode", AuthInfo: identity}
	cfg.CurrentContext = "realnode"
	path := filepath.Join(c.dir, identity+".kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

func (c *cluster) stop() {
	// In reverse: the API server last among the processes, etcd after it.
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(10 * time.Second)
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
}

// newCA makes a CA certificate and key.
func newCA() (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "realnode-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), err
}

// servingCert makes the API server's certificate. Its names are every way
// a client reaches it: the node's address from the host and the kubelet,
// the kubernetes Service's IP and DNS names from Pods.
func servingCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, ip string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(ip), net.ParseIP(apiServiceIP)},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}
