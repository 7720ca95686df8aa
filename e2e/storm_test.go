package e2e

import (
	"database/sql"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/go-sql-driver/mysql"
)

func (d *daemon) login(user, pw string) error {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = user, pw, "tcp", d.proxy
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	var one int
	return db.QueryRow("SELECT 1").Scan(&one)
}

// logins runs n concurrent logins and returns the errors.
func (d *daemon) logins(n int, user, pw string) []error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	gate := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-gate
			if err := d.login(user, pw); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	close(gate)
	wg.Wait()
	return errs
}

func (d *daemon) starts(t *testing.T, project string) int {
	t.Helper()
	var ops struct {
		Operations []struct{ Action string } `json:"operations"`
	}
	if code := d.getJSON("/api/v1/projects/"+project+"/operations?limit=1000", &ops); code != http.StatusOK {
		t.Fatalf("operations: HTTP %d", code)
	}
	n := 0
	for _, op := range ops.Operations {
		if op.Action == "start" {
			n++
		}
	}
	return n
}

// TestWakeStorm: 200 concurrent logins to a suspended project all succeed
// and start it once.
func TestWakeStorm(t *testing.T) {
	d := startDaemon(t, "")
	var p projectOut
	d.cliJSON(&p, "project", "create", "storm", "--memory", "128Mi")
	d.mustCLI("compute", "suspend", "storm")
	before := d.starts(t, "storm")
	if errs := d.logins(200, p.Role.MySQLUser, p.Role.Password); len(errs) > 0 {
		t.Fatalf("%d of 200 logins failed; first: %v", len(errs), errs[0])
	}
	if got := d.starts(t, "storm") - before; got != 1 {
		t.Fatalf("%d starts for 200 concurrent logins, want 1", got)
	}
}

// TestLoginsDuringSuspend: logins that arrive while the compute is being
// suspended wait, then resume it; none fails.
func TestLoginsDuringSuspend(t *testing.T) {
	d := startDaemon(t, "")
	var p projectOut
	d.cliJSON(&p, "project", "create", "racing", "--memory", "128Mi")
	for round := range 5 {
		var wg sync.WaitGroup
		var suspendErr error
		wg.Go(func() { _, suspendErr = d.cli("compute", "suspend", "racing") })
		// Fire the logins once the suspend is under way. (A session that
		// logged in before it began is cut by it, as an API suspend means.)
		for {
			var c computeOut
			d.getJSON("/api/v1/projects/racing/compute", &c)
			if c.Compute.State == "suspending" || c.Compute.State == "suspended" {
				break
			}
		}
		errs := d.logins(20, p.Role.MySQLUser, p.Role.Password)
		wg.Wait()
		if suspendErr != nil {
			t.Fatalf("round %d: suspend: %v", round, suspendErr)
		}
		if len(errs) > 0 {
			t.Fatalf("round %d: %d of 20 logins during a suspend failed; first: %v", round, len(errs), errs[0])
		}
		if err := d.login(p.Role.MySQLUser, p.Role.Password); err != nil {
			t.Fatal(fmt.Errorf("round %d: login after the race: %w", round, err))
		}
	}
}

// TestRefusalsDoNotWake: a wrong password, an unknown role, an unknown
// project and a malformed handshake leave a suspended compute suspended.
func TestRefusalsDoNotWake(t *testing.T) {
	d := startDaemon(t, "")
	var p projectOut
	d.cliJSON(&p, "project", "create", "quiet", "--memory", "128Mi")
	d.mustCLI("compute", "suspend", "quiet")
	for _, user := range []struct{ name, pw string }{
		{"quiet.root", "wrong"}, {"quiet.ghost", p.Role.Password}, {"ghost.root", p.Role.Password}, {"noproject", "x"},
	} {
		if err := d.login(user.name, user.pw); err == nil {
			t.Fatalf("login as %s succeeded", user.name)
		}
	}
	conn, err := netDial(d.proxy)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	_, _ = conn.Read(buf)                                                           // the greeting
	_, _ = conn.Write([]byte{0x05, 0x00, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff}) // garbage
	_, _ = conn.Read(buf)
	conn.Close()
	var c computeOut
	d.cliJSON(&c, "compute", "get", "quiet")
	if c.Compute.State != "suspended" {
		t.Fatalf("refused logins woke the compute: %s", c.Compute.State)
	}
	if got := d.starts(t, "quiet"); got != 1 { // the creation's start only
		t.Fatalf("%d starts, want only the creation's", got)
	}
}
