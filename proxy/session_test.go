package proxy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-sql-driver/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// TestConcurrentLogins: 200 clients log in at once while the compute
// "starts" (the Waker holds them for 300 ms); all succeed.
func TestConcurrentLogins(t *testing.T) {
	e := newEnv(t, nil)
	e.waker.delay = 300 * time.Millisecond
	const n = 200
	cfg, err := mysql.ParseDSN(e.dsn("shop.u", "pw", "app", ""))
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := mysql.NewConnector(cfg)
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	defer db.Close()
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			c, err := db.Conn(context.Background())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			var v int
			if err := c.QueryRowContext(context.Background(), "SELECT ?", i).Scan(&v); err != nil || v != i {
				errs <- fmt.Errorf("query %d: %v %v", i, v, err)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := e.srv.Count(CountLogins); got != n {
		t.Fatalf("logins = %d, want %d", got, n)
	}
}

// sessionByBackendThread finds our connection id for a backend thread.
func (e *env) connIDOf(backendThread uint32) uint32 {
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	for id, ss := range e.srv.sessions {
		if ss.ready && ss.backendThread == backendThread {
			return id
		}
	}
	e.t.Fatalf("no session for backend thread %d", backendThread)
	return 0
}

// TestKillQuery: KILL QUERY <our id> from a second connection of the same
// project stops the statement on its backend; the same from another
// project stops nothing.
func TestKillQuery(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	db := openDB(t, e.dsn("shop.u", "pw", "", ""))
	c1, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	var thread uint32
	c1.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&thread)
	ourID := e.connIDOf(thread)

	done := make(chan error, 1)
	go func() {
		var v int
		done <- c1.QueryRowContext(ctx, "SELECT SLEEP(30)").Scan(&v)
	}()
	waitFor(t, 5*time.Second, func() bool { return backendRunning(t, e.db, "SELECT SLEEP(30)") })

	// Another project on the same backend: our id means nothing there.
	_, err = openDB(t, e.dsn("other.u", "pw", "", "")).Exec(fmt.Sprintf("KILL QUERY %d", ourID))
	if mysqlErrNumber(err) != 1094 {
		t.Fatalf("cross-project KILL: want 1094 Unknown thread id, got %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("cross-project KILL stopped the query: %v", err)
	case <-time.After(300 * time.Millisecond):
	}

	start := time.Now()
	if _, err := openDB(t, e.dsn("shop.u", "pw", "", "")).Exec(fmt.Sprintf("kill  query %d ;", ourID)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Logf("query ended after %s: %v", time.Since(start), err)
	case <-time.After(2 * time.Second):
		t.Fatal("KILL QUERY did not stop the statement within 2s")
	}
	if err := c1.PingContext(ctx); err != nil {
		t.Fatalf("session unusable after KILL QUERY: %v", err)
	}
	// COM_PROCESS_KILL (the binary form) with our id kills the connection.
	rc := dialRaw(t, e.addr)
	expectOK(t, rc.loginNative("shop.u", "pw"))
	rc.seq = 0
	rc.write([]byte{gomysql.COM_PROCESS_KILL, byte(ourID), byte(ourID >> 8), byte(ourID >> 16), byte(ourID >> 24)})
	if _, err := rc.result(); err != nil {
		t.Fatalf("COM_PROCESS_KILL: %v", err)
	}
	if err := c1.PingContext(ctx); err == nil {
		t.Fatal("connection alive after COM_PROCESS_KILL")
	}
	if got := e.srv.Count(CountKillRewritten); got != 2 {
		t.Fatalf("kill_rewritten = %d", got)
	}
}

// TestDeadBackend: kill -9 the backend mid-query; the client gets an error
// at once instead of hanging.
func TestDeadBackend(t *testing.T) {
	e := newEnv(t, nil)
	dir, err := os.MkdirTemp(testRoot, "fragile-")
	if err != nil {
		t.Fatal(err)
	}
	m, err := startMariaDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.stop()
	if err := m.createUsers(map[string]string{"u": "pw"}); err != nil {
		t.Fatal(err)
	}
	e.dir.addProject("fragile", "p-fragile", map[string]string{"u": "pw"})
	e.waker.mu.Lock()
	e.waker.addrs["p-fragile"] = m.unixAddr()
	e.waker.mu.Unlock()

	db := openDB(t, e.dsn("fragile.u", "pw", "", ""))
	done := make(chan error, 1)
	go func() {
		var v int
		done <- db.QueryRow("SELECT SLEEP(30)").Scan(&v)
	}()
	waitFor(t, 5*time.Second, func() bool { return backendRunning(t, m, "SELECT SLEEP(30)") })
	killed := time.Now()
	m.kill()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("query succeeded on a dead backend")
		}
		t.Logf("client error %s after kill -9: %v", time.Since(killed), err)
	case <-time.After(2 * time.Second):
		t.Fatal("client still waiting 2s after the backend died")
	}
	// The session survives the lost statement; the lease goes with it.
	db.Close()
	waitFor(t, 2*time.Second, func() bool { return e.srv.ActiveConnections() == 0 })
	if a := e.waker.Activity("c-p-fragile"); a.Conns() != 0 {
		t.Fatalf("lease not released: %d conns", a.Conns())
	}
}

// TestChangeUser: COM_CHANGE_USER is re-authenticated and rewritten for the
// backend's nonce; failures keep the session as it was.
func TestChangeUser(t *testing.T) {
	e := newEnv(t, nil)
	rc := dialRaw(t, e.addr)
	rc.caps = gomysql.CLIENT_CONNECT_ATTRS
	expectOK(t, rc.loginNative("shop.u", "pw"))
	changeUser := func(user, pw, plugin string) []byte {
		rc.seq = 0
		cu := &wire.ChangeUser{User: user, AuthResponse: gomysql.CalcNativePassword(rc.greet.Nonce, []byte(pw)),
			Database: "app", Charset: 45, HasCharset: true, AuthPlugin: plugin, HasPlugin: true,
			Attrs: []byte("\x03foo\x03bar"), HasAttrs: true}
		rc.write(cu.Marshal(rc.caps))
		p := rc.read()
		if len(p) > 0 && p[0] == gomysql.EOF_HEADER {
			// MariaDB never reuses a scramble: it switches to a fresh
			// nonce, which the client answers end to end.
			plugin, nonce, err := wire.ParseAuthSwitch(p)
			if err != nil || plugin != gomysql.AUTH_NATIVE_PASSWORD {
				t.Fatalf("auth switch %q: %v", p, err)
			}
			rc.write(gomysql.CalcNativePassword(nonce, []byte(pw)))
			p = rc.read()
		}
		return p
	}
	currentUser := func() string {
		rows, err := rc.query("SELECT CURRENT_USER()")
		if err != nil || len(rows) != 1 {
			t.Fatalf("CURRENT_USER: %v %v", rows, err)
		}
		return rows[0]
	}
	expectOK(t, changeUser("shop.v", "pw2", gomysql.AUTH_NATIVE_PASSWORD))
	if u := currentUser(); u != "v@%" {
		t.Fatalf("after change user: %q", u)
	}
	expectErr(t, changeUser("shop.u", "wrong", gomysql.AUTH_NATIVE_PASSWORD), gomysql.ER_ACCESS_DENIED_ERROR)
	expectErr(t, changeUser("other.u", "pw", gomysql.AUTH_NATIVE_PASSWORD), gomysql.ER_ACCESS_DENIED_ERROR)
	expectErr(t, changeUser("shop.u", "pw", gomysql.AUTH_CACHING_SHA2_PASSWORD), gomysql.ER_NOT_SUPPORTED_AUTH_MODE)
	if u := currentUser(); u != "v@%" {
		t.Fatalf("a refused change user changed the session: %q", u)
	}
	if rows, err := rc.query("SELECT DATABASE()"); err != nil || rows[0] != "app" {
		t.Fatalf("database after change user: %v %v", rows, err)
	}
	if e.srv.Count(CountChangeUser) != 1 || e.srv.Count(CountChangeUserRefused) != 3 {
		t.Fatalf("counters %v", e.srv.Counters())
	}
}

// TestCachingSha2: MySQL 8.4/9 clients authenticate with
// caching_sha2_password: cleartext over TLS, or the RSA exchange.
func TestCachingSha2(t *testing.T) {
	e := newEnv(t, nil)
	t.Run("tls", func(t *testing.T) {
		rc := dialRaw(t, e.addr)
		rc.startTLS("")
		expectOK(t, rc.loginSha2("shop.u", "pw", nil))
		if rows, err := rc.query("SELECT CURRENT_USER()"); err != nil || rows[0] != "u@%" {
			t.Fatalf("%v %v", rows, err)
		}
	})
	t.Run("rsa-request-key", func(t *testing.T) {
		rc := dialRaw(t, e.addr)
		expectOK(t, rc.loginSha2("shop.u", "pw", nil))
	})
	t.Run("rsa-pinned-key", func(t *testing.T) {
		rc := dialRaw(t, e.addr)
		expectOK(t, rc.loginSha2("shop.u", "pw", &e.srv.rsaKey.PublicKey))
	})
	for _, tc := range []struct{ name, user, pw string }{
		{"wrong-password", "shop.u", "nope"}, {"unknown-user", "shop.zz", "pw"}, {"unknown-project", "zz.u", "pw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, e.addr)
			rc.startTLS("")
			expectErr(t, rc.loginSha2(tc.user, tc.pw, nil), gomysql.ER_ACCESS_DENIED_ERROR)
		})
	}
}

// TestAuthSwitch: a client starting with any other plugin is switched to
// mysql_native_password with the same nonce.
func TestAuthSwitch(t *testing.T) {
	e := newEnv(t, nil)
	rc := dialRaw(t, e.addr)
	rc.login("shop.u", "client_ed25519", []byte("whatever"), 0)
	plugin, nonce, err := wire.ParseAuthSwitch(rc.read())
	if err != nil || plugin != gomysql.AUTH_NATIVE_PASSWORD || string(nonce) != string(rc.greet.Nonce) {
		t.Fatalf("auth switch: %q %q %v", plugin, nonce, err)
	}
	rc.write(gomysql.CalcNativePassword(nonce, []byte("pw")))
	expectOK(t, rc.read())
}

// TestActivity: the compute's lease counts the connection and its bytes.
func TestActivity(t *testing.T) {
	e := newEnv(t, nil)
	db := openDB(t, e.dsn("shop.u", "pw", "", ""))
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a := e.waker.Activity("c-p-shop")
	if a.Conns() != 1 {
		t.Fatalf("conns = %d during the session", a.Conns())
	}
	var s string
	c.QueryRowContext(context.Background(), "SELECT REPEAT('x', 3000000)").Scan(&s)
	c.Close()
	db.Close()
	waitFor(t, 2*time.Second, func() bool { return a.Conns() == 0 })
	in, out := a.Bytes()
	if in < 30 || out < 3000000 || a.LastActive().IsZero() {
		t.Fatalf("bytes in %d out %d, last active %v", in, out, a.LastActive())
	}
}

// TestShutdown: Shutdown stops accepting, then closes sessions that do not
// end by themselves when its context expires.
func TestShutdown(t *testing.T) {
	e := newEnv(t, nil)
	db := openDB(t, e.dsn("shop.u", "pw", "", ""))
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := c.PingContext(context.Background()); err == nil {
		t.Fatal("session survived Shutdown")
	}
	if _, err := openDB(t, e.dsn("shop.u", "pw", "", "timeout=1s")).Exec("SELECT 1"); err == nil ||
		!strings.Contains(err.Error(), "refused") {
		t.Fatalf("new connection after Shutdown: %v", err)
	}
}
