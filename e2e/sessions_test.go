package e2e

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// suspendCycles is how many suspends the pools live through.
const suspendCycles = 20

// fastIdle makes the scheduler look every 200 ms, so that a 1 s
// idle_timeout suspends within about 1.5 s.
const fastIdle = "SERVERLESSD_SCHEDULER_INTERVAL=200ms"

// computeState returns the state of the project's compute.
func (d *daemon) computeState(project string) string {
	var c computeOut
	d.getJSON("/api/v1/projects/"+project+"/compute", &c)
	return c.Compute.State
}

// waitState waits until the project's compute is in state.
func (d *daemon) waitState(t *testing.T, project, state string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if d.computeState(project) == state {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("compute of %s not %s within %s (it is %s); daemon log:\n%s", project, state, within, d.computeState(project), d.log)
}

// linePool is a pool of another language's client, driven by lines: the
// test writes a query, the program runs it on each of its connections and
// answers one line.
type linePool struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
}

func startLinePool(t *testing.T, name string, args ...string) *linePool {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	p := &linePool{name: name, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	if line := p.read(); line != "ready" {
		t.Fatalf("%s did not start: %q\n%s", name, line, stderr.String())
	}
	return p
}

func (p *linePool) read() string {
	if !p.out.Scan() {
		return "EOF"
	}
	return p.out.Text()
}

// query runs q on every connection of the pool and returns their answers.
func (p *linePool) query(q string) []string {
	fmt.Fprintln(p.in, q)
	return strings.Split(p.read(), " | ")
}

// TestPoolsSurviveSuspend: connection pools of three client libraries in
// three languages (Go's database/sql with go-sql-driver, PyMySQL, MariaDB
// Connector/J with server-side prepared statements) stay open while the
// idle scheduler suspends their compute, again and again; every query
// after each suspend succeeds on the same connections, which keep their
// session variables.
func TestPoolsSurviveSuspend(t *testing.T) {
	d := startDaemon(t, "", fastIdle)
	var p projectOut
	d.cliJSON(&p, "project", "create", "pools", "--memory", "128Mi", "--idle-timeout", "1")
	goPool, pools := startPools(t, d, p, false)
	errors := 0
	for cycle := 1; cycle <= suspendCycles; cycle++ {
		d.waitState(t, "pools", "suspended", 15*time.Second)
		want := []string{"1", "2"} // the row count, seen by each connection in turn
		for i, c := range goPool {
			var who string
			var n int
			if err := c.QueryRowContext(context.Background(), "SELECT @who, COUNT(*) FROM t WHERE id <= ?", 2).Scan(&who, &n); err != nil || who != fmt.Sprintf("go%d", i) || n != 2 {
				errors++
				t.Errorf("cycle %d: Go connection %d: %q %d %v", cycle, i, who, n, err)
			}
		}
		for _, lp := range pools {
			for i, got := range lp.query("SELECT CONCAT(@who, ':', COUNT(*)) FROM t") {
				if !strings.HasSuffix(got, ":"+want[1]) || !strings.Contains(got, fmt.Sprint(i)) {
					errors++
					t.Errorf("cycle %d: %s connection %d: %q", cycle, lp.name, i, got)
				}
			}
		}
		if errors > 0 {
			t.Fatalf("%d failed queries after %d suspends; daemon log:\n%s", errors, cycle, d.log)
		}
	}
	var m string
	if _, err := fmt.Sscan(metricValue(t, d, `serverlessd_proxy_session_events_total{event="reattach_cold"}`), &m); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d suspends, 0 failed queries; cold re-attaches: %s", suspendCycles, m)
}

// startPools makes the table app.t of two rows in p, then opens the pools
// of the client libraries of other languages, each of three connections
// marked with @who: PyMySQL and Connector/J, and Perl's DBD::MariaDB too
// with perl; and a Go pool of three.
func startPools(t *testing.T, d *daemon, p projectOut, perl bool) ([]*sql.Conn, []*linePool) {
	t.Helper()
	user, pw := p.Role.MySQLUser, p.Role.Password
	if out, err := d.mariadb(t, user, pw, "-e", "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1),(2)"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	host, port := splitAddr(d.proxy)
	goPool := openGoPool(t, d, user, pw, 3)
	pools := []*linePool{
		startLinePool(t, "PyMySQL", "/usr/bin/python3", filepath.Join("testdata", "pools", "pool.py"), host, port, user, pw),
		startLinePool(t, "Connector/J", "java", "-cp", "/usr/share/java/mariadb-java-client.jar",
			filepath.Join("testdata", "pools", "Pool.java"), host, port, user, pw),
	}
	if perl {
		pools = append(pools, startLinePool(t, "DBD::MariaDB", "perl", filepath.Join("testdata", "pools", "pool.pl"), host, port, user, pw))
	}
	return goPool, pools
}

// openGoPool opens n connections of a database/sql pool and marks each
// with @who.
func openGoPool(t *testing.T, d *daemon, user, pw string, n int) []*sql.Conn {
	t.Helper()
	db := d.openDB(t, user, pw, "app")
	var conns []*sql.Conn
	for i := range n {
		c, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ExecContext(context.Background(), "SET @who := ?", fmt.Sprintf("go%d", i)); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	return conns
}

// metricValue returns one sample's value from /metrics.
func metricValue(t *testing.T, d *daemon, series string) string {
	t.Helper()
	out, err := exec.Command("curl", "-s", "http://"+d.api+"/metrics").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	t.Fatalf("no %s in /metrics", series)
	return ""
}

// TestSessionsAcrossSuspend: what a session holds decides what a suspend
// does. Its variables, character set, user variables and a prepared
// statement survive the idle scheduler's suspend; an open transaction
// keeps the compute up until it ends; a killed mariadbd under an idle
// session is woken again by its next query, and under a pinned one gives
// one clear error.
func TestSessionsAcrossSuspend(t *testing.T) {
	d := startDaemon(t, "", fastIdle)
	var p projectOut
	d.cliJSON(&p, "project", "create", "state", "--memory", "128Mi", "--idle-timeout", "1")
	user, pw := p.Role.MySQLUser, p.Role.Password
	if out, err := d.mariadb(t, user, pw, "-e", "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	conns := openGoPool(t, d, user, pw, 2)
	idle, pinned := conns[0], conns[1]
	ctx := context.Background()
	for _, q := range []string{"SET time_zone = '+05:00'", "SET NAMES utf8mb4 COLLATE utf8mb4_bin", "SET autocommit = 0"} {
		if _, err := idle.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	stmt, err := idle.PrepareContext(ctx, "SELECT CONCAT(@@time_zone, ' ', @@collation_connection, ' ', @@autocommit, ' ', ?)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pinned.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := pinned.ExecContext(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if s := d.computeState("state"); s != "active" {
		t.Fatalf("compute %s with a transaction open", s)
	}
	if _, err := pinned.ExecContext(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	d.waitState(t, "state", "suspended", 15*time.Second)
	var got string
	if err := stmt.QueryRowContext(ctx, "x").Scan(&got); err != nil || got != "+05:00 utf8mb4_bin OFF x" {
		t.Fatalf("session after the suspend: %q %v", got, err)
	}
	var ops struct {
		Operations []struct {
			Action           string `json:"action"`
			DetachedSessions int    `json:"detached_sessions"`
		} `json:"operations"`
	}
	d.getJSON("/api/v1/projects/state/operations", &ops)
	detached := 0
	for _, op := range ops.Operations {
		if op.Action == "suspend" {
			detached = max(detached, op.DetachedSessions)
		}
	}
	if detached != 2 {
		t.Fatalf("the suspend's operation records %d detached sessions, want 2: %+v", detached, ops)
	}

	// kill -9 of mariadbd: the idle session wakes it again; the pinned one
	// (a GET_LOCK held) gets one error naming what it lost.
	if _, err := pinned.ExecContext(ctx, "DO GET_LOCK('l', 1)"); err != nil {
		t.Fatal(err)
	}
	for _, pid := range mariadbdPIDs(t, p.Compute.Compute.ID) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(200 * time.Millisecond)
	if err := stmt.QueryRowContext(ctx, "y").Scan(&got); err != nil || got != "+05:00 utf8mb4_bin OFF y" {
		t.Fatalf("idle session after kill -9: %q %v", got, err)
	}
	_, err = pinned.ExecContext(ctx, "SELECT 1")
	if err == nil || !strings.Contains(err.Error(), "GET_LOCK") {
		t.Fatalf("pinned session after kill -9: %v", err)
	}
}
