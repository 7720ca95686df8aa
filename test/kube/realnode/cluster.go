//go:build linux && realnode

package realnode

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
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
// kube-controller-manager and kube-scheduler as child processes. What it
// shares with the harness's (test/kube/cluster_test.go) is in kubetest.
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
	var err error
	if c.etcd, err = kubetest.StartEtcd(filepath.Join(dir, "etcd")); err != nil {
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

// startAPIServer runs kube-apiserver on the node's address, so that the
// kubelet and Pods reach it, and waits for /readyz.
func (c *cluster) startAPIServer(bin string) error {
	if err := c.writeCredentials(); err != nil {
		return err
	}
	port, err := kubetest.FreePort(c.ip)
	if err != nil {
		return err
	}
	// The advertised address (the node's, as the bind address) is the
	// endpoint of the kubernetes Service (the default lease endpoint
	// reconciler writes it): kube-proxy DNATs 10.0.0.1:443 to it, so
	// in-cluster clients reach this port.
	args := append(kubetest.APIServerFlags(c.etcd, c.ip, port, c.dir, c.files, serviceCIDR),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		// For logs and exec: the kubelet serves a self-signed certificate
		// on the node's address.
		"--kubelet-preferred-address-types=InternalIP")
	p, err := startProc(c.logDir, "kube-apiserver", bin, args...)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	c.url = "https://" + net.JoinHostPort(c.ip, port)
	if c.admin, c.client, err = kubetest.AdminClient(c.url, c.tokens["admin"], c.caPEM); err != nil {
		return err
	}
	if err := kubetest.WaitReady(c.url, c.tokens["admin"], c.caPEM, 90*time.Second, p.exited); err != nil {
		return fmt.Errorf("%w; its log:\n%s", err, p.tailLog(4000))
	}
	return nil
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

// writeCredentials writes a CA, the API server's serving certificate, the
// service-account signing key and the static token file, with a random
// token for each of identities. The certificate's names are every way a
// client reaches the API server: the node's address from the host and the
// kubelet, the kubernetes Service's IP and DNS names from Pods.
func (c *cluster) writeCredentials() error {
	c.tokens = map[string]string{}
	var tokens []kubetest.Token
	for i, id := range identities {
		tok := fmt.Sprintf("realnode-%s-%s", id.name, rand.Text())
		c.tokens[id.name] = tok
		tokens = append(tokens, kubetest.Token{Token: tok, User: id.user, UID: fmt.Sprintf("uid%d", i), Groups: id.groups})
	}
	ips := []string{"127.0.0.1", c.ip, apiServiceIP}
	dnsNames := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local"}
	var err error
	c.files, c.caPEM, err = kubetest.WriteCredentials(c.dir, "realnode-ca", ips, dnsNames, tokens)
	return err
}

// kubeconfig writes a kubeconfig for one of identities and returns its path.
func (c *cluster) kubeconfig(identity string) (string, error) {
	path := filepath.Join(c.dir, identity+".kubeconfig")
	k := kubetest.Kubeconfig{Cluster: "realnode", Server: c.url, CAData: c.caPEM, User: identity, Token: c.tokens[identity]}
	return path, k.Write(path)
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
