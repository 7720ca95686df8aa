package proxy

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"
)

// detach runs a planned detach of the shared backend's "shop" compute, as
// the manager does before a suspend, and returns how many sessions moved.
func (e *env) detach() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.srv.Detach(ctx, "c-p-shop")
}

// conn opens one pinned connection through the proxy.
func (e *env) conn(t *testing.T, dsn string) *sql.Conn {
	t.Helper()
	c, err := openDB(t, dsn).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func queryString(t *testing.T, c *sql.Conn, q string, args ...any) string {
	t.Helper()
	var v sql.NullString
	if err := c.QueryRowContext(context.Background(), q, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return v.String
}

func execAll(t *testing.T, c *sql.Conn, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := c.ExecContext(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// TestStateSurvivesReattach: a session detached from its backend
// connection gets a new one at its next command, with everything it had
// set: schema, variables, character set, user variables, isolation,
// autocommit, and a server-side prepared statement that still executes.
func TestStateSurvivesReattach(t *testing.T) { forEachRelay(t, testStateSurvivesReattach) }

func testStateSurvivesReattach(t *testing.T, relay string) {
	e := newEnv(t, func(c *Config) { c.Relay = relay })
	ctx := context.Background()
	c := e.conn(t, e.dsn("shop.u", "pw", "", ""))
	execAll(t, c,
		"USE app",
		"SET time_zone = '+03:00'",
		"SET sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES'",
		"SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
		"SET @v := 42, @s := 'h''é\\\\llo', @n := NULL, @d := 1.5",
		"SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		"SET autocommit = 0",
		"SET max_sort_length = 2048",
	)
	stmt, err := c.PrepareContext(ctx, "SELECT ? + 1")
	if err != nil {
		t.Fatal(err)
	}
	var got int
	if err := stmt.QueryRowContext(ctx, 1).Scan(&got); err != nil || got != 2 {
		t.Fatalf("prepared statement before: %d %v", got, err)
	}
	before := queryString(t, c, "SELECT CONNECTION_ID()")
	if n := e.detach(); n != 1 {
		t.Fatalf("detached %d sessions, want 1", n)
	}
	if err := stmt.QueryRowContext(ctx, 41).Scan(&got); err != nil || got != 42 {
		t.Fatalf("prepared statement after the re-attach: %d %v", got, err)
	}
	if after := queryString(t, c, "SELECT CONNECTION_ID()"); after == before {
		t.Fatalf("still on backend thread %s: no re-attach happened", after)
	}
	for q, want := range map[string]string{
		"SELECT DATABASE()":             "app",
		"SELECT @@time_zone":            "+03:00",
		"SELECT @@sql_mode":             "ANSI_QUOTES,STRICT_ALL_TABLES",
		"SELECT @@collation_connection": "utf8mb4_unicode_ci",
		"SELECT @@character_set_client": "utf8mb4",
		"SELECT @v":                     "42",
		"SELECT @s":                     `h'é\llo`,
		"SELECT COALESCE(@n, 'null')":   "null",
		"SELECT @d * 2 = 3":             "1",
		"SELECT @@session.tx_isolation": "SERIALIZABLE",
		"SELECT @@autocommit":           "0",
		"SELECT @@max_sort_length":      "2048",
	} {
		if v := queryString(t, c, q); v != want {
			t.Errorf("%s after the re-attach = %q, want %q", q, v, want)
		}
	}
	st := e.srv.SessionStats()
	if st.Events["detached"] != 1 || st.Events["reattach_warm"] != 1 || st.Events["reprepared"] != 1 {
		t.Fatalf("session events %v", st.Events)
	}
}

// TestTextPrepareSurvives: statements prepared with SQL PREPARE are
// prepared again on the new connection.
func TestTextPrepareSurvives(t *testing.T) {
	e := newEnv(t, nil)
	c := e.conn(t, e.dsn("shop.u", "pw", "app", ""))
	execAll(t, c, "PREPARE twice FROM 'SELECT ? * 2'", "SET @x := 21")
	if n := e.detach(); n != 1 {
		t.Fatalf("detached %d", n)
	}
	if v := queryString(t, c, "EXECUTE twice USING @x"); v != "42" {
		t.Fatalf("EXECUTE after the re-attach = %q", v)
	}
	execAll(t, c, "DEALLOCATE PREPARE twice")
}

// TestPinsKeepTheConnection: a session holding state that cannot move is
// not detached, and counts as pinned, until it lets go of it.
func TestPinsKeepTheConnection(t *testing.T) { forEachRelay(t, testPinsKeepTheConnection) }

func testPinsKeepTheConnection(t *testing.T, relay string) {
	e := newEnv(t, func(c *Config) { c.Relay = relay })
	if err := e.db.exec("CREATE TABLE IF NOT EXISTS app.pins (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kind       string
		take, free []string
	}{
		{"transaction", []string{"BEGIN", "INSERT INTO pins VALUES (1)"}, []string{"ROLLBACK"}},
		{"transaction", []string{"SET autocommit = 0", "SELECT COUNT(*) FROM pins"}, []string{"COMMIT", "SET autocommit = 1"}},
		{"lock_tables", []string{"LOCK TABLES pins READ"}, []string{"UNLOCK TABLES"}},
		{"get_lock", []string{"SELECT GET_LOCK('a', 1)", "SELECT GET_LOCK('b', 1)", "SELECT RELEASE_LOCK('a')"}, []string{"SELECT RELEASE_LOCK('b')"}},
		{"temporary_table", []string{"CREATE TEMPORARY TABLE tmp (a INT)"}, []string{"DROP TEMPORARY TABLE tmp"}},
		{"xa", []string{"XA START 'x1'"}, []string{"XA END 'x1'", "XA ROLLBACK 'x1'"}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			c := e.conn(t, e.dsn("shop.u", "pw", "app", ""))
			execAll(t, c, tc.take...)
			if got := e.srv.SessionStats().Pinned[tc.kind]; got != 1 {
				t.Fatalf("pinned[%s] = %d (%v)", tc.kind, got, e.srv.SessionStats().Pinned)
			}
			if a := e.waker.Activity("c-p-shop"); a.Pinned() != 1 {
				t.Fatalf("compute pinned count %d", a.Pinned())
			}
			if n := e.detach(); n != 0 {
				t.Fatalf("a session holding %s was detached", tc.kind)
			}
			execAll(t, c, tc.free...)
			if n := e.detach(); n != 1 {
				t.Fatalf("after letting go of %s: detached %d", tc.kind, n)
			}
			if a := e.waker.Activity("c-p-shop"); a.Pinned() != 0 {
				t.Fatalf("compute pinned count %d after release", a.Pinned())
			}
			queryString(t, c, "SELECT 1") // attaches again
		})
	}
}

// TestPinnedIdleTimeout: a session idle in an open transaction past the
// pinned idle timeout is closed with an error naming the timeout, and its
// writes are rolled back.
func TestPinnedIdleTimeout(t *testing.T) { forEachRelay(t, testPinnedIdleTimeout) }

// testPinnedIdleTimeout: the event loop's timer ends the session, or the
// goroutine engine's read deadline.
func testPinnedIdleTimeout(t *testing.T, relay string) {
	e := newEnv(t, func(c *Config) { c.PinnedIdleTimeout = 300 * time.Millisecond; c.Relay = relay })
	if err := e.db.exec("CREATE TABLE IF NOT EXISTS app.pto (id INT PRIMARY KEY)", "DELETE FROM app.pto"); err != nil {
		t.Fatal(err)
	}
	c := e.conn(t, e.dsn("shop.u", "pw", "app", ""))
	execAll(t, c, "BEGIN", "INSERT INTO pto VALUES (1)")
	time.Sleep(time.Second)
	_, err := c.ExecContext(context.Background(), "COMMIT")
	if err == nil || !strings.Contains(err.Error(), "pinned_idle_timeout") {
		t.Fatalf("COMMIT after the pinned idle timeout: %v", err)
	}
	if n := countRows(t, e, "app.pto"); n != 0 {
		t.Fatalf("%d rows committed by a session closed at its pinned idle timeout", n)
	}
	if got := e.srv.SessionStats().Events["pin_timeout"]; got != 1 {
		t.Fatalf("pin_timeout = %d", got)
	}
}

func countRows(t *testing.T, e *env, table string) int {
	t.Helper()
	db, err := e.db.admin()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLostCompute: the backend connection disappears (as when mariadbd is
// killed) under an idle session. An unpinned one attaches again at its
// next command without an error; a pinned one gets one error naming what
// it lost, and its connection closes.
func TestLostCompute(t *testing.T) { forEachRelay(t, testLostCompute) }

func testLostCompute(t *testing.T, relay string) {
	e := newEnv(t, func(c *Config) { c.Relay = relay })
	idle := e.conn(t, e.dsn("shop.u", "pw", "app", ""))
	pinned := e.conn(t, e.dsn("shop.u", "pw", "app", ""))
	execAll(t, pinned, "SELECT GET_LOCK('held', 1)")
	for _, c := range []*sql.Conn{idle, pinned} {
		id := queryString(t, c, "SELECT CONNECTION_ID()")
		if err := e.db.exec("KILL " + id); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if v := queryString(t, idle, "SELECT 1"); v != "1" {
		t.Fatal(v)
	}
	_, err := pinned.ExecContext(context.Background(), "SELECT 1")
	if err == nil || !strings.Contains(err.Error(), "a GET_LOCK lock, which is lost") {
		t.Fatalf("pinned session after its compute was lost: %v", err)
	}
	if _, err := pinned.ExecContext(context.Background(), "SELECT 1"); err == nil {
		t.Fatal("the pinned session went on after losing its state")
	}
}

// TestReattachBadInput: garbage after a re-attach, a statement id the
// session never prepared, and a role dropped while the session was
// detached each get a clear error.
func TestReattachBadInput(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.db.createUsers(map[string]string{"gone": "pw"}); err != nil {
		t.Fatal(err)
	}
	e.dir.addProject("shop", "p-shop", map[string]string{"u": "pw", "v": "pw2", "gone": "pw"})

	rc := dialRaw(t, e.addr)
	expectOK(t, rc.loginNative("shop.u", "pw"))
	if n := e.detach(); n != 1 {
		t.Fatalf("detached %d", n)
	}
	rc.seq = 0
	rc.write([]byte{0x17, 9, 9, 9, 0, 0, 1, 0, 0, 0}) // COM_STMT_EXECUTE of id 0x90909
	expectErr(t, rc.read(), 1243)
	rc.seq = 3 // not a command
	rc.write([]byte{0x03, 'x'})
	expectErr(t, rc.read(), 1156)

	gone := e.conn(t, e.dsn("shop.gone", "pw", "", ""))
	queryString(t, gone, "SELECT 1")
	if err := e.db.exec("DROP USER 'gone'@'%'"); err != nil {
		t.Fatal(err)
	}
	e.detach()
	_, err := gone.ExecContext(context.Background(), "SELECT 1")
	if mysqlErrNumber(err) != 1045 {
		t.Fatalf("re-attach of a dropped role: want 1045, got %v", err)
	}
}

// TestDetachDuringCommand: a planned detach waits for a running statement
// to finish, and the statement's result reaches the client whole.
func TestDetachDuringCommand(t *testing.T) { forEachRelay(t, testDetachDuringCommand) }

func testDetachDuringCommand(t *testing.T, relay string) {
	e := newEnv(t, func(c *Config) { c.Relay = relay })
	c := e.conn(t, e.dsn("shop.u", "pw", "", ""))
	done := make(chan string, 1)
	go func() { done <- queryString(t, c, "SELECT SLEEP(0.5) + 7") }()
	waitFor(t, 5*time.Second, func() bool { return backendRunning(t, e.db, "SELECT SLEEP(0.5) + 7") })
	if n := e.detach(); n != 1 {
		t.Fatalf("detached %d", n)
	}
	if v := <-done; v != "7" {
		t.Fatalf("statement result %q", v)
	}
	if v := queryString(t, c, "SELECT 8"); v != "8" {
		t.Fatal(v)
	}
}

// TestCursorPins: a server-side cursor (COM_STMT_EXECUTE with
// CURSOR_TYPE_READ_ONLY) pins the session until its last row is fetched.
func TestCursorPins(t *testing.T) { forEachRelay(t, testCursorPins) }

func testCursorPins(t *testing.T, relay string) {
	e := newEnv(t, func(c *Config) { c.Relay = relay })
	rc := dialRaw(t, e.addr)
	expectOK(t, rc.loginNative("shop.u", "pw"))
	rc.seq = 0
	rc.write(append([]byte{0x16}, "SELECT seq FROM app.seq_1_to_5"...)) // COM_STMT_PREPARE
	p := rc.read()
	if p[0] != 0 {
		t.Fatalf("prepare: %q", p)
	}
	id := p[1:5]
	rc.read() // the column definition
	rc.read() // EOF
	rc.seq = 0
	rc.write(append(append([]byte{0x17}, id...), 1, 1, 0, 0, 0)) // COM_STMT_EXECUTE, CURSOR_TYPE_READ_ONLY
	rc.read()                                                    // column count
	rc.read()                                                    // column definition
	if eof := rc.read(); len(eof) != 5 || eof[3]&0x40 == 0 {
		t.Fatalf("no cursor opened: %q", eof)
	}
	if got := e.srv.SessionStats().Pinned["cursor"]; got != 1 {
		t.Fatalf("pinned %v", e.srv.SessionStats().Pinned)
	}
	if n := e.detach(); n != 0 {
		t.Fatal("a session with an open cursor was detached")
	}
	rc.seq = 0
	rc.write(append(append([]byte{0x1c}, id...), 10, 0, 0, 0)) // COM_STMT_FETCH of 10 rows
	rows := 0
	for {
		p := rc.read()
		if p[0] == 0xfe && len(p) == 5 {
			if p[3]&0x80 == 0 {
				t.Fatalf("fetch did not end the cursor: %q", p)
			}
			break
		}
		rows++
	}
	if rows != 5 {
		t.Fatalf("fetched %d rows", rows)
	}
	if n := e.detach(); n != 1 {
		t.Fatalf("after the last row: detached %d", n)
	}
}

// forEachRelay runs a test with each relay engine.
func forEachRelay(t *testing.T, test func(*testing.T, string)) {
	for _, relay := range []string{RelayEventLoop, RelayGoroutines} {
		t.Run(relay, func(t *testing.T) { test(t, relay) })
	}
}

// TestKillDetached: a KILL by our id of a session with no backend
// connection (its compute suspended) is answered by the daemon: KILL
// QUERY has nothing to stop, KILL closes the session.
func TestKillDetached(t *testing.T) { forEachRelay(t, testKillDetached) }

func testKillDetached(t *testing.T, relay string) {
	e := newEnv(t, func(c *Config) { c.Relay = relay })
	victim := e.conn(t, e.dsn("shop.u", "pw", "", ""))
	thread := queryString(t, victim, "SELECT CONNECTION_ID()")
	var backend uint32
	fmt.Sscan(thread, &backend)
	ourID := e.connIDOf(backend)
	if n := e.detach(); n != 1 {
		t.Fatalf("detached %d", n)
	}
	killer := e.conn(t, e.dsn("shop.v", "pw2", "", ""))
	execAll(t, killer, fmt.Sprintf("KILL QUERY %d", ourID))
	execAll(t, killer, fmt.Sprintf("KILL %d", ourID))
	if _, err := victim.ExecContext(context.Background(), "SELECT 1"); err == nil {
		t.Fatal("a killed detached session went on")
	}
}
