package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mariadb runs the Debian mariadb client through the proxy.
func (d *daemon) mariadb(t *testing.T, user, pw string, args ...string) (string, error) {
	t.Helper()
	host, port := splitAddr(d.proxy)
	base := []string{"-h", host, "-P", port, "-u", user, "-p" + pw, "--batch", "--skip-column-names"}
	out, err := exec.Command("mariadb", append(base, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func splitAddr(addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}

// TestUserJourney is what a user does: create a project, log in with the
// mariadb client, cold-login after a suspend, add a role and log in with
// it, fail with a wrong password, run sysbench and the Go driver, delete
// the project (its data folder is gone).
func TestUserJourney(t *testing.T) {
	d := startDaemon(t, "")
	var p projectOut
	d.cliJSON(&p, "project", "create", "journey", "--memory", "256Mi")
	user, pw := p.Role.MySQLUser, p.Role.Password

	out, err := d.mariadb(t, user, pw, "-e", "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (1),(2),(3)")
	if err != nil {
		t.Fatalf("mariadb client through the proxy: %v\n%s", err, out)
	}
	var c computeOut
	d.cliJSON(&c, "compute", "suspend", "journey")
	if c.Compute.State != "suspended" {
		t.Fatalf("suspend: %+v", c)
	}
	if out, err := d.mariadb(t, user, pw, "--ssl", "-e", "SELECT COUNT(*) FROM shop.t"); err != nil || out != "3" {
		t.Fatalf("cold login over TLS after suspend: %v %q", err, out)
	}

	var role struct {
		Credentials struct {
			MySQLUser string `json:"mysql_user"`
			Password  string `json:"password"`
		} `json:"credentials"`
	}
	d.cliJSON(&role, "role", "create", "journey", "app")
	if out, err := d.mariadb(t, role.Credentials.MySQLUser, role.Credentials.Password, "-e", "SELECT CURRENT_USER()"); err != nil || out != "app@%" {
		t.Fatalf("login as a new role: %v %q", err, out)
	}
	if out, err := d.mariadb(t, user, "wrong-password", "-e", "SELECT 1"); err == nil || !strings.Contains(out, "1045") {
		t.Fatalf("a wrong password must be refused with 1045: %v %q", err, out)
	}

	host, port := splitAddr(d.proxy)
	sb := []string{"--db-driver=mysql", "--mysql-host=" + host, "--mysql-port=" + port, "--mysql-user=" + user,
		"--mysql-password=" + pw, "--mysql-db=shop", "--tables=1", "--table-size=1000", "--threads=2", "--time=3", "oltp_read_write"}
	for _, step := range []string{"prepare", "run"} {
		if out, err := exec.Command("sysbench", append(sb, step)...).CombinedOutput(); err != nil || (step == "run" && !strings.Contains(string(out), "transactions:")) {
			t.Fatalf("sysbench %s through the proxy: %v\n%s", step, err, out)
		}
	}

	db := d.openDB(t, user, pw, "shop")
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM sbtest1").Scan(&n); err != nil || n != 1000 {
		t.Fatalf("Go driver through the proxy: n=%d err=%v", n, err)
	}
	db.Close()

	computeDir := filepath.Join(d.dataDir, "computes", p.Compute.Compute.ID)
	if _, err := os.Stat(computeDir); err != nil {
		t.Fatalf("compute folder: %v", err)
	}
	d.mustCLI("project", "delete", "journey")
	if _, err := os.Stat(computeDir); !os.IsNotExist(err) {
		t.Fatalf("the compute folder %s survived the project's deletion: %v", computeDir, err)
	}
	if out, err := d.mariadb(t, user, pw, "-e", "SELECT 1"); err == nil || !strings.Contains(out, "1045") {
		t.Fatalf("login to a deleted project must be refused: %v %q", err, out)
	}
}
