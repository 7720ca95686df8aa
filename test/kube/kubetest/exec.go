package kubetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Output runs a command and returns its trimmed stdout; its error has the
// end of the command's stderr.
func Output(name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, Tail(stderr.String(), 3000))
	}
	return strings.TrimSpace(string(out)), nil
}

// Terminate sends p SIGTERM and waits until exited is closed (by the
// goroutine that waits for p); after grace it sends SIGKILL and waits
// again. It reports whether p exited on SIGTERM within grace.
func Terminate(p *os.Process, exited <-chan struct{}, grace time.Duration) bool {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return true
	case <-time.After(grace):
		_ = p.Kill()
		<-exited
		return false
	}
}

// FreePort returns a port of host that was free a moment ago. Another
// process may take it before the caller listens: use it at once.
func FreePort(host string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

// Tail returns the last n bytes of s, marked as cut when it is.
func Tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
