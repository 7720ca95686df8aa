package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sameRole counts the backend connections of the querying role.
const sameRole = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = SUBSTRING_INDEX(USER(), '@', 1)"

// TestTransactionPoolingClients: pools of four client libraries in four
// languages (Go's database/sql, PyMySQL, MariaDB Connector/J with
// server-side prepared statements, Perl DBI on DBD::MariaDB) work
// unchanged on a project in transaction mode with a pool of 2 backend
// connections: twelve client connections keep their own user variables,
// the compute never has more than 2 connections of the role, and the
// pools live through suspends by the idle scheduler.
func TestTransactionPoolingClients(t *testing.T) {
	d := startDaemon(t, "", fastIdle)
	var p projectOut
	d.cliJSON(&p, "project", "create", "txpool", "--memory", "128Mi", "--idle-timeout", "1", "--pool-mode", "transaction")
	if out := d.mustCLI("project", "update", "txpool", "--pool-size", "2"); !strings.Contains(out, "pool_size:") {
		t.Fatalf("project update printed:\n%s", out)
	}
	goPool, pools := startPools(t, d, p, true)
	const cycles = 3
	for cycle := 1; cycle <= cycles; cycle++ {
		d.waitState(t, "txpool", "suspended", 15*time.Second)
		for i, c := range goPool {
			var who string
			var n, conns int
			ctx := context.Background()
			if err := c.QueryRowContext(ctx, "SELECT @who, COUNT(*) FROM t WHERE id <= ?", 2).Scan(&who, &n); err != nil || who != fmt.Sprintf("go%d", i) || n != 2 {
				t.Fatalf("cycle %d: Go connection %d: %q %d %v", cycle, i, who, n, err)
			}
			if err := c.QueryRowContext(ctx, sameRole).Scan(&conns); err != nil || conns > 2 {
				t.Fatalf("cycle %d: the compute has %d connections of the role (%v), want at most 2", cycle, conns, err)
			}
		}
		for _, lp := range pools {
			for i, got := range lp.query("SELECT CONCAT(@who, ':', COUNT(*)) FROM t") {
				if !strings.HasSuffix(got, ":2") || !strings.Contains(got, fmt.Sprint(i)) {
					t.Fatalf("cycle %d: %s connection %d: %q; daemon log:\n%s", cycle, lp.name, i, got, d.log)
				}
			}
			for _, got := range lp.query(sameRole) {
				if got != "1" && got != "2" {
					// A connection the pool has just closed may linger in
					// PROCESSLIST while its thread ends: look again.
					time.Sleep(200 * time.Millisecond)
					if again := lp.query(sameRole)[0]; again != "1" && again != "2" {
						t.Fatalf("cycle %d: %s sees %s connections of the role, then %s, want at most 2", cycle, lp.name, got, again)
					}
				}
			}
		}
	}
	// Every session set its own @who, so a connection that moves between
	// sessions is reset.
	resets := metricValue(t, d, `serverlessd_proxy_session_events_total{event="pool_reset"}`)
	if resets == "0" {
		t.Fatal("no pooled connection was reset for another session")
	}
	t.Logf("12 client connections of 4 libraries on 2 backend connections through %d suspends; %s resets", cycles, resets)
}

// TestPooledWakeStorm: 500 idle client connections in transaction mode
// on a suspended compute all run a query at once: none fails, and the
// compute starts once.
func TestPooledWakeStorm(t *testing.T) {
	const clients = 500
	d := startDaemon(t, "", fastIdle, "SERVERLESSD_PROXY_MAX_CONNECTIONS_PER_PROJECT=1000")
	var p projectOut
	d.cliJSON(&p, "project", "create", "storm", "--memory", "128Mi", "--idle-timeout", "1", "--pool-mode", "transaction")
	user, pw := p.Role.MySQLUser, p.Role.Password
	db := d.openDB(t, user, pw, "")
	db.SetMaxOpenConns(clients)
	db.SetMaxIdleConns(clients)
	conns := make([]*sql.Conn, clients)
	ctx := context.Background()
	for i := range conns {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		conns[i] = c
		t.Cleanup(func() { c.Close() })
	}
	d.waitState(t, "storm", "suspended", 15*time.Second)
	before := d.starts(t, p.Project.ID)
	var failed atomic.Int64
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			var n int
			if err := c.QueryRowContext(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
				failed.Add(1)
				t.Errorf("client %d: %d %v", i, n, err)
			}
		}()
	}
	close(gate)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d queries failed; daemon log:\n%s", failed.Load(), clients, d.log)
	}
	if n := d.starts(t, p.Project.ID) - before; n != 1 {
		t.Fatalf("%d compute starts, want 1", n)
	}
}
