package kube

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// mariadbd is one database server the node runs for a Pod: a real
// /usr/sbin/mariadbd over the folder that stands for the Pod's PVC.
type mariadbd struct {
	ip      string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// podEnv is what the harness honours of a Pod's mariadb container, as the
// driver's start script (compute/kubernetes/start.sh) reads it.
type podEnv struct {
	datadir  string   // SERVERLESSD_DATADIR, in the container
	volume   string   // SERVERLESSD_VOLUME: where the claim is mounted
	password string   // SERVERLESSD_ADMIN_PASSWORD
	initSQL  string   // SERVERLESSD_INIT_SQL, @PASSWORD@ standing for the password
	args     []string // container args: mariadbd options
}

var (
	templateOnce sync.Once
	templateDir  string
	templateErr  error
)

// template returns a datadir made once by mariadb-install-db, which each new
// volume copies: install-db takes seconds, a copy milliseconds.
func template(base string) (string, error) {
	templateOnce.Do(func() {
		dir := filepath.Join(base, "template")
		out, err := exec.Command("mariadb-install-db", "--no-defaults", "--user=root", "--datadir="+dir,
			"--skip-test-db", "--auth-root-authentication-method=socket").CombinedOutput()
		if err != nil {
			templateErr = fmt.Errorf("mariadb-install-db: %w\n%s", err, out)
			return
		}
		templateDir = dir
	})
	return templateDir, templateErr
}

// initialize does what the start script does before mariadbd: an empty
// datadir gets the system tables, and every start gets the init file that
// re-creates the daemon's account.
func initialize(base, datadir string, env podEnv) (initFile string, err error) {
	if env.password == "" || env.initSQL == "" {
		return "", fmt.Errorf("pod env lacks SERVERLESSD_ADMIN_PASSWORD or SERVERLESSD_INIT_SQL")
	}
	if _, err := os.Stat(filepath.Join(datadir, "mysql")); err != nil {
		tpl, err := template(base)
		if err != nil {
			return "", err
		}
		if err := os.MkdirAll(datadir, 0o700); err != nil {
			return "", err
		}
		if out, err := exec.Command("cp", "-a", tpl+"/.", datadir).CombinedOutput(); err != nil {
			return "", fmt.Errorf("copy template datadir: %w\n%s", err, out)
		}
	}
	initFile = datadir + ".init.sql"
	sql := strings.ReplaceAll(env.initSQL, "@PASSWORD@", env.password)
	return initFile, os.WriteFile(initFile, []byte(sql), 0o600)
}

// quote escapes a string for a single-quoted SQL literal.
func quote(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
}

// startMariadbd runs mariadbd on ip:3306 over datadir, with the container's
// args, and returns once the port accepts connections (the readiness probe
// is a TCP check).
func startMariadbd(datadir, runDir, ip, initFile string, env podEnv) (*mariadbd, error) {
	m := &mariadbd{ip: ip, logPath: filepath.Join(runDir, "error.log"), done: make(chan struct{})}
	args := []string{
		"--no-defaults", "--user=root", "--datadir=" + datadir,
		"--bind-address=" + ip, "--port=3306",
		"--socket=" + filepath.Join(runDir, "sock"), "--pid-file=" + filepath.Join(runDir, "pid"),
		"--log-error=" + m.logPath, "--innodb-log-file-size=16M",
	}
	if initFile != "" {
		args = append(args, "--init-file="+initFile)
	}
	args = append(args, env.args...)
	m.cmd = exec.Command("/usr/sbin/mariadbd", args...)
	var out bytes.Buffer
	m.cmd.Stdout, m.cmd.Stderr = &out, &out
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		m.err = m.cmd.Wait()
		close(m.done)
	}()
	if err := m.waitListening(60 * time.Second); err != nil {
		m.kill()
		log, _ := os.ReadFile(m.logPath)
		return nil, fmt.Errorf("mariadbd on %s: %w\n%s%s", ip, err, out.String(), kubetest.Tail(string(log), 3000))
	}
	return m, nil
}

func (m *mariadbd) waitListening(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-m.done:
			return fmt.Errorf("exited: %v", m.err)
		default:
		}
		if greets(net.JoinHostPort(m.ip, "3306")) {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("not listening after %s", limit)
}

// greets reports whether addr sends a MySQL greeting. The TCP port opens
// before mariadbd has run its init file and serves; a greeting comes after.
func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var hdr [5]byte
	_, err = io.ReadFull(c, hdr[:])
	return err == nil && hdr[4] == 10
}

// stop sends SIGTERM (InnoDB flushes) and SIGKILL past grace, as kubelet does.
func (m *mariadbd) stop(grace time.Duration) {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(grace):
		m.kill()
	}
}

func (m *mariadbd) kill() {
	_ = m.cmd.Process.Kill()
	<-m.done
}
