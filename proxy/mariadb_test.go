package proxy

// A throwaway mariadbd for the tests, until compute/local can start one.
// It is deliberately small: install a datadir, run mariadbd on a unix
// socket plus a loopback TCP port, create users. Missing binaries FAIL.

import (
	"database/sql"
	"fmt"
	mdb "github.com/serverlessd/serverlessd/compute/mariadb"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql"
)

type mariadb struct {
	dir  string
	sock string
	port int
	cmd  *exec.Cmd
	exit chan error
}

// startMariaDB installs a datadir under dir and runs mariadbd on it.
func startMariaDB(dir string) (*mariadb, error) {
	for _, bin := range []string{"mariadbd", "mariadb-install-db"} {
		if _, err := lookBin(bin); err != nil {
			return nil, fmt.Errorf("%s not found (install mariadb-server): %w", bin, err)
		}
	}
	data := filepath.Join(dir, "data")
	install := exec.Command("mariadb-install-db", "--no-defaults", "--user=root", "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db")
	if out, err := install.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb-install-db: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &mariadb{dir: dir, sock: filepath.Join(dir, "mysqld.sock"), port: port, exit: make(chan error, 1)}
	bin, _ := lookBin("mariadbd")
	args := []string{"--no-defaults", "--user=root", "--datadir=" + data,
		"--socket=" + m.sock, fmt.Sprintf("--port=%d", port), "--bind-address=127.0.0.1",
		"--skip-name-resolve", "--max-connections=2000", "--max-allowed-packet=64M",
		"--innodb-buffer-pool-size=64M", "--local-infile=1", "--skip-log-bin",
		"--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
		"--log-error=" + filepath.Join(dir, "error.log"), "--pid-file=" + filepath.Join(dir, "mysqld.pid")}
	for _, o := range mdb.SessionOptions { // as computes run
		args = append(args, "--"+o)
	}
	m.cmd = exec.Command(bin, args...)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { m.exit <- m.cmd.Wait() }()
	if err := m.waitReady(30 * time.Second); err != nil {
		m.stop()
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return nil, fmt.Errorf("%w\n%s", err, log)
	}
	return m, nil
}

// lookBin finds a binary in PATH or the sbin directories Debian uses.
func lookBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (m *mariadb) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-m.exit:
			return fmt.Errorf("mariadbd exited: %v", err)
		default:
		}
		if db, err := m.admin(); err == nil {
			err = db.Ping()
			db.Close()
			if err == nil {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("mariadbd not ready after %s", timeout)
}

// admin opens root over the unix socket (root has no password here).
func (m *mariadb) admin() (*sql.DB, error) {
	return sql.Open("mysql", "root@unix("+m.sock+")/?multiStatements=true")
}

// exec runs administrative statements.
func (m *mariadb) exec(stmts ...string) error {
	db, err := m.admin()
	if err != nil {
		return err
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// unixAddr and tcpAddr are the addresses a Waker hands the proxy.
func (m *mariadb) unixAddr() string { return "unix:" + m.sock }
func (m *mariadb) tcpAddr() string  { return fmt.Sprintf("127.0.0.1:%d", m.port) }

// kill stops mariadbd at once (SIGKILL), as a crash would.
func (m *mariadb) kill() {
	m.cmd.Process.Kill()
	<-m.exit
	m.exit <- nil
}

// stop shuts mariadbd down cleanly, killing it after 20s.
func (m *mariadb) stop() {
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exit:
	case <-time.After(20 * time.Second):
		m.cmd.Process.Kill()
		<-m.exit
	}
	m.exit <- nil
}

// createUsers creates '%' users with native passwords and full rights on
// the test databases.
func (m *mariadb) createUsers(users map[string]string) error {
	stmts := []string{"CREATE DATABASE IF NOT EXISTS app"}
	for u, pw := range users {
		q := strings.ReplaceAll(u, "'", "''")
		stmts = append(stmts,
			fmt.Sprintf("CREATE USER IF NOT EXISTS '%s'@'%%' IDENTIFIED BY '%s'", q, pw),
			fmt.Sprintf("GRANT ALL ON *.* TO '%s'@'%%'", q))
	}
	return m.exec(stmts...)
}
