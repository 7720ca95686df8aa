//go:build linux && realnode

package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

const (
	// bridgeName is the CNI bridge: not cni0, so as not to touch a bridge
	// some other CNI setup of the host may own.
	bridgeName = "realnode0"
	cniBinDir  = "/usr/lib/cni" // Debian's containernetworking-plugins
)

// node is the cluster's one node: containerd, the kubelet and kube-proxy,
// each with its state in the node's folder and not in /var/lib.
type node struct {
	dir, logDir, ip string
	sock            string // containerd's socket
	containerd      *proc
	kubelet         *proc
	kubeletBin      string
	proxy           *proc
	extra           []*proc // started by tests on the node (kube-router)
}

// startNode starts containerd, imports the images, starts the kubelet and
// kube-proxy and waits until the Node is Ready.
func startNode(ctx context.Context, c *cluster, bins map[string]string, im *images, dir string, logf func(string, ...any)) (*node, error) {
	n := &node{dir: dir, logDir: c.logDir, ip: c.ip, sock: filepath.Join(dir, "containerd", "containerd.sock")}
	for _, d := range []string{"cni/net.d", "containerd", "kubelet", "pod-logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	if err := n.startContainerd(); err != nil {
		return n, err
	}
	for _, ref := range []string{pauseImage, mariadbImage} {
		if _, err := kubetest.Output("ctr", "--address", n.sock, "-n", "k8s.io", "images", "import", im.archives[ref]); err != nil {
			return n, err
		}
	}
	logf("containerd up and images imported in %s", time.Since(t0).Round(100*time.Millisecond))
	n.kubeletBin = bins["kubelet"]
	if err := n.startKubelet(c, n.kubeletBin); err != nil {
		return n, err
	}
	if err := n.startProxy(c, bins["kube-proxy"]); err != nil {
		return n, err
	}
	return n, n.waitReady(ctx, c, 2*time.Minute)
}

// waitReady waits until the kubelet has reported the Node Ready and the
// node controller has lifted the taints of a node that was not, which it
// does up to a monitor period later: until then no Pod is scheduled.
func (n *node) waitReady(ctx context.Context, c *cluster, limit time.Duration) error {
	err := kubetest.WaitFor(limit, 200*time.Millisecond, "node Ready", func() (bool, error) {
		if n.kubelet.exited() {
			return false, kubetest.Abort(fmt.Errorf("kubelet exited"))
		}
		nd, err := c.client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, t := range nd.Spec.Taints {
			if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
				return false, fmt.Errorf("tainted %s", t.Key)
			}
		}
		ready := nodeReady(nd)
		return ready == corev1.ConditionTrue, fmt.Errorf("Ready=%s", ready)
	})
	if err != nil {
		return fmt.Errorf("%w\nkubelet log:\n%s", err, n.kubelet.tailLog(5000))
	}
	return nil
}

// startContainerd writes a configuration that keeps every file of
// containerd in the node's folder (root, state, socket, runc's state, the
// Pods' network namespaces) and starts it.
func (n *node) startContainerd() error {
	d := filepath.Join(n.dir, "containerd")
	cni := filepath.Join(n.dir, "cni")
	// A bridge with host-local IPAM: the node's Pod range, the bridge as
	// the Pods' gateway (isGateway gives the host a route to Pod IPs: the
	// test dials them) and masquerading of what leaves the range. No
	// portmap plugin: no Pod uses hostPort.
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "realnode",
  "plugins": [{
    "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true, "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}],
             "dataDir": %q}
  }]
}
`, bridgeName, podCIDR, filepath.Join(cni, "ipam"))
	if err := os.WriteFile(filepath.Join(cni, "net.d", "10-realnode.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	// containerd 1.6 (Debian 12) reads version 2 configurations.
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
# opt makes /opt/containerd; the others find nothing on this machine.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %[3]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[4]q
  # Not /var/run/netns.
  netns_mounts_under_state_dir = true
  # The sandbox's oom_score_adj is -998 (Guaranteed containers' -997): a
  # host whose bounding set lacks CAP_SYS_RESOURCE (this VM's) cannot lower
  # it below 0, and runc's nsexec dies with only "can't get final child's
  # PID from pipe: EOF" to show. This caps them at containerd's own (0).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # The kubelet's cgroupDriver is cgroupfs: they must agree.
        SystemdCgroup = false
        # runc's state, not /run/containerd/runc.
        Root = %[5]q
        # REALNODE_RUNC (a wrapper that logs, say) or /usr/sbin/runc.
        BinaryName = %[8]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
    max_conf_num = 1
`, filepath.Join(d, "root"), filepath.Join(d, "state"), n.sock, pauseImage,
		filepath.Join(d, "runc"), cniBinDir, filepath.Join(cni, "net.d"), runcBinary())
	cfg := filepath.Join(d, "config.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return err
	}
	var err error
	if n.containerd, err = startProc(n.logDir, "containerd", "containerd", "--config", cfg); err != nil {
		return err
	}
	err = kubetest.WaitFor(30*time.Second, 100*time.Millisecond, "containerd", func() (bool, error) {
		if n.containerd.exited() {
			return false, fmt.Errorf("containerd exited")
		}
		_, err := kubetest.Output("ctr", "--address", n.sock, "version")
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("%w\ncontainerd log:\n%s", err, n.containerd.tailLog(3000))
	}
	return nil
}

// runcBinary is runc, or what REALNODE_RUNC names: a wrapper that logs
// runc's arguments and bundle helps when runc fails without a reason.
func runcBinary() string {
	if r := os.Getenv("REALNODE_RUNC"); r != "" {
		return r
	}
	return "/usr/sbin/runc"
}

// startKubelet writes a KubeletConfiguration and starts the kubelet.
func (n *node) startKubelet(c *cluster, bin string) error {
	kubeconfig, err := c.kubeconfig("kubelet")
	if err != nil {
		return err
	}
	port, err := kubetest.FreePort(n.ip)
	if err != nil {
		return err
	}
	healthz, err := kubetest.FreePort("127.0.0.1")
	if err != nil {
		return err
	}
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# containerd runs runc with cgroupfs (SystemdCgroup = false); this host has
# no systemd anyway. The host is cgroup v1, which the kubelet refuses
# unless failCgroupV1 is false.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[1]s
imageServiceEndpoint: unix://%[1]s
address: %[2]s
port: %[3]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[4]s
# Nobody but the API server calls the kubelet (logs, exec), and it sends
# no client certificate: refuse everyone else.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[5]q}
authorization: {mode: AlwaysAllow}
podLogsDir: %[6]q
# No cluster DNS: Pods of the test reach everything by IP. ClusterFirst
# Pods fall back to the host's resolv.conf.
# The image GC would remove the pause image, which nothing can pull again.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# A test machine's disk or memory may be fuller than the defaults allow.
evictionHard: {memory.available: "50Mi", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%"}
serializeImagePulls: false
shutdownGracePeriod: 0s
# Renewed every quarter of it (3 s): the controller manager's short node
# monitor grace period then marks a stopped kubelet's node Unknown fast.
nodeLeaseDurationSeconds: 12
`, n.sock, n.ip, port, healthz, c.files["ca.crt"], filepath.Join(n.dir, "pod-logs"))
	cfg := filepath.Join(n.dir, "kubelet-config.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return err
	}
	n.kubelet, err = startProc(n.logDir, "kubelet", bin,
		"--config="+cfg, "--kubeconfig="+kubeconfig,
		"--root-dir="+filepath.Join(n.dir, "kubelet"),
		"--hostname-override="+nodeName, "--node-ip="+n.ip, "--v=2")
	return err
}

// startProxy starts kube-proxy in iptables mode: it makes the Service IPs
// (10.0.0.1 for the API server) reach their endpoints from Pods and host.
func (n *node) startProxy(c *cluster, bin string) error {
	kubeconfig, err := c.kubeconfig("kube-proxy")
	if err != nil {
		return err
	}
	metrics, err := kubetest.FreePort("127.0.0.1")
	if err != nil {
		return err
	}
	config := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: ""
metricsBindAddress: 127.0.0.1:%s
mode: iptables
clusterCIDR: %s
# localhostNodePorts would set net.ipv4.conf.all.route_localnet.
iptables: {localhostNodePorts: false}
# Zero leaves the host's conntrack sysctls as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
oomScoreAdj: 0
`, kubeconfig, nodeName, n.ip, metrics, podCIDR)
	cfg := filepath.Join(n.dir, "kube-proxy-config.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return err
	}
	n.proxy, err = startProc(n.logDir, "kube-proxy", bin, "--config="+cfg, "--v=2")
	return err
}

// stop stops kube-proxy and the kubelet, kills every container and stops
// containerd. The kubelet does not stop containers when it exits, so the
// containers are killed through their cgroups and the shims by their
// socket address (they daemonize: no process group holds them).
func (n *node) stop() {
	if n == nil {
		return
	}
	for _, p := range n.extra {
		p.stop(10 * time.Second)
	}
	n.proxy.stop(10 * time.Second)
	n.kubelet.stop(10 * time.Second)
	killPodProcesses()
	killShims(n.sock)
	if n.containerd != nil {
		n.containerd.stop(10 * time.Second)
	}
}

// logs returns the tail of each node process's log, for a failure.
func (n *node) logs() string {
	var b strings.Builder
	for _, p := range []*proc{n.containerd, n.kubelet, n.proxy} {
		if p != nil {
			fmt.Fprintf(&b, "--- %s (%s)\n%s\n", p.name, p.log, p.tailLog(3000))
		}
	}
	return b.String()
}

// nodeReady is a Node's Ready condition status (Unknown when it has none).
func nodeReady(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// killKubelet SIGKILLs the kubelet, as when a node is cut off from the
// control plane: its containers go on running, its heartbeats stop.
func (n *node) killKubelet() {
	_ = syscall.Kill(-n.kubelet.cmd.Process.Pid, syscall.SIGKILL)
	<-n.kubelet.done
}

// restartKubelet starts the kubelet again on the node's state and waits
// until the Node is Ready. The kubelet then stops by itself the containers
// of Pods the API server no longer has (those force-deleted meanwhile).
func (n *node) restartKubelet(ctx context.Context, c *cluster) error {
	if err := n.startKubelet(c, n.kubeletBin); err != nil {
		return err
	}
	return n.waitReady(ctx, c, 2*time.Minute)
}
