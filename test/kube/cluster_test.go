package kube

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// cluster is a control plane with no node: etcd in this process and a real
// kube-apiserver as a child process.
type cluster struct {
	dir    string
	etcd   *embed.Etcd
	cmd    *exec.Cmd
	exited chan struct{} // closed once kube-apiserver has exited
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
	var err error
	if c.etcd, err = kubetest.StartEtcd(filepath.Join(dir, "etcd")); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(apiserver); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// startAPIServer runs kube-apiserver on loopback and waits for /readyz.
func (c *cluster) startAPIServer(bin string) error {
	files, caPEM, err := kubetest.WriteCredentials(c.dir, "harness-ca", []string{"127.0.0.1"}, []string{"localhost"},
		[]kubetest.Token{{Token: adminToken, User: "harness-admin", UID: "harness-admin", Groups: "system:masters"}})
	if err != nil {
		return err
	}
	c.caPEM = caPEM
	port, err := kubetest.FreePort("127.0.0.1")
	if err != nil {
		return err
	}
	args := append(kubetest.APIServerFlags(c.etcd, "127.0.0.1", port, c.dir, files, "10.0.0.0/24"),
		"--authorization-mode=RBAC",
		// Loopback has no real endpoint for the kubernetes Service.
		"--endpoint-reconciler-type=none")
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	c.exited = make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	c.url = "https://127.0.0.1:" + port
	if c.admin, c.client, err = kubetest.AdminClient(c.url, adminToken, c.caPEM); err != nil {
		return err
	}
	exited := func() bool { return kubetest.Closed(c.exited) }
	if err := kubetest.WaitReady(c.url, adminToken, c.caPEM, 90*time.Second, exited); err != nil {
		return fmt.Errorf("%w; its log:\n%s", err, kubetest.Tail(c.log.String(), 4000))
	}
	return nil
}

func (c *cluster) stop() {
	if c.exited != nil {
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
}

// apiserverBinary returns kube-apiserver, built from the apiserver module
// and cached (kubetest.Kubernetes.Binaries), and how long it took.
func apiserverBinary() (string, time.Duration, error) {
	k, err := kubetest.LocateKubernetes("apiserver")
	if err != nil {
		return "", 0, err
	}
	t0 := time.Now()
	bins, err := k.Binaries([]string{"kube-apiserver"}, func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "harness: "+format+"\n", args...)
	})
	return bins["kube-apiserver"], time.Since(t0), err
}
