package proxy

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	driver "github.com/go-sql-driver/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

// tryLoginNative sends a mysql_native_password login on a connection that
// has read its greeting and returns the reply. It never calls t.Fatal, so
// goroutines may use it.
func tryLoginNative(c net.Conn, nonce []byte, user, pw string) ([]byte, error) {
	hr := &wire.HandshakeResponse{Caps: rawCaps, Charset: 45, User: user,
		AuthResponse: gomysql.CalcNativePassword(nonce, []byte(pw)), AuthPlugin: gomysql.AUTH_NATIVE_PASSWORD}
	if _, err := wire.WritePacket(c, 1, hr.Marshal()); err != nil {
		return nil, err
	}
	_, p, err := wire.ReadPacket(c, 1<<16)
	return p, err
}

// errCodeOf is the error code of an ERR packet, 0 for anything else.
func errCodeOf(p []byte) uint16 {
	if e, err := wire.ParseErr(p); err == nil {
		return e.Code
	}
	return 0
}

// changeUser sends COM_CHANGE_USER with mysql_native_password and returns
// the final reply, answering MariaDB's switch to a fresh nonce.
func (rc *rawClient) changeUser(user, pw string) []byte {
	rc.t.Helper()
	rc.seq = 0
	cu := &wire.ChangeUser{User: user, AuthResponse: gomysql.CalcNativePassword(rc.greet.Nonce, []byte(pw)),
		Charset: 45, HasCharset: true, AuthPlugin: gomysql.AUTH_NATIVE_PASSWORD, HasPlugin: true}
	rc.write(cu.Marshal(rc.caps))
	p := rc.read()
	if len(p) > 0 && p[0] == gomysql.EOF_HEADER {
		_, nonce, err := wire.ParseAuthSwitch(p)
		if err != nil {
			rc.t.Fatalf("auth switch %q: %v", p, err)
		}
		rc.write(gomysql.CalcNativePassword(nonce, []byte(pw)))
		p = rc.read()
	}
	return p
}

// TestRateLimitEveryCheck: 1,000 connections opened before any failure
// all send a wrong password at once. Only RateLimitBurst of them get a
// password check; the others are refused (1129) without one.
func TestRateLimitEveryCheck(t *testing.T) {
	const burst, conns = 10, 1000
	e := newEnv(t, func(c *Config) {
		c.RateLimitBurst, c.RateLimitInterval = burst, time.Hour
		c.AuthDelayThreshold = -1 // TestRoleDelay measures it
		c.MaxConnectionsPerSource = -1
		c.HandshakeTimeout = time.Minute
	})
	rcs := make([]*rawClient, conns)
	for i := range rcs {
		rcs[i] = dialRaw(t, e.addr)
	}
	codes := make([]uint16, conns)
	var wg sync.WaitGroup
	for i, rc := range rcs {
		wg.Go(func() {
			if p, err := tryLoginNative(rc.conn, rc.greet.Nonce, "shop.u", "wrong"); err == nil {
				codes[i] = errCodeOf(p)
			}
		})
	}
	wg.Wait()
	tally := map[uint16]int{}
	for _, c := range codes {
		tally[c]++
	}
	checks := e.srv.Count(CountPasswordChecks)
	t.Logf("%d connections sent a wrong password: %d password checks; replies by code %v", conns, checks, tally)
	if checks < 1 || checks > burst || tally[1045] != int(checks) || tally[1129] != conns-int(checks) {
		t.Fatalf("want at most %d checks answered 1045 and the rest 1129", burst)
	}
	if e.waker.total.Load() != 0 {
		t.Fatal("Wake called")
	}
}

// TestRateLimitChangeUser: 2,000 COM_CHANGE_USER guesses on one
// authenticated connection get at most RateLimitBurst password checks;
// then every attempt, even with the right password or an unknown user, gets
// the same 1129, and the session stays as it was.
func TestRateLimitChangeUser(t *testing.T) {
	const burst, guesses = 10, 2000
	e := newEnv(t, func(c *Config) {
		c.RateLimitBurst, c.RateLimitInterval = burst, time.Hour
		c.AuthDelayThreshold = -1
	})
	rc := dialRaw(t, e.addr)
	expectOK(t, rc.loginNative("shop.u", "pw"))
	tally := map[uint16]int{}
	for i := range guesses {
		tally[errCodeOf(rc.changeUser("shop.v", fmt.Sprintf("guess-%d", i)))]++
	}
	checks := e.srv.Count(CountPasswordChecks) - 1 // the login's own
	t.Logf("%d COM_CHANGE_USER guesses: %d password checks; replies by code %v", guesses, checks, tally)
	if checks < 1 || checks > burst || tally[1045] != int(checks) || tally[1129] != guesses-int(checks) {
		t.Fatalf("want at most %d checks answered 1045 and the rest 1129", burst)
	}
	expectErr(t, rc.changeUser("shop.v", "pw2"), gomysql.ER_HOST_IS_BLOCKED)
	expectErr(t, rc.changeUser("shop.nobody", "x"), gomysql.ER_HOST_IS_BLOCKED)
	if rows, err := rc.query("SELECT CURRENT_USER()"); err != nil || len(rows) != 1 || rows[0] != "u@%" {
		t.Fatalf("session after refused change users: %v %v", rows, err)
	}
	if got := e.srv.Count(CountChangeUserRefused); got != guesses+2 {
		t.Fatalf("change_user_refused = %d", got)
	}
}

// TestRateLimitGoodPool: a pool of concurrent good logins from one address
// is never throttled by itself, even with a bucket of one token: each
// check gives its token back, and a check that finds it held waits.
func TestRateLimitGoodPool(t *testing.T) {
	const n = 100
	e := newEnv(t, func(c *Config) { c.RateLimitBurst, c.RateLimitInterval = 1, time.Hour })
	cfg, err := driver.ParseDSN(e.dsn("shop.u", "pw", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := driver.NewConnector(cfg)
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	defer db.Close()
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			c, err := db.Conn(context.Background())
			if err != nil {
				t.Error(err)
				failed.Add(1)
				return
			}
			defer c.Close()
			if err := c.PingContext(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	if e.srv.Count(CountLogins) != n || e.srv.Count(CountRateLimited) != 0 {
		t.Fatalf("%d failed; counters %v", failed.Load(), e.srv.Counters())
	}
}

// TestRoleDelay: failures against one role from several addresses slow
// down every later answer about that role, up to AuthDelayMax; the right
// password still logs in after the delay, and other roles are untouched.
func TestRoleDelay(t *testing.T) {
	const maxDelay = 800 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.AuthDelayThreshold, c.AuthDelayMax, c.AuthDelayDecay = 2, maxDelay, time.Hour })
	login := func(ip, user, pw string) (time.Duration, []byte) {
		rc := dialRawFrom(t, e.addr, ip)
		t0 := time.Now()
		p := rc.loginNative(user, pw)
		return time.Since(t0), p
	}
	var took []time.Duration
	for i := range 8 {
		d, p := login(fmt.Sprintf("127.0.0.%d", 1+i%3), "shop.u", "guess")
		expectErr(t, p, gomysql.ER_ACCESS_DENIED_ERROR)
		took = append(took, d.Round(time.Millisecond))
	}
	t.Logf("8 failures against shop.u from 3 addresses answered after %v", took)
	if took[0] > maxDelay/4 || took[7] < maxDelay {
		t.Fatalf("want the first answers at once and the 8th after at least %s", maxDelay)
	}
	d, p := login("127.0.0.4", "shop.u", "pw")
	expectOK(t, p)
	t.Logf("the right password, from a fourth address: logged in after %s", d.Round(time.Millisecond))
	if d < maxDelay || d > maxDelay+3*time.Second {
		t.Fatalf("right password answered after %s, want about %s", d, maxDelay)
	}
	d, p = login("127.0.0.5", "p-shop.u", "guess") // the project by id: the same role
	expectErr(t, p, gomysql.ER_ACCESS_DENIED_ERROR)
	if d < maxDelay {
		t.Fatalf("the role named by project id escaped the delay (%s)", d)
	}
	d, p = login("127.0.0.1", "shop.v", "pw2")
	expectOK(t, p)
	if d > maxDelay/2 {
		t.Fatalf("another role was delayed %s", d)
	}
	if got := e.srv.Count(CountAuthDelayed); got != 7 {
		t.Fatalf("auth_delayed = %d, want 7", got)
	}
}

func TestRoleDelaysDecay(t *testing.T) {
	r := newRoleDelays(2, 1600*time.Millisecond, 10*time.Second)
	now := time.Unix(1000, 0)
	var got []time.Duration
	for range 9 {
		got = append(got, r.observe("k", false, now))
	}
	ms := time.Millisecond
	want := []time.Duration{0, 0, 0, 100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 1600 * ms}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	// The score (capped at threshold+5 = 7) leaks one failure per 10s.
	for _, tc := range []struct{ after, want time.Duration }{
		{0, 1600 * ms}, {10 * time.Second, 800 * ms}, {25 * time.Second, 400 * ms},
		{45 * time.Second, 100 * ms}, {60 * time.Second, 0},
	} {
		if d := r.observe("k", true, now.Add(tc.after)); d != tc.want {
			t.Errorf("%s after the last failure: delay %s, want %s", tc.after, d, tc.want)
		}
	}
	now = now.Add(time.Minute)
	r.observe("k", false, now) // back to 1 failure, below the threshold
	if d := r.observe("k", true, now.Add(-time.Millisecond)); d != 0 {
		t.Fatalf("an out-of-order clock reading grew the score: delay %s", d)
	}
	if d := r.observe("other", false, now); d != 0 {
		t.Fatalf("another role delayed %s", d)
	}
	for i := range maxTrackedRoles + 10 {
		r.observe(fmt.Sprint("spray-", i), false, now)
	}
	if len(r.scores) > maxTrackedRoles {
		t.Fatalf("%d scores kept, bound %d", len(r.scores), maxTrackedRoles)
	}
	if newRoleDelays(-1, time.Second, time.Second).observe("k", false, now) != 0 {
		t.Fatal("a negative threshold should disable the delay")
	}
}

// raiseNoFile lifts the soft descriptor limit to the hard one (Go does it
// at start-up on Linux already; this makes the requirement explicit).
func raiseNoFile(t *testing.T, need uint64) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		t.Fatal(err)
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			t.Fatal(err)
		}
	}
	if r.Cur < need {
		t.Fatalf("this test needs %d file descriptors; the limit is %d", need, r.Cur)
	}
}

// flood opens n connections from 127.0.0.1 that never send a login: the
// greeted ones are kept open (idle in their handshake), the refused ones
// are closed after reading their error.
func flood(t *testing.T, addr string, n int) (held []net.Conn, refused map[string]int) {
	var mu sync.Mutex
	refused = map[string]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, p, err := wire.ReadPacket(c, 1<<16)
				mu.Lock()
				switch e, perr := wire.ParseErr(p); {
				case err != nil:
					t.Error(err)
					c.Close()
				case perr == nil:
					refused[fmt.Sprint(e.Code, " ", e.Message)]++
					c.Close()
				default:
					held = append(held, c)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	return held, refused
}

// TestPerSourceCap: 10,000 connections from 127.0.0.1 that never finish
// their handshake hold at most MaxConnectionsPerSource (default 1000)
// slots, so a client from 127.0.0.2 still logs in.
func TestPerSourceCap(t *testing.T) {
	const n = 10000
	raiseNoFile(t, 12000) // 2 x 5,000 without the per-source cap, and the rest of the process
	e := newEnv(t, func(c *Config) {
		// MaxConnections is lowered from its 10,000 so that, without the
		// per-source cap, the flood fills it (both socket ends are in this
		// process: 2 x 5,000 descriptors) rather than the descriptor limit.
		c.MaxConnections = n / 2
		c.HandshakeTimeout = 2 * time.Minute
	})
	t0 := time.Now()
	held, refused := flood(t, e.addr, n)
	t.Logf("%d connections from 127.0.0.1 in %s: %d held, refused %v", n, time.Since(t0).Round(time.Millisecond), len(held), refused)
	rc := dialRawFrom(t, e.addr, "127.0.0.2")
	expectOK(t, rc.loginNative("shop.u", "pw"))
	if rows, err := rc.query("SELECT 1"); err != nil || rows[0] != "1" {
		t.Fatalf("query from 127.0.0.2: %v %v", rows, err)
	}
	if len(held) != 1000 || refused["1040 Too many connections from 127.0.0.1"] != n-1000 {
		t.Fatalf("want 1000 held and %d refused with 1040", n-1000)
	}
	if got := e.srv.Count(CountTooManyFromSource); got != n-1000 {
		t.Fatalf("too_many_connections_source = %d", got)
	}
}

// TestPerProjectCap: a project's logins past its limit (its own, bounded
// by MaxConnectionsPerProject, which is also the default) are refused
// with 1040 before any wake; closing one frees its slot.
func TestPerProjectCap(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxConnectionsPerProject = 3 })
	e.dir.mu.Lock()
	e.dir.limits["p-other"] = 2 // its own, lower
	e.dir.limits["p-tcp"] = 50  // above the bound: 3
	e.dir.mu.Unlock()
	for _, tc := range []struct {
		project, id string
		limit       int
	}{{"shop", "p-shop", 3}, {"other", "p-other", 2}, {"tcpshop", "p-tcp", 3}} {
		var open []*rawClient
		for range tc.limit {
			rc := dialRaw(t, e.addr)
			expectOK(t, rc.loginNative(tc.project+".u", "pw"))
			open = append(open, rc)
		}
		wakes := e.waker.wakes(tc.id)
		me := expectErr(t, dialRaw(t, e.addr).loginNative(tc.project+".u", "pw"), gomysql.ER_CON_COUNT_ERROR)
		if !strings.HasPrefix(me.Message, "Too many connections for project "+tc.project+": its limit is ") || e.waker.wakes(tc.id) != wakes {
			t.Fatalf("%s: %q, wakes %d -> %d", tc.project, me.Message, wakes, e.waker.wakes(tc.id))
		}
		open[0].conn.Close()
		waitFor(t, 2*time.Second, func() bool { return e.srv.projects.count(tc.id) == tc.limit-1 })
		expectOK(t, dialRaw(t, e.addr).loginNative(tc.project+".u", "pw"))
	}
	if got := e.srv.Count(CountTooManyForProject); got != 3 {
		t.Fatalf("too_many_connections_project = %d", got)
	}
}

func TestEffectiveLimit(t *testing.T) {
	for _, tc := range []struct{ own, bound, want int }{
		{0, 100, 100}, {50, 100, 50}, {500, 100, 100}, {0, -1, 0}, {50, -1, 50},
	} {
		if got := effectiveLimit(tc.own, tc.bound); got != tc.want {
			t.Errorf("effectiveLimit(%d, %d) = %d, want %d", tc.own, tc.bound, got, tc.want)
		}
	}
}

// TestStoreDirectoryLimits: the daemon's Directory reads a project's
// max_connections from its stored config.
func TestStoreDirectoryLimits(t *testing.T) {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	p := &store.Project{Name: "capped", Config: store.ProjectConfig{MaxConnections: 7}}
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	var pl ProjectLimits = StoreDirectory{Store: st}
	if n, err := pl.ProjectMaxConnections(ctx, p.ID); err != nil || n != 7 {
		t.Fatalf("got %d, %v", n, err)
	}
	if _, err := pl.ProjectMaxConnections(ctx, "nosuch"); err == nil {
		t.Fatal("unknown project: no error")
	}
}

// TestGoMySQLClient: github.com/go-mysql-org/go-mysql's client always sets
// CLIENT_QUERY_ATTRIBUTES, which the proxy does not offer. It is ignored,
// as MariaDB ignores capabilities it did not offer, and the client works.
func TestGoMySQLClient(t *testing.T) {
	e := newEnv(t, nil)
	c, err := client.Connect(e.addr, "shop.u", "pw", "app")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Execute("SELECT CURRENT_USER(), DATABASE()")
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := r.GetString(0, 0); u != "u@%" {
		t.Fatalf("user %q", u)
	}
	r, err = c.Execute("SELECT ? + 1", 41) // a prepared statement
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := r.GetInt(0, 0); v != 42 {
		t.Fatalf("got %d", v)
	}
	// A raw client sending other capabilities we did not offer logs in too.
	rc := dialRaw(t, e.addr)
	rc.login("shop.u", gomysql.AUTH_NATIVE_PASSWORD, gomysql.CalcNativePassword(rc.greet.Nonce, []byte("pw")),
		gomysql.CLIENT_QUERY_ATTRIBUTES|gomysql.CLIENT_OPTIONAL_RESULTSET_METADATA|gomysql.MULTI_FACTOR_AUTHENTICATION)
	expectOK(t, rc.read())
	if rows, err := rc.query("SELECT 1"); err != nil || rows[0] != "1" {
		t.Fatalf("%v %v", rows, err)
	}
	// Compression is still refused when asked for regardless.
	rc = dialRaw(t, e.addr)
	rc.login("shop.u", gomysql.AUTH_NATIVE_PASSWORD, gomysql.CalcNativePassword(rc.greet.Nonce, []byte("pw")), gomysql.CLIENT_ZSTD_COMPRESSION_ALGORITHM)
	if me := expectErr(t, rc.read(), gomysql.ER_NOT_SUPPORTED_YET); !strings.Contains(me.Message, "compression") {
		t.Fatal(me)
	}
}
