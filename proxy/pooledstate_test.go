package proxy

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// rawPrepare prepares sql (no parameters) with COM_STMT_PREPARE and
// returns the statement id the proxy gave it.
func (rc *rawClient) rawPrepare(sql string) uint32 {
	rc.t.Helper()
	rc.seq = 0
	rc.write(append([]byte{0x16}, sql...))
	p := rc.read()
	if p[0] != 0 || len(p) < 12 {
		expectErr(rc.t, p, 0)
	}
	cols := binary.LittleEndian.Uint16(p[5:7])
	for range cols {
		rc.read() // a column definition
	}
	if cols > 0 {
		rc.read() // EOF
	}
	return binary.LittleEndian.Uint32(p[1:5])
}

// rawExecute executes statement id (no parameters) and returns the first
// column of its one row, a string.
func (rc *rawClient) rawExecute(id uint32) string {
	rc.t.Helper()
	rc.seq = 0
	cmd := []byte{0x17, 0, 0, 0, 0, 0, 1, 0, 0, 0}
	binary.LittleEndian.PutUint32(cmd[1:5], id)
	rc.write(cmd)
	if p := rc.read(); p[0] == 0xff {
		expectErr(rc.t, p, 0)
	}
	rc.read() // the column definition
	rc.read() // EOF
	row := rc.read()
	if len(row) < 4 || row[0] != 0 {
		rc.t.Fatalf("want a binary row, got %q", row)
	}
	v := string(row[3 : 3+int(row[2])]) // header, NULL bitmap, length-encoded string
	if eof := rc.read(); eof[0] != 0xfe {
		rc.t.Fatalf("want EOF after the row, got %q", eof)
	}
	return v
}

// TestPooledLastPreparedID: MariaDB's statement id 0xffffffff ("the
// statement just prepared") names the session's own last statement, even
// when another session in the same state prepared one since on the one
// backend connection they share.
func TestPooledLastPreparedID(t *testing.T) {
	e := pooledEnv(t, 1, 10*time.Second)
	x, y := dialRaw(t, e.addr), dialRaw(t, e.addr)
	expectOK(t, x.loginNative("shop.pool", "pw3"))
	expectOK(t, y.loginNative("shop.pool", "pw3"))
	xid := x.rawPrepare("SELECT 'x'")
	if got := x.rawExecute(xid); got != "x" {
		t.Fatalf("x's statement by its id: %q", got)
	}
	yid := y.rawPrepare("SELECT 'y'")
	if got := y.rawExecute(yid); got != "y" {
		t.Fatalf("y's statement by its id: %q", got)
	}
	if got := x.rawExecute(0xffffffff); got != "x" {
		t.Fatalf("x's last prepared statement ran %q, want x", got)
	}
	if got := y.rawExecute(0xffffffff); got != "y" {
		t.Fatalf("y's last prepared statement ran %q, want y", got)
	}
}

// TestPooledPreparedPins: a statement prepared with COM_STMT_PREPARE pins
// its session as the same SQL sent as text does (a temporary table), and
// releases it the same way.
func TestPooledPreparedPins(t *testing.T) {
	e := pooledEnv(t, 1, 10*time.Second)
	ctx := context.Background()
	a := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	for _, step := range []struct {
		sql    string
		pinned int64
	}{
		{"CREATE TEMPORARY TABLE prepared_tmp (x INT)", 1},
		{"DROP TEMPORARY TABLE prepared_tmp", 0},
	} {
		st, err := a.PrepareContext(ctx, step.sql)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.ExecContext(ctx); err != nil {
			t.Fatalf("%s: %v", step.sql, err)
		}
		st.Close()
		if got := e.srv.SessionStats().Pinned["temporary_table"]; got != step.pinned {
			t.Fatalf("after %s: %d sessions pinned by a temporary table, want %d", step.sql, got, step.pinned)
		}
	}
}

// TestPooledUntrackedState: state a session leaves on a backend
// connection that the proxy does not carry (a temporary table made in a
// procedure, a frozen timestamp, LAST_INSERT_ID(expr)) never reaches
// another session of the same role and schema that takes the connection
// next.
func TestPooledUntrackedState(t *testing.T) {
	e := pooledEnv(t, 1, 10*time.Second)
	ctx := context.Background()
	root := rootExec(t, e.db)
	root("DROP PROCEDURE IF EXISTS app.make_tmp",
		"CREATE PROCEDURE app.make_tmp() CREATE TEMPORARY TABLE proc_tmp (x INT)")
	a := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	b := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	queryString(t, b, "SELECT 1") // b has used the connection in this state before

	execAll(t, a, "CALL make_tmp()")
	if _, err := b.ExecContext(ctx, "SELECT * FROM proc_tmp"); mysqlErrNumber(err) != 1146 {
		t.Fatalf("another session read the temporary table: err %v, want error 1146", err)
	}

	execAll(t, a, "SET timestamp = 1000000000")
	if got := queryString(t, b, "SELECT UNIX_TIMESTAMP() = 1000000000"); got != "0" {
		t.Fatal("another session got the frozen timestamp")
	}

	execAll(t, a, "SELECT LAST_INSERT_ID(42)")
	if got := queryString(t, b, "SELECT LAST_INSERT_ID()"); got != "0" {
		t.Fatalf("another session's LAST_INSERT_ID() = %s, want 0", got)
	}
	if got := queryString(t, a, "SELECT LAST_INSERT_ID()"); got != "42" {
		t.Fatalf("the session's own LAST_INSERT_ID() = %s, want 42", got)
	}
}

// TestPooledStatementsUnderContention: many clients over a pool of two
// prepare, execute and close statements and run queries. Closing a
// statement (a command with no response) and quitting take the parked
// backend connection back like any command, so it is never handed to two
// sessions at once: every answer is the client's own, and no waiter times
// out while a connection sits free. It runs with the sessions borrowing
// in the event loops, with the goroutine engine, with both (a waker
// without Warm sends every borrow of a session without a connection to
// its goroutine), and with half the clients on TLS (the goroutine
// engine) beside the others in the loops.
func TestPooledStatementsUnderContention(t *testing.T) {
	for _, tc := range []struct {
		name   string
		relay  string
		noWarm bool
		tls    bool
	}{
		{"event-loop", RelayEventLoop, false, false},
		{"goroutines", RelayGoroutines, false, false},
		{"event-loop-no-warm", RelayEventLoop, true, false},
		{"event-loop-and-tls", RelayEventLoop, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := pooledEnvWith(t, 2, 20*time.Second, func(c *Config) { c.Relay = tc.relay })
			if tc.noWarm {
				e.waker.mu.Lock()
				e.waker.warm = false
				e.waker.mu.Unlock()
			}
			pooledContention(t, e, tc.tls)
		})
	}
}

func pooledContention(t *testing.T, e *env, withTLS bool) {
	ctx := context.Background()
	const clients, rounds = 12, 60
	var wg sync.WaitGroup
	for i := range clients {
		params := ""
		if withTLS && i%2 == 1 {
			params = "tls=skip-verify"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := openDB(t, e.dsn("shop.pool", "pw3", "app", params))
			db.SetMaxOpenConns(1)
			for r := range rounds {
				want := fmt.Sprintf("c%d-r%d", i, r)
				st, err := db.PrepareContext(ctx, "SELECT CONCAT(?, '')")
				if err != nil {
					t.Errorf("client %d: prepare: %v", i, err)
					return
				}
				var got string
				err = st.QueryRowContext(ctx, want).Scan(&got)
				st.Close() // COM_STMT_CLOSE
				if err != nil || got != want {
					t.Errorf("client %d: got %q, %v; want %q", i, got, err, want)
					return
				}
				if err := db.QueryRowContext(ctx, "SELECT '"+want+"'").Scan(&got); err != nil || got != want {
					t.Errorf("client %d: text query got %q, %v; want %q", i, got, err, want)
					return
				}
				if r%20 == 19 {
					db.Close() // COM_QUIT
					db = openDB(t, e.dsn("shop.pool", "pw3", "app", params))
					db.SetMaxOpenConns(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := backendConns(t, e.db, "pool"); n > 2 {
		t.Fatalf("%d backend connections of the role, want at most 2", n)
	}
}

// TestParkHandsOverOnce: a link parked before a command and handed to a
// waiter at that command's boundary leaves the parked set, so that no
// later borrower can reclaim it from its old session.
func TestParkHandsOverOnce(t *testing.T) {
	p := &backendPool{size: 1, open: 1, parked: map[*link]*session{}}
	ss := &session{st: newSessionState(""), resp: &wire.HandshakeResponse{}}
	l := &link{}
	p.parked[l] = ss // parked at the end of the previous command
	w := &poolWaiter{ch: make(chan grant, 1)}
	p.waiters = append(p.waiters, w)
	kept, mustRead := p.park(ss, l)
	if kept || mustRead {
		t.Fatalf("park: kept %v, mustRead %v; want the waiter to get the link", kept, mustRead)
	}
	if g := <-w.ch; g.l != l {
		t.Fatal("the waiter did not get the link")
	}
	if _, ok := p.parked[l]; ok {
		t.Fatal("a link handed over is still parked with its old session")
	}
	if got, _ := p.reclaimLocked("", false); got != nil {
		t.Fatal("a link in use was reclaimed")
	}
}

// TestPooledKillIdle: a KILL by our id of a pooled session between
// commands is answered by the daemon (the race it avoids, the parked
// link going to another session while the KILL travels, is too narrow to
// stage): KILL QUERY has nothing to stop, KILL ends the session, and the
// other sessions go on.
func TestPooledKillIdle(t *testing.T) {
	e := pooledEnv(t, 2, 10*time.Second)
	ctx := context.Background()
	victim := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	thread := queryString(t, victim, "SELECT CONNECTION_ID()")
	var backend uint32
	fmt.Sscan(thread, &backend)
	ourID := e.connIDOf(backend)
	killer := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	before := e.srv.Counters()[CountKillRewritten.String()]
	execAll(t, killer, fmt.Sprintf("KILL QUERY %d", ourID))
	if got := queryString(t, victim, "SELECT 7"); got != "7" {
		t.Fatalf("after KILL QUERY of an idle session: %q", got)
	}
	execAll(t, killer, fmt.Sprintf("KILL %d", ourID))
	if _, err := victim.ExecContext(ctx, "SELECT 1"); err == nil {
		t.Fatal("a killed idle pooled session went on")
	}
	if got := e.srv.Counters()[CountKillRewritten.String()] - before; got != 2 {
		t.Fatalf("%d kills answered, want 2", got)
	}
	if got := queryString(t, killer, "SELECT 8"); got != "8" {
		t.Fatalf("the killer after the kills: %q", got)
	}
}

// TestPooledWaitInLoop: a logged-in client whose next command finds the
// pool's one connection pinned by another session waits for it in its
// event loop and gets the documented error after pool_wait_timeout; its
// connection stays usable, and gets through once the other commits.
func TestPooledWaitInLoop(t *testing.T) {
	e := pooledEnv(t, 1, 500*time.Millisecond)
	ctx := context.Background()
	c := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	queryString(t, c, "SELECT 1") // its connection is parked with it
	h := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	execAll(t, h, "BEGIN", "SELECT 1") // takes it, and keeps it
	_, err := c.ExecContext(ctx, "SELECT 2")
	if mysqlErrNumber(err) != 1040 || !strings.Contains(err.Error(), "pool_wait_timeout") {
		t.Fatalf("the waiting command got %v, want error 1040 naming pool_wait_timeout", err)
	}
	execAll(t, h, "COMMIT")
	if got := queryString(t, c, "SELECT 3"); got != "3" {
		t.Fatalf("after the wait: %q", got)
	}
}

// TestPooledGoroutineReclaimsFromLoop: a connection parked with an idle
// session in an event loop goes to a session of the goroutine engine (a
// TLS client) that needs it, well before pool_wait_timeout; the loop's
// session then gets one back.
func TestPooledGoroutineReclaimsFromLoop(t *testing.T) {
	e := pooledEnv(t, 1, 10*time.Second)
	plain := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	queryString(t, plain, "SELECT 1") // parked with it, in its loop
	t0 := time.Now()
	tlsc := e.conn(t, e.dsn("shop.pool", "pw3", "app", "tls=skip-verify"))
	if got := queryString(t, tlsc, "SELECT 'tls'"); got != "tls" {
		t.Fatalf("TLS client: %q", got)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("the TLS client waited %s for the parked connection", d)
	}
	if got := queryString(t, plain, "SELECT 'plain'"); got != "plain" {
		t.Fatalf("plain client: %q", got)
	}
}

// TestPooledIdleLeavesLoop: a pooled session idle past idleAfter leaves
// its event loop for the goroutine engine's cheaper wait, its connection
// parked where another session can take it; its next command works.
func TestPooledIdleLeavesLoop(t *testing.T) {
	e := pooledEnv(t, 1, 10*time.Second)
	a := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	queryString(t, a, "SELECT 1")
	time.Sleep(idleAfter + 600*time.Millisecond) // and the event loop's next tick
	e.srv.mu.Lock()
	inLoop := 0
	for _, ss := range e.srv.sessions {
		ss.cmu.Lock()
		if ss.ls != nil {
			inLoop++
		}
		ss.cmu.Unlock()
	}
	e.srv.mu.Unlock()
	if inLoop != 0 {
		t.Fatalf("%d idle pooled sessions still in an event loop", inLoop)
	}
	b := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	if got := queryString(t, b, "SELECT 'b'"); got != "b" {
		t.Fatalf("b: %q", got)
	}
	if got := queryString(t, a, "SELECT 'a'"); got != "a" {
		t.Fatalf("a: %q", got)
	}
}

// TestPooledTrickleFreesLink: a client that sends a command's payload
// slowly does not hold its parked connection meanwhile; another session
// gets it well before the pool's wait runs out, and the slow command
// runs once it is whole. The slow client is in an event loop, or in the
// goroutine engine once idle past idleAfter.
func TestPooledTrickleFreesLink(t *testing.T) {
	for _, idle := range []bool{false, true} {
		t.Run(fmt.Sprintf("idle=%v", idle), func(t *testing.T) {
			e := pooledEnv(t, 1, 10*time.Second)
			slow := dialRaw(t, e.addr)
			expectOK(t, slow.loginNative("shop.pool", "pw3"))
			if _, err := slow.query("SELECT 1"); err != nil { // parked with it
				t.Fatal(err)
			}
			if idle {
				time.Sleep(idleAfter + 600*time.Millisecond) // and the loop's next tick
			}
			q := append([]byte{mysql.COM_QUERY}, "SELECT 'slow'"...)
			frame := append([]byte{byte(len(q)), 0, 0, 0}, q...)
			if _, err := slow.conn.Write(frame[:8]); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			other := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
			if got := queryString(t, other, "SELECT 'other'"); got != "other" {
				t.Fatalf("other client: %q", got)
			}
			if d := time.Since(t0); d > 5*time.Second {
				t.Fatalf("the other client waited %s for the connection the slow one had parked", d)
			}
			if _, err := slow.conn.Write(frame[8:]); err != nil {
				t.Fatal(err)
			}
			slow.seq = 1
			rows, err := slow.result()
			if err != nil || len(rows) != 1 || rows[0] != "slow" {
				t.Fatalf("slow command: %q, %v", rows, err)
			}
		})
	}
}

// TestPooledKillBusy: KILL QUERY of a pooled session running a statement
// stops that statement and leaves the session usable; KILL then ends the
// session, its statement stopped too.
func TestPooledKillBusy(t *testing.T) {
	e := pooledEnv(t, 2, 10*time.Second)
	ctx := context.Background()
	victim := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	var backend uint32
	fmt.Sscan(queryString(t, victim, "SELECT CONNECTION_ID()"), &backend)
	ourID := e.connIDOf(backend)
	killer := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	for _, kill := range []string{"KILL QUERY %d", "KILL %d"} {
		done := make(chan error, 1)
		t0 := time.Now()
		go func() {
			var v sql.NullString
			done <- victim.QueryRowContext(ctx, "SELECT SLEEP(30)").Scan(&v)
		}()
		e.waitRunning(t, ourID)
		execAll(t, killer, fmt.Sprintf(kill, ourID))
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the statement still runs", kill)
		}
		if d := time.Since(t0); d > 10*time.Second {
			t.Fatalf("%s: the statement ran %s", kill, d)
		}
	}
	if _, err := victim.ExecContext(ctx, "SELECT 1"); err == nil {
		t.Fatal("a killed pooled session went on")
	}
	if got := queryString(t, killer, "SELECT 8"); got != "8" {
		t.Fatalf("the killer after the kills: %q", got)
	}
}

// waitRunning waits until the pooled session id runs a command.
func (e *env) waitRunning(t *testing.T, id uint32) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		e.srv.mu.Lock()
		ss := e.srv.sessions[id]
		e.srv.mu.Unlock()
		if ss != nil && ss.running.Load() != 0 {
			time.Sleep(50 * time.Millisecond) // and reach mariadbd
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %d runs no command after 10 s", id)
		}
	}
}

// TestPooledKillNeverHitsAnother: KILL QUERY of a pooled session, sent
// over and over while it and another session take turns on the same
// backend connections, never stops the other session's statements.
func TestPooledKillNeverHitsAnother(t *testing.T) {
	e := pooledEnv(t, 2, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	victim := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	var backend uint32
	fmt.Sscan(queryString(t, victim, "SELECT CONNECTION_ID()"), &backend)
	ourID := e.connIDOf(backend)
	others := []*sql.Conn{e.conn(t, e.dsn("shop.pool", "pw3", "app", "")), e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))}
	killer := e.conn(t, e.dsn("shop.pool", "pw3", "app", ""))
	var wg sync.WaitGroup
	var victimRuns, otherRuns atomic.Int64
	run := func(c *sql.Conn, q string, runs *atomic.Int64, mustNotFail bool) {
		defer wg.Done()
		for ctx.Err() == nil {
			var v sql.NullString
			err := c.QueryRowContext(context.Background(), q).Scan(&v)
			if err != nil && mustNotFail {
				t.Errorf("another session's statement failed: %v", err)
				return
			}
			runs.Add(1)
		}
	}
	wg.Add(3)
	go run(victim, "SELECT SLEEP(0.001)", &victimRuns, false)
	for _, o := range others {
		go run(o, "SELECT SLEEP(0.002)", &otherRuns, true)
	}
	kills := 0
	for ; ctx.Err() == nil; kills++ {
		execAll(t, killer, fmt.Sprintf("KILL QUERY %d", ourID))
	}
	wg.Wait()
	t.Logf("%d kills; %d statements of the victim, %d of the others", kills, victimRuns.Load(), otherRuns.Load())
	if otherRuns.Load() == 0 || victimRuns.Load() == 0 {
		t.Fatal("the sessions ran nothing")
	}
}
