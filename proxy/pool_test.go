package proxy

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// pooledEnv is a proxy whose project "shop" pools in transaction mode,
// with no per-source cap (the tests' clients all come from 127.0.0.1).
func pooledEnv(t *testing.T, size int, wait time.Duration) *env {
	return pooledEnvWith(t, size, wait, nil)
}

// pooledEnvWith is pooledEnv with the proxy's config changed by mod.
func pooledEnvWith(t *testing.T, size int, wait time.Duration, mod func(*Config)) *env {
	e := newEnv(t, func(c *Config) {
		c.MaxConnectionsPerSource, c.MaxConnectionsPerProject = -1, -1
		if mod != nil {
			mod(c)
		}
	})
	e.dir.mu.Lock()
	e.dir.pools["p-shop"] = PoolSettings{Transaction: true, Size: size, Wait: wait}
	e.dir.mu.Unlock()
	e.waker.mu.Lock()
	e.waker.warm = true // pooled sessions borrow in the event loops
	e.waker.mu.Unlock()
	waitBackendConns(t, e.db, "pool", 0) // an earlier test's, closing
	return e
}

// waitBackendConns waits until the backend has n connections of user:
// it notices closed ones a moment after they close.
func waitBackendConns(t testing.TB, m *mariadb, user string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); backendConns(t, m, user) != n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d backend connections of %s after 10 s, want %d", backendConns(t, m, user), user, n)
		}
	}
}

// backendConns counts the shared backend's connections of user.
func backendConns(t testing.TB, m *mariadb, user string) int {
	t.Helper()
	db, err := m.admin()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ?", user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// sampleMax polls backendConns until stop closes and returns the most
// it saw.
func sampleMax(t testing.TB, m *mariadb, user string, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		most := 0
		for {
			most = max(most, backendConns(t, m, user))
			select {
			case <-stop:
				out <- most
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return out
}

// TestTransactionPoolBoundsBackends: 2,000 client connections in
// transaction mode with a pool of 20 run transactions that read and
// write; none fails, the backend never sees more than 20 connections of
// the role, and every committed row is there.
func TestTransactionPoolBoundsBackends(t *testing.T) {
	const clients, size, txs = 2000, 20, 3
	e := pooledEnv(t, size, time.Minute)
	root := rootExec(t, e.db)
	root("DROP TABLE IF EXISTS app.pooled", "CREATE TABLE app.pooled (client INT, n INT, PRIMARY KEY (client, n))")
	stop := make(chan struct{})
	most := sampleMax(t, e.db, "pool", stop)
	conns := make([]*sql.Conn, clients)
	db := openDB(t, e.dsn("shop.pool", "pw3", "app", ""))
	db.SetMaxOpenConns(clients)
	db.SetMaxIdleConns(clients)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := db.Conn(context.Background())
			if err != nil {
				failed.Add(1)
				t.Errorf("client %d: connect: %v", i, err)
				return
			}
			conns[i] = c
			for n := range txs {
				if err := pooledTx(c, i, n); err != nil {
					failed.Add(1)
					t.Errorf("client %d: transaction %d: %v", i, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	if failed.Load() > 0 {
		t.Fatalf("%d clients failed", failed.Load())
	}
	if m := <-most; m > size {
		t.Fatalf("the backend saw %d connections of the pooled role, want at most %d", m, size)
	} else {
		t.Logf("at most %d backend connections for %d clients", m, clients)
	}
	var rows int
	if err := db.QueryRow("SELECT COUNT(*) FROM pooled").Scan(&rows); err != nil || rows != clients*txs {
		t.Fatalf("%d rows committed, want %d (%v)", rows, clients*txs, err)
	}
}

// pooledTx runs one transaction that reads and writes.
func pooledTx(c *sql.Conn, client, n int) error {
	ctx := context.Background()
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var have int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM pooled WHERE client = ?", client).Scan(&have); err != nil {
		return err
	}
	if have != n {
		return fmt.Errorf("client %d sees %d of its rows, want %d", client, have, n)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO pooled VALUES (?, ?)", client, n); err != nil {
		return err
	}
	return tx.Commit()
}

func rootExec(t testing.TB, m *mariadb) func(...string) {
	return func(stmts ...string) {
		t.Helper()
		if err := m.exec(stmts...); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPooledSessionsKeepTheirState: over a pool of one backend
// connection, two interleaved clients each keep their own schema,
// variables, user variables, LAST_INSERT_ID() and prepared statements.
func TestPooledSessionsKeepTheirState(t *testing.T) {
	e := pooledEnv(t, 1, 10*time.Second)
	root := rootExec(t, e.db)
	root("DROP TABLE IF EXISTS app.ids", "CREATE TABLE app.ids (id INT AUTO_INCREMENT PRIMARY KEY, who CHAR(1))")
	a := e.conn(t, e.dsn("shop.pool", "pw3", "", ""))
	b := e.conn(t, e.dsn("shop.pool", "pw3", "", ""))
	execAll(t, a, "USE app", "SET time_zone = '+03:00'", "SET sql_mode = 'ANSI_QUOTES'", "SET @v := 'a'")
	execAll(t, b, "USE mysql", "SET time_zone = '+05:00'", "SET sql_mode = 'STRICT_ALL_TABLES'", "SET @v := 'b'")
	// a's explicit id is reported in the OK packet but leaves its
	// LAST_INSERT_ID() at 1; b's rows get 101 and 102.
	execAll(t, a, "INSERT INTO ids (who) VALUES ('a')", "INSERT INTO ids (id, who) VALUES (100, 'a')")
	execAll(t, b, "INSERT INTO app.ids (who) VALUES ('b'), ('b')")
	for _, c := range []struct {
		conn *sql.Conn
		want map[string]string
	}{
		{a, map[string]string{"DATABASE()": "app", "@@time_zone": "+03:00", "@@sql_mode": "ANSI_QUOTES", "@v": "a", "LAST_INSERT_ID()": "1"}},
		{b, map[string]string{"DATABASE()": "mysql", "@@time_zone": "+05:00", "@@sql_mode": "STRICT_ALL_TABLES", "@v": "b", "LAST_INSERT_ID()": "101"}},
	} {
		for q, want := range c.want {
			if got := queryString(t, c.conn, "SELECT "+q); got != want {
				t.Errorf("%s = %q, want %q", q, got, want)
			}
		}
	}
	// Prepared statements on both, executed in turns over the one
	// backend connection, which each turn resets for the other.
	ctx := context.Background()
	sa, err := a.PrepareContext(ctx, "SELECT CONCAT(?, @v)")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.PrepareContext(ctx, "SELECT ? * 2")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		var s string
		if err := sa.QueryRowContext(ctx, i).Scan(&s); err != nil || s != fmt.Sprint(i, "a") {
			t.Fatalf("a's statement: %q %v", s, err)
		}
		var n int
		if err := sb.QueryRowContext(ctx, i).Scan(&n); err != nil || n != 2*i {
			t.Fatalf("b's statement: %d %v", n, err)
		}
	}
	if n := backendConns(t, e.db, "pool"); n > 1 {
		t.Fatalf("%d backend connections, want 1", n)
	}
}

// TestPoolWaitQueue: with a pool of 2 held by two open transactions, the
// other clients wait and get the documented error after the pool's
// wait; once the transactions end, everyone gets through. A temporary
// table pins its session the same way.
func TestPoolWaitQueue(t *testing.T) {
	e := pooledEnv(t, 2, 500*time.Millisecond)
	root := rootExec(t, e.db)
	root("DROP TABLE IF EXISTS app.q", "CREATE TABLE app.q (id INT PRIMARY KEY)")
	ctx := context.Background()
	holders := []*sql.Conn{e.conn(t, e.dsn("shop.pool", "pw3", "app", "")), e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))}
	execAll(t, holders[0], "BEGIN", "INSERT INTO q VALUES (1)")
	execAll(t, holders[1], "CREATE TEMPORARY TABLE tmp (x INT)")
	const waiters = 48
	var refused atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := openDB(t, e.dsn("shop.pool", "pw3", "app", "")).Conn(ctx)
			if err == nil {
				_, err = c.ExecContext(ctx, "SELECT 1")
				c.Close()
			}
			if mysqlErrNumber(err) == 1040 {
				refused.Add(1)
			} else {
				t.Errorf("a waiter got %v, want error 1040", err)
			}
		}()
	}
	wg.Wait()
	if refused.Load() != waiters {
		t.Fatalf("%d of %d waiters refused", refused.Load(), waiters)
	}
	if d := time.Since(t0); d > 20*time.Second {
		t.Fatalf("the waiters took %s", d)
	}
	execAll(t, holders[0], "COMMIT")
	execAll(t, holders[1], "DROP TEMPORARY TABLE tmp")
	for range 10 {
		c := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
		if got := queryString(t, c, "SELECT COUNT(*) FROM q"); got != "1" {
			t.Fatalf("%s rows after the commit, want 1", got)
		}
	}
}

// TestPooledSessionsSurviveDetach: idle pooled sessions of a compute
// that stops lose their backend connections, and their next command
// gets one again.
func TestPooledSessionsSurviveDetach(t *testing.T) {
	e := pooledEnv(t, 4, 10*time.Second)
	var conns []*sql.Conn
	for range 20 {
		c := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
		execAll(t, c, "SET @me := CONNECTION_ID()")
		conns = append(conns, c)
	}
	e.detach()
	waitBackendConns(t, e.db, "pool", 0)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got int
			if err := c.QueryRowContext(context.Background(), "SELECT @me IS NOT NULL").Scan(&got); err != nil || got != 1 {
				t.Errorf("after the detach: %d %v", got, err)
			}
		}()
	}
	wg.Wait()
}

// TestPooledRowCount: a statement's ROW_COUNT() and LAST_INSERT_ID(),
// asked right after it, are its own even while another client waits for
// the pool's only backend connection all along.
func TestPooledRowCount(t *testing.T) {
	e := pooledEnv(t, 1, 30*time.Second)
	e.srv.rowCountGrace.Store(int64(10 * time.Second)) // a loaded machine's pauses must not count
	root := rootExec(t, e.db)
	root("DROP TABLE IF EXISTS app.rc", "CREATE TABLE app.rc (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
		"INSERT INTO app.rc (v) VALUES (1), (1), (1)")
	a := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	b := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := b.ExecContext(context.Background(), "UPDATE rc SET v = v WHERE id = 0"); err != nil {
				done <- err
				return
			}
		}
	}()
	for i := range 20 {
		execAll(t, a, fmt.Sprintf("UPDATE rc SET v = %d", i+2))
		if got := queryString(t, a, "SELECT ROW_COUNT()"); got != fmt.Sprint(3+2*i) {
			t.Fatalf("round %d: ROW_COUNT() = %s, want %d", i, got, 3+2*i)
		}
		r, err := a.ExecContext(context.Background(), "INSERT INTO rc (v) VALUES (0)")
		if err != nil {
			t.Fatal(err)
		}
		want, _ := r.LastInsertId()
		if got := queryString(t, a, "SELECT LAST_INSERT_ID()"); got != fmt.Sprint(want) {
			t.Fatalf("round %d: LAST_INSERT_ID() = %s, want %d", i, got, want)
		}
		// An explicit id is reported in the OK packet too, but leaves
		// LAST_INSERT_ID() alone.
		execAll(t, a, fmt.Sprintf("INSERT INTO rc (id, v) VALUES (%d, 0)", 50000-i))
		if got := queryString(t, a, "SELECT LAST_INSERT_ID()"); got != fmt.Sprint(want) {
			t.Fatalf("round %d: after an explicit id, LAST_INSERT_ID() = %s, want %d", i, got, want)
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("the other client: %v", err)
	}
}

// TestIdleSessionLendsBuffers: a session idle past idleAfter lends its
// buffers out, and takes them back for its next command, a large answer
// included.
func TestIdleSessionLendsBuffers(t *testing.T) {
	e := pooledEnv(t, 2, 10*time.Second)
	c := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	for i := range 2 {
		time.Sleep(idleAfter + 200*time.Millisecond)
		if got := queryString(t, c, "SELECT LENGTH(REPEAT('x', 200000))"); got != "200000" {
			t.Fatalf("round %d: %s", i, got)
		}
		var s string
		if err := c.QueryRowContext(context.Background(), "SELECT REPEAT('y', 100000)").Scan(&s); err != nil || len(s) != 100000 {
			t.Fatalf("round %d: a large answer after idling: %d bytes, %v", i, len(s), err)
		}
	}
}

// TestResetConnectionForgetsState: after the client's own
// COM_RESET_CONNECTION, a session that moves to another backend
// connection does not get back what it had set before the reset.
func TestResetConnectionForgetsState(t *testing.T) {
	e := pooledEnv(t, 1, 10*time.Second)
	rc := dialRaw(t, e.addr)
	expectOK(t, rc.loginNative("shop.pool", "pw3"))
	for _, q := range []string{"USE app", "SET time_zone = '+04:00'", "SET @v := 7"} {
		if _, err := rc.query(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	rc.seq = 0
	rc.write([]byte{mysql.COM_RESET_CONNECTION})
	expectOK(t, rc.read())
	// Another client takes the pool's only connection, so the next
	// command runs on a connection the proxy gives the session anew.
	other := e.conn(t, e.dsn("shop.pool", "pw3", "", ""))
	execAll(t, other, "SET time_zone = '+09:00'")
	for q, want := range map[string]string{"SELECT @@time_zone": "SYSTEM", "SELECT @v": "NULL", "SELECT DATABASE()": "app"} {
		rows, err := rc.query(q)
		if err != nil || len(rows) != 1 || rows[0] != want {
			t.Errorf("%s after the reset: %v %v, want %s", q, rows, err, want)
		}
	}
}

// TestPooledPinTimeout: a pooled session idle in an open transaction past
// the pinned idle timeout is closed, its writes rolled back, and the
// client waiting for the pool's only connection gets it.
func TestPooledPinTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PinnedIdleTimeout = 300 * time.Millisecond })
	e.dir.mu.Lock()
	e.dir.pools["p-shop"] = PoolSettings{Transaction: true, Size: 1, Wait: 10 * time.Second}
	e.dir.mu.Unlock()
	root := rootExec(t, e.db)
	root("DROP TABLE IF EXISTS app.ppt", "CREATE TABLE app.ppt (id INT PRIMARY KEY)")
	holder := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	waiter := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	execAll(t, holder, "BEGIN", "INSERT INTO ppt VALUES (1)")
	t0 := time.Now()
	if got := queryString(t, waiter, "SELECT COUNT(*) FROM ppt"); got != "0" {
		t.Fatalf("the waiter sees %s rows, want 0 (rolled back)", got)
	}
	if d := time.Since(t0); d < 250*time.Millisecond {
		t.Fatalf("the waiter got the connection after %s, before the holder's pin timed out", d)
	}
	if _, err := holder.ExecContext(context.Background(), "COMMIT"); err == nil || !strings.Contains(err.Error(), "pinned_idle_timeout") {
		t.Fatalf("COMMIT after the pinned idle timeout: %v", err)
	}
}
