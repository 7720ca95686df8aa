//go:build linux

package kubernetes

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/serverlessd/serverlessd/compute/mariadb"
)

// nobody is the unprivileged user start.sh runs as when the test runs as
// root: in a Pod it runs as the image's mysql user, never as root.
const nobody = 65534

// TestStartScript runs the container's command, start.sh, with the real
// mariadbd and mariadb-install-db of this machine: the first start makes
// the datadir in the volume's folder and creates the daemon's account; a
// second start reuses the datadir and takes the account back from a tenant
// who changed its password; a bad password is refused before anything runs.
func TestStartScript(t *testing.T) {
	if _, err := exec.LookPath("mariadb-install-db"); err != nil {
		t.Fatalf("mariadb-server is not installed (make deps-test installs it): %v", err)
	}
	dir := scriptDir(t)
	volume, run := filepath.Join(dir, "volume"), filepath.Join(dir, "run")
	env := []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"SERVERLESSD_VOLUME=" + volume,
		"SERVERLESSD_DATADIR=" + volume + "/" + datadirName,
		"SERVERLESSD_RUN_DIR=" + run,
		"SERVERLESSD_INIT_SQL=" + initSQL(),
	}
	pw := newPassword()
	sock := filepath.Join(run, "sock")

	stop := runScript(t, append(env, "SERVERLESSD_ADMIN_PASSWORD="+pw), sock)
	waitLogin(t, sock, pw)
	if _, err := os.Stat(filepath.Join(volume, datadirName, "mysql")); err != nil {
		t.Fatalf("no datadir in the volume's folder: %v", err)
	}
	if _, err := os.Stat(filepath.Join(volume, datadirName+".init")); !os.IsNotExist(err) {
		t.Errorf("the initialization folder is left: %v", err)
	}
	db := adminConn(t, sock, pw)
	var guards int
	if err := db.QueryRow("SELECT COUNT(*) FROM mysql.db WHERE User = '' AND Db IN ('mysql', 'sys')").Scan(&guards); err != nil || guards < 2 {
		t.Errorf("schema guard rows: %d, %v; want the init file's", guards, err)
	}
	// A tenant with the admin's password could change it; a restart undoes it.
	if _, err := db.Exec("ALTER USER serverlessd_admin@'%' IDENTIFIED BY 'taken'"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	stop()

	stop = runScript(t, append(env, "SERVERLESSD_ADMIN_PASSWORD="+pw), sock)
	waitLogin(t, sock, pw)
	stop()

	cmd := scriptCmd(append(env, "SERVERLESSD_ADMIN_PASSWORD=x'; DROP USER root; --"), sock)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "must be URL-safe base64") {
		t.Errorf("a password needing quotes: %v %s, want a refusal", err, out)
	}
}

// scriptDir is a folder the unprivileged user may write, on a path it may
// walk.
func scriptDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, sub := range []string{"volume", "run"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() != 0 {
		return dir
	}
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{"volume", "run"} {
		if err := os.Chown(filepath.Join(dir, sub), nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// scriptCmd is start.sh as the container runs it, with mariadbd options
// for a test: a socket, no TCP port, small caches.
func scriptCmd(env []string, sock string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", "-c", startScript, "serverlessd-start",
		"--skip-networking", "--socket="+sock, "--pid-file="+sock+".pid",
		"--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--skip-name-resolve")
	cmd.Env = env
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	return cmd
}

// runScript starts start.sh and returns a func that stops mariadbd as the
// kubelet does (SIGTERM) and waits for it.
func runScript(t *testing.T, env []string, sock string) func() {
	t.Helper()
	cmd := scriptCmd(env, sock)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("mariadbd did not stop on SIGTERM:\n%s", out.String())
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("start.sh output:\n%s", out.String())
		}
	})
	return stop
}

func waitLogin(t *testing.T, sock, pw string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		err := mariadb.Login(ctx, "unix", sock, AdminUser, pw)
		if err == nil {
			return
		}
		if mariadb.IsAccessDenied(err) || ctx.Err() != nil {
			t.Fatalf("admin login: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func adminConn(t *testing.T, sock, pw string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", AdminUser+":"+pw+"@unix("+sock+")/")
	if err != nil {
		t.Fatal(err)
	}
	return db
}
