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
// official image's entrypoint reads it when the datadir is empty.
type podEnv struct {
	rootPassword string
	rootHost     string
	user         string
	password     string
	initSQL      []string // the contents of /docker-entrypoint-initdb.d/*.sql
	args         []string // container args: mariadbd options
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

// initialize fills an empty datadir the way the image's entrypoint does:
// system tables, then an init file that sets the root password, creates
// MARIADB_USER and runs the init scripts. The file runs at the first start.
func initialize(base, datadir string, env podEnv) (initFile string, err error) {
	if _, err := os.Stat(filepath.Join(datadir, "mysql")); err == nil {
		return "", nil // initialized before: the entrypoint does nothing
	}
	tpl, err := template(base)
	if err != nil {
		return "", err
	}
	if out, err := exec.Command("cp", "-a", tpl+"/.", datadir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copy template datadir: %w\n%s", err, out)
	}
	if env.rootPassword == "" || env.user == "" || env.password == "" {
		return "", fmt.Errorf("pod env lacks MARIADB_ROOT_PASSWORD, MARIADB_USER or MARIADB_PASSWORD")
	}
	sql := []string{
		"DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1'",
		fmt.Sprintf("ALTER USER 'root'@'localhost' IDENTIFIED BY '%s'", quote(env.rootPassword)),
	}
	if env.rootHost != "" && env.rootHost != "localhost" {
		sql = append(sql, fmt.Sprintf("CREATE USER 'root'@'%s' IDENTIFIED BY '%s'", quote(env.rootHost), quote(env.rootPassword)),
			fmt.Sprintf("GRANT ALL ON *.* TO 'root'@'%s' WITH GRANT OPTION", quote(env.rootHost)))
	}
	sql = append(sql, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", quote(env.user), quote(env.password)))
	var b strings.Builder
	for _, s := range sql {
		b.WriteString(s + ";\n")
	}
	for _, s := range env.initSQL {
		b.WriteString(s + "\n")
	}
	initFile = datadir + ".init.sql"
	return initFile, os.WriteFile(initFile, []byte(b.String()), 0o600)
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
		return nil, fmt.Errorf("mariadbd on %s: %w\n%s%s", ip, err, out.String(), tail(string(log), 3000))
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
