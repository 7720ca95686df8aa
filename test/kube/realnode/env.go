//go:build linux && realnode

package realnode

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// apiserverModule is the module that exists only to build Kubernetes
// binaries (its go.mod has a tool line for each): the harness's module
// embeds etcd server v3.6 and Kubernetes needs the v3.7 client modules.
const apiserverModule = "../apiserver"

// kubeCommands are the Kubernetes binaries a real node runs.
var kubeCommands = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"}

// env is a running one-node cluster, shared by the tests of a run.
type env struct {
	dir     string
	cluster *cluster
	node    *node
	images  *images
	host    *hostState
	stopBg  context.CancelFunc // the provisioner
	down    sync.Once
	// daemonKubeconfig's file, once made: the objects it applied stay
	// until undeploy deletes the namespace.
	kubeconfig string
}

// bringUp brings up the node from nothing: packages, binaries, images,
// control plane, node, volume provisioner. On an error the env returned
// holds what was started, for teardown.
func bringUp(logf func(string, ...any)) (*env, error) {
	if err := sweepLeftovers(logf); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := ensurePackages(); err != nil {
		return nil, err
	}
	k, err := kubetest.LocateKubernetes(apiserverModule)
	if err != nil {
		return nil, err
	}
	bins, err := k.Binaries(kubeCommands, logf)
	if err != nil {
		return nil, err
	}
	// A short path in /tmp: containerd's socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "realnode-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir}
	if e.host, err = recordHost(dir); err != nil {
		return e, err
	}
	e.catchSignals()
	logf("packages and binaries ready in %s", time.Since(t0).Round(100*time.Millisecond))

	t1 := time.Now()
	if e.images, err = buildImages(k.Cache, filepath.Join(dir, "images"), k.Version, logf); err != nil {
		return e, err
	}
	logf("images ready in %s", time.Since(t1).Round(100*time.Millisecond))

	t2 := time.Now()
	ip, err := nodeIP()
	if err != nil {
		return e, err
	}
	if e.cluster, err = startCluster(bins, filepath.Join(dir, "control-plane"), filepath.Join(dir, "logs"), ip); err != nil {
		return e, err
	}
	logf("control plane up on %s in %s", e.cluster.url, time.Since(t2).Round(100*time.Millisecond))
	t3 := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	e.stopBg = cancel
	if e.node, err = startNode(ctx, e.cluster, bins, e.images, filepath.Join(dir, "node"), logf); err != nil {
		return e, err
	}
	logf("node Ready in %s; cluster up in %s", time.Since(t3).Round(100*time.Millisecond), time.Since(t2).Round(100*time.Millisecond))
	if err := startProvisioner(ctx, e.cluster.client, filepath.Join(dir, "volumes"), e.cluster.logDir); err != nil {
		return e, err
	}
	return e, nil
}

// catchSignals tears down on SIGINT and SIGTERM: a run killed harder is
// cleaned up by the next one.
func (e *env) catchSignals() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "realnode: %s: tearing down\n", s)
		_ = e.teardown(true)
		os.Exit(1)
	}()
}

// teardown stops everything, restores the host and checks it. It keeps
// the run's folder (logs in logs/) after a failure or with REALNODE_KEEP.
func (e *env) teardown(failed bool) error {
	var err error
	e.down.Do(func() {
		t1 := time.Now()
		if e.stopBg != nil {
			e.stopBg()
		}
		e.node.stop()
		if e.cluster != nil {
			e.cluster.stop()
		}
		if e.host != nil {
			if err = e.host.restore(); err != nil {
				err = fmt.Errorf("restore the host: %w", err)
			} else {
				err = e.host.verify()
			}
		}
		if failed || err != nil || os.Getenv("REALNODE_KEEP") != "" {
			// Keep the logs; the next run's sweep finds nothing to undo.
			_ = os.Remove(filepath.Join(e.dir, stateFile))
			fmt.Fprintf(os.Stderr, "realnode: logs kept in %s\n", filepath.Join(e.dir, "logs"))
		} else {
			_ = os.RemoveAll(e.dir)
		}
		fmt.Fprintf(os.Stderr, "realnode: teardown took %s\n", time.Since(t1).Round(100*time.Millisecond))
	})
	return err
}
