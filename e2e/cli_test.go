package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

type projectOut struct {
	Project struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"project"`
	Role struct {
		Password  string `json:"password"`
		MySQLUser string `json:"mysql_user"`
	} `json:"role"`
	Compute struct {
		Compute struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"compute"`
	} `json:"compute"`
}

type computeOut struct {
	Compute struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"compute"`
}

// TestCLI drives every client command against a running daemon.
func TestCLI(t *testing.T) {
	d := startDaemon(t, "")
	out := d.mustCLI("project", "create", "shop", "--memory", "128Mi")
	for _, want := range []string{"shop.root", "password:", "mariadb -h 127.0.0.1", "active"} {
		if !strings.Contains(out, want) {
			t.Fatalf("project create output lacks %q:\n%s", want, out)
		}
	}
	var p projectOut
	d.cliJSON(&p, "project", "create", "blog", "--memory", "128Mi", "--idle-timeout", "0")
	if p.Project.Name != "blog" || p.Role.Password == "" || p.Compute.Compute.State != "active" {
		t.Fatalf("project create -o json: %+v", p)
	}
	if out := d.mustCLI("project", "list"); !strings.Contains(out, "shop") || !strings.Contains(out, "blog") {
		t.Fatalf("project list:\n%s", out)
	}
	if out := d.mustCLI("project", "get", "blog"); !strings.Contains(out, "idle_timeout:  0s") {
		t.Fatalf("project get:\n%s", out)
	}
	var c computeOut
	d.cliJSON(&c, "compute", "suspend", "shop")
	if c.Compute.State != "suspended" {
		t.Fatalf("compute suspend: %+v", c)
	}
	d.cliJSON(&c, "compute", "resume", "shop")
	if c.Compute.State != "active" {
		t.Fatalf("compute resume: %+v", c)
	}
	if out := d.mustCLI("compute", "get", "shop"); !strings.Contains(out, "active") {
		t.Fatalf("compute get:\n%s", out)
	}
	if out := d.mustCLI("role", "create", "shop", "app"); !strings.Contains(out, "shop.app") {
		t.Fatalf("role create:\n%s", out)
	}
	if out := d.mustCLI("role", "reset-password", "shop", "app"); !strings.Contains(out, "password:") {
		t.Fatalf("role reset-password:\n%s", out)
	}
	if out := d.mustCLI("role", "list", "shop"); !strings.Contains(out, "app") || !strings.Contains(out, "root") {
		t.Fatalf("role list:\n%s", out)
	}
	d.mustCLI("role", "delete", "shop", "app")
	if out := d.mustCLI("operations", "shop"); strings.Count(out, "succeeded") != 4 {
		t.Fatalf("operations (create, start, suspend, start):\n%s", out)
	}
	if out, err := d.cli("project", "create", "Bad_Name"); err == nil || !strings.Contains(out, "invalid project name") {
		t.Fatalf("a bad name must fail with a clear message: %v\n%s", err, out)
	}
	if out, err := d.cli("project", "get", "ghost"); err == nil || !strings.Contains(out, "not_found") {
		t.Fatalf("an unknown project must fail clearly: %v\n%s", err, out)
	}
	if out := d.mustCLI("usage"); !strings.Contains(out, "shop") || !strings.Contains(out, "total") {
		t.Fatalf("usage:\n%s", out)
	}
	if out := d.mustCLI("usage", "shop", "--granularity", "day"); !strings.Contains(out, "COMPUTE SECONDS") {
		t.Fatalf("usage shop:\n%s", out)
	}
	d.mustCLI("compute", "destroy", "blog")
	d.mustCLI("project", "delete", "blog")
	if out := d.mustCLI("version"); !strings.HasPrefix(out, "serverlessd ") {
		t.Fatalf("version: %s", out)
	}
}

// TestKilledDaemonIsAdopted kills serverlessd with -9: its mariadbd keeps
// running, and a new serverlessd adopts it without a second mariadbd on the
// datadir. A SIGTERM then suspends every compute before the daemon exits.
func TestKilledDaemonIsAdopted(t *testing.T) {
	first := startDaemon(t, "")
	var p projectOut
	first.cliJSON(&p, "project", "create", "adopt", "--memory", "128Mi")
	cid := p.Compute.Compute.ID
	pids := mariadbdPIDs(t, cid)
	if len(pids) != 1 {
		t.Fatalf("%d mariadbd for %s, want 1", len(pids), cid)
	}
	first.stop(syscall.SIGKILL)
	if err := syscall.Kill(pids[0], 0); err != nil {
		t.Fatalf("mariadbd died with the daemon: %v", err)
	}

	second := startDaemon(t, first.dataDir)
	var wake struct {
		Address   string `json:"address"`
		ColdStart bool   `json:"cold_start"`
	}
	if code := second.getJSON("/wake_compute?endpointish=adopt", &wake); code != 200 || wake.ColdStart {
		t.Fatalf("wake after adoption: %d %+v\n%s", code, wake, second.log)
	}
	if got := mariadbdPIDs(t, cid); len(got) != 1 || got[0] != pids[0] {
		t.Fatalf("mariadbd pids after adoption %v, want just %d", got, pids[0])
	}

	second.stop(syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for len(mariadbdPIDs(t, cid)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := mariadbdPIDs(t, cid); len(got) > 0 {
		t.Fatalf("mariadbd %v still runs after the daemon's SIGTERM", got)
	}
	third := startDaemon(t, first.dataDir)
	var c computeOut
	third.cliJSON(&c, "compute", "get", "adopt")
	if c.Compute.State != "suspended" {
		t.Fatalf("after a clean shutdown the compute is %s, want suspended", c.Compute.State)
	}
}
