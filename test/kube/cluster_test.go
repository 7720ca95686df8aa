package kube

import (
	"bytes"
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
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// cluster is a control plane with no node: etcd in this process and a real
// kube-apiserver as a child process.
type cluster struct {
	dir    string
	etcd   *embed.Etcd
	cmd    *exec.Cmd
	log    *bytes.Buffer
	url    string
	caPEM  []byte
	admin  *rest.Config
	client kubernetes.Interface
}

// adminToken authenticates the harness as a cluster admin (system:masters);
// the driver never uses it.
const adminToken = "harness-admin-token-0123456789"

// startCluster starts etcd and kube-apiserver in dir and waits until the API
// server is ready.
func startCluster(apiserver, dir string) (*cluster, error) {
	c := &cluster{dir: dir, log: &bytes.Buffer{}}
	if err := c.startEtcd(); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(apiserver); err != nil {
		c.stop()
		return nil, err
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

// startAPIServer runs kube-apiserver with the flags the issue verified on
// this kind of machine, and waits for /readyz.
func (c *cluster) startAPIServer(bin string) error {
	files, err := c.writeCredentials()
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	args := []string{
		"--etcd-servers=http://" + c.etcd.Clients[0].Addr().String(),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + port,
		"--tls-cert-file=" + files["tls.crt"], "--tls-private-key-file=" + files["tls.key"],
		"--cert-dir=" + filepath.Join(c.dir, "certs"),
		"--token-auth-file=" + files["tokens.csv"],
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + files["sa.key"],
		"--service-account-signing-key-file=" + files["sa.key"],
		// Loopback has no real endpoint for the kubernetes Service.
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--profiling=false",
	}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	c.url = "https://127.0.0.1:" + port
	c.admin = &rest.Config{Host: c.url, BearerToken: adminToken, TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		QPS: 200, Burst: 400}
	if c.client, err = kubernetes.NewForConfig(c.admin); err != nil {
		return err
	}
	return c.waitReady(90 * time.Second)
}

// waitReady polls /readyz: the process has no other way to say it is up.
func (c *cluster) waitReady(limit time.Duration) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if c.cmd.ProcessState != nil {
			break
		}
		req, _ := http.NewRequest("GET", c.url+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %s; its log:\n%s", limit, tail(c.log.String(), 4000))
}

// writeCredentials writes the serving certificate (its own CA), the
// service-account signing key and the static token file.
func (c *cluster) writeCredentials() (map[string]string, error) {
	certPEM, keyPEM, err := selfSigned()
	if err != nil {
		return nil, err
	}
	c.caPEM = certPEM
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sa)})
	files := map[string][]byte{
		"tls.crt": certPEM, "tls.key": keyPEM, "sa.key": saPEM,
		"tokens.csv": []byte(adminToken + `,harness-admin,harness-admin,"system:masters"` + "\n"),
	}
	paths := map[string]string{}
	for name, data := range files {
		p := filepath.Join(c.dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return nil, err
		}
		paths[name] = p
	}
	return paths, nil
}

// selfSigned makes a serving certificate for 127.0.0.1 that is its own CA.
func selfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
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

func (c *cluster) stop() {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
}

// apiserverBinary returns kube-apiserver, built from the apiserver module
// (k8s.io/kubernetes at the version its go.mod pins) and cached under the
// user's cache dir by Kubernetes and Go version: later runs skip the build.
func apiserverBinary() (string, time.Duration, error) {
	ver, err := output("go", "list", "-C", "apiserver", "-m", "-f", "{{.Version}}", "k8s.io/kubernetes")
	if err != nil {
		return "", 0, err
	}
	cache := os.Getenv("SERVERLESSD_KUBE_CACHE")
	if cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", 0, err
		}
		cache = filepath.Join(base, "serverlessd-kube")
	}
	bin := filepath.Join(cache, fmt.Sprintf("kube-apiserver-%s-%s", ver, runtime.Version()))
	if _, err := os.Stat(bin); err == nil {
		return bin, 0, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", 0, err
	}
	t0 := time.Now()
	fmt.Fprintf(os.Stderr, "building kube-apiserver %s into %s (minutes, once)\n", ver, cache)
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	if _, err := output("go", "build", "-C", "apiserver", "-trimpath", "-o", tmp, "k8s.io/kubernetes/cmd/kube-apiserver"); err != nil {
		return "", 0, err
	}
	return bin, time.Since(t0), os.Rename(tmp, bin)
}

// output runs a command and returns its trimmed stdout.
func output(name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
