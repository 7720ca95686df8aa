//go:build linux && realnode

package realnode

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// proc is a long-running child (kube-apiserver, kubelet, containerd...)
// whose output goes to a log file in the test dir, kept for failures.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startProc starts bin with args, logging to logDir/name.log. The child is
// the leader of its own process group (stop signals the whole group) and
// gets SIGKILL if the test process dies first, so a crashed run does not
// leave a kubelet behind. containerd's shims escape both: they daemonize,
// which is why cleanup also kills them by their socket address.
func startProc(logDir, name, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, log: filepath.Join(logDir, name+".log"), done: make(chan struct{})}
	// Appended to: a process started again (the kubelet) keeps one log.
	f, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool { return kubetest.Closed(p.done) }

// stop sends SIGTERM to the process group, and SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// tailLog returns the end of the process's log.
func (p *proc) tailLog(n int) string {
	b, _ := os.ReadFile(p.log)
	return kubetest.Tail(string(b), n)
}

// nodeIP is the source address of the default route: the kubelet, the API
// server and Pods (through the bridge's gateway) all reach it, which is not
// true of 127.0.0.1 from inside a Pod.
func nodeIP() (string, error) {
	// A UDP "connection" sends nothing: it only picks the route.
	c, err := net.Dial("udp4", "203.0.113.1:9")
	if err != nil {
		return "", fmt.Errorf("no default route to pick the node's address: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// ptrTo returns a pointer to v (API fields that are optional are pointers).
func ptrTo[T any](v T) *T { return &v }
