package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// HAProxy is a running haproxy relaying TCP to a unix socket: the reference
// relay serverlessd's proxy is measured against.
type HAProxy struct {
	Addr string
	cmd  *exec.Cmd
}

// StartHAProxy runs haproxy in TCP mode on listen, forwarding to the unix
// socket backend. Its config is the plainest relay: no health checks (they
// would show up as aborted connections in mariadbd's log and steal cycles),
// default threads (one per core), long client/server timeouts.
func StartHAProxy(dir, listen, backendSocket string) (*HAProxy, error) {
	cfg := fmt.Sprintf(`global
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen mysql
    bind %s
    server db %s
`, listen, backendSocket)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	// -db: stay in the foreground, so the child is haproxy itself and a
	// kill of its pid stops it.
	cmd := exec.Command("haproxy", "-db", "-f", path)
	logf, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start haproxy: %w", err)
	}
	h := &HAProxy{Addr: listen, cmd: cmd}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", listen); err == nil {
			c.Close()
			return h, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.Stop()
	return nil, fmt.Errorf("haproxy did not listen on %s (see %s)", listen, filepath.Join(dir, "haproxy.log"))
}

// Stop ends haproxy.
func (h *HAProxy) Stop() {
	if h == nil || h.cmd.Process == nil {
		return
	}
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait()
}

// PID is haproxy's process id (for its CPU time).
func (h *HAProxy) PID() int { return h.cmd.Process.Pid }
