package kube

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// The control plane, the node and the daemon binary are shared by the tests
// of this package: starting them is most of a test's cost.
var (
	kube       *cluster
	kubeNode   *node
	driverRC   *rest.Config // the daemon's ServiceAccount
	kubeconfig string       // driverRC as a file, for the daemon
	daemonBin  string       // built on first use: only the daemon test needs it
	buildOnce  sync.Once
	buildErr   error
)

// daemonBinary builds serverlessd from this tree, once.
func daemonBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		t0 := time.Now()
		_, buildErr = kubetest.Output("go", "build", "-C", "../..", "-o", daemonBin, ".")
		fmt.Fprintf(os.Stderr, "harness: serverlessd built in %s\n", time.Since(t0).Round(100*time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return daemonBin
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "serverlessd-kube-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	stop, err := setup(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 1
	}
	code := m.Run()
	stop()
	return code
}

// setup builds what it needs, starts the control plane, applies the
// manifests and starts the node. It logs each step's duration: the cold
// and warm costs of this test are part of its report.
func setup(dir string) (func(), error) {
	t0 := time.Now()
	bin, built, err := apiserverBinary()
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("mariadb-install-db"); err != nil {
		return nil, fmt.Errorf("mariadb-server is not installed (make deps-test installs it): %w", err)
	}
	daemonBin = filepath.Join(dir, "serverlessd")
	t2 := time.Now()
	kube, err = startCluster(bin, dir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	cleanup := func() { cancel(); kube.stop() }
	if err := kube.bootstrap(ctx); err != nil {
		cleanup()
		return nil, err
	}
	if driverRC, err = kube.driverConfig(ctx); err != nil {
		cleanup()
		return nil, err
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(driverRC, kubeconfig); err != nil {
		cleanup()
		return nil, err
	}
	kubeNode = newNode(kube.client, nodeName, filepath.Join(dir, "node"), 2)
	// The first compute's datadir copies this template: make it now, so
	// that a test's timings do not include mariadb-install-db.
	if _, err := template(kubeNode.dir); err != nil {
		cleanup()
		return nil, err
	}
	nodeDone := make(chan struct{})
	go func() { kubeNode.run(ctx); close(nodeDone) }()
	fmt.Fprintf(os.Stderr, "harness: kube-apiserver %s (built in %s), control plane up in %s, setup %s\n",
		bin, built.Round(time.Second), time.Since(t2).Round(100*time.Millisecond), time.Since(t0).Round(100*time.Millisecond))
	return func() { cancel(); <-nodeDone; kube.stop() }, nil
}
