//go:build linux && realnode

package realnode

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// kubeRouterVersion is the NetworkPolicy controller the test runs, so that
// deploy/kubernetes/networkpolicy.yaml is enforced and not only stored:
// the bridge CNI enforces nothing. v2.1.0 has reported security flaws;
// it runs only inside this test, on the node's private bridge, with the
// cluster's own throwaway credentials, and is stopped with the node.
const kubeRouterVersion = "v2.1.0"

// kubeRouterBinary returns kube-router's binary, built with go install at
// kubeRouterVersion (its go.mod has no replace directives) and cached by
// version and Go version, as the Kubernetes binaries are.
func kubeRouterBinary(cache string, logf func(string, ...any)) (string, error) {
	bin := filepath.Join(cache, fmt.Sprintf("kube-router-%s-%s", kubeRouterVersion, runtime.Version()))
	if exists(bin) {
		return bin, nil
	}
	tmp, err := os.MkdirTemp(cache, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	logf("building kube-router %s into %s (minutes, once)", kubeRouterVersion, cache)
	t0 := time.Now()
	cmd := exec.Command("go", "install", "-trimpath",
		"github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@"+kubeRouterVersion)
	// Outside any module: go install pkg@version builds it with its own go.mod.
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install kube-router: %w\n%s", err, kubetest.Tail(string(out), 3000))
	}
	if err := os.Rename(filepath.Join(tmp, "kube-router"), bin); err != nil {
		return "", err
	}
	logf("built kube-router in %s", time.Since(t0).Round(time.Second))
	return bin, nil
}

// startKubeRouter runs kube-router on the host as the node's NetworkPolicy
// controller only: no routing (one node, the bridge routes), no service
// proxy (kube-proxy is), no health or metrics listener. It uses the admin
// kubeconfig: it watches Pods, Namespaces, NetworkPolicies and Nodes, and
// reads its Node (named by --hostname-override) for the node's address.
func (e *env) startKubeRouter(bin string) (*proc, error) {
	kubeconfig, err := e.cluster.kubeconfig("admin")
	if err != nil {
		return nil, err
	}
	p, err := startProc(e.cluster.logDir, "kube-router", bin,
		"--kubeconfig="+kubeconfig, "--hostname-override="+nodeName,
		"--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
		"--health-port=0", "--metrics-port=0",
		"--enable-ipv4=true", "--enable-ipv6=false",
		"--service-cluster-ip-range="+serviceCIDR,
		"--iptables-sync-period=1m", "--v=2")
	if err != nil {
		return nil, err
	}
	e.node.extra = append(e.node.extra, p)
	return p, nil
}

// dialFrom tries a TCP connection to addr from the network namespace of
// the process pid (a Pod's), with bash's /dev/tcp and a timeout: the
// packets leave with the Pod's IP, through the bridge and the host's
// iptables, exactly as the Pod's own would. It returns "" when connected
// and the reason when not.
func dialFrom(pid int, addr string, limit time.Duration) string {
	host, port, _ := strings.Cut(addr, ":")
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%s", host, port)
	cmd := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n",
		"timeout", fmt.Sprintf("%.0f", limit.Seconds()), "bash", "-c", script)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return ""
	}
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 124 {
		return fmt.Sprintf("timed out after %s (dropped)", limit)
	}
	msg := strings.TrimSpace(string(out))
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}

// stopKubeRouter stops kube-router and removes what it put in the host:
// it leaves its chains and ipsets behind when it exits, which would go on
// enforcing the policies of the time. kube-proxy's chains stay.
func (e *env) stopKubeRouter(p *proc) error {
	p.stop(10 * time.Second)
	err := flushChainsMatching("iptables", func(chain string) bool {
		for _, prefix := range []string{"KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-"} {
			if strings.HasPrefix(chain, prefix) {
				return true
			}
		}
		return false
	})
	if err != nil {
		return err
	}
	return e.host.destroyIPSets()
}
