package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// TestRefusals: every refusal gets its answer, is counted, and never wakes
// a compute.
func TestRefusals(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	denied := []struct{ name, user, pw string }{
		{"wrong-password", "shop.u", "nope"},
		{"unknown-user", "shop.nobody", "pw"},
		{"unknown-project", "nosuch.u", "pw"},
		{"no-project", "u", "pw"},
		{"empty-project", ".u", "pw"},
		{"role-without-hash", "shop.nohash", "x"},
		{"empty-password", "shop.u", ""},
		{"project-by-id-wrong-password", "p-shop.u", "nope"},
	}
	var msgs []string
	for _, tc := range denied {
		t.Run(tc.name, func(t *testing.T) {
			err := openDB(t, e.dsn(tc.user, tc.pw, "", "")).PingContext(ctx)
			if mysqlErrNumber(err) != 1045 {
				t.Fatalf("want 1045, got %v", err)
			}
			if tc.pw != "" {
				msgs = append(msgs, strings.Replace(err.Error(), "'"+tc.user+"'", "'X'", 1))
			}
		})
	}
	t.Run("same-message", func(t *testing.T) {
		for _, m := range msgs[1:] {
			if m != msgs[0] {
				t.Fatalf("messages differ:\n%s\n%s", msgs[0], m)
			}
		}
	})
	t.Run("malformed", func(t *testing.T) {
		for _, p := range [][]byte{
			{0x01},           // too short
			make([]byte, 32), // no PROTOCOL_41
			append([]byte{0x00, 0x02, 0x08, 0x00}, make([]byte, 28)...), // no user after the prefix
			[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		} {
			rc := dialRaw(t, e.addr)
			rc.write(p)
			if reply, err := rc.tryRead(); err == nil {
				expectErr(t, reply, mysql.ER_HANDSHAKE_ERROR)
			}
			assertClosed(t, rc.conn)
		}
	})
	t.Run("aborted", func(t *testing.T) {
		rc := dialRaw(t, e.addr)
		rc.conn.Write([]byte{50, 0, 0, 1, 1, 2, 3}) // half a packet, then close
		rc.conn.Close()
	})
	if n := e.waker.total.Load(); n != 0 {
		t.Fatalf("Wake called %d times for refused logins", n)
	}
	waitFor(t, 2*time.Second, func() bool { return e.srv.Count(CountHandshakeAborted) == 1 })
	if got := e.srv.Count(CountAuthFailed); got != int64(len(denied)) {
		t.Fatalf("auth_failed = %d, want %d", got, len(denied))
	}
	if got := e.srv.Count(CountMalformed); got != 4 {
		t.Fatalf("malformed_handshake = %d, want 4 (%v)", got, e.srv.Counters())
	}
}

func assertClosed(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("connection not closed: %v", err)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestRateLimit: after RateLimitBurst failures an address is refused, even
// with the right password, before any work.
func TestRateLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RateLimitBurst = 3; c.RateLimitInterval = time.Hour })
	for range 3 {
		if err := openDB(t, e.dsn("shop.u", "nope", "", "")).Ping(); mysqlErrNumber(err) != 1045 {
			t.Fatalf("want 1045, got %v", err)
		}
	}
	err := openDB(t, e.dsn("shop.u", "pw", "", "")).Ping()
	if mysqlErrNumber(err) != 1129 {
		t.Fatalf("want 1129 after 3 failures, got %v", err)
	}
	if e.srv.Count(CountRateLimited) != 1 || e.waker.total.Load() != 0 {
		t.Fatalf("counters %v, wakes %d", e.srv.Counters(), e.waker.total.Load())
	}
}

func TestRateLimiterRefill(t *testing.T) {
	l := newFailLimiter(2, time.Second)
	now := time.Unix(1000, 0)
	fail := func(key string) {
		if ok, _ := l.tryTake(key, now); !ok {
			t.Fatalf("no token for %s", key)
		}
		l.settle(key, false, now)
	}
	fail("a")
	fail("a")
	if l.allowed("a", now) || !l.allowed("b", now) {
		t.Fatal("bucket of a should be empty, b untouched")
	}
	if ok, wait := l.tryTake("a", now); ok || wait != nil {
		t.Fatal("a spent by failures: refused at once, no waiting")
	}
	if !l.allowed("a", now.Add(time.Second)) {
		t.Fatal("a should regain one attempt per interval")
	}
	l.sweep(now.Add(time.Hour))
	if len(l.buckets) != 0 {
		t.Fatal("sweep kept a full bucket")
	}
	if newFailLimiter(-1, time.Second) != nil {
		t.Fatal("negative burst should disable the limiter")
	}
	v6 := &net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}
	if k := limiterKey(v6); k != "2001:db8:1:2::/64" {
		t.Fatalf("IPv6 key %q", k)
	}
}

// TestRateLimiterInFlight: tokens held by checks in flight make the next
// check wait instead of failing; a success gives its token back, so a
// burst of good logins never throttles itself.
func TestRateLimiterInFlight(t *testing.T) {
	l := newFailLimiter(1, time.Hour)
	now := time.Unix(1000, 0)
	if ok, _ := l.tryTake("a", now); !ok {
		t.Fatal("first take")
	}
	ok, wait := l.tryTake("a", now)
	if ok || wait == nil {
		t.Fatal("second check should wait for the first")
	}
	l.settle("a", true, now)
	<-wait
	if ok, _ := l.tryTake("a", now); !ok {
		t.Fatal("the token given back by a success should be free")
	}
	l.sweep(now.Add(time.Hour))
	if len(l.buckets) != 1 {
		t.Fatal("sweep dropped a bucket with a check in flight")
	}
	l.settle("a", false, now)
	if ok, wait := l.tryTake("a", now); ok || wait != nil {
		t.Fatal("a failure keeps its token spent")
	}
	// Clocks read before the lock may arrive out of order: an older time
	// must not take part of a token away.
	b := newFailLimiter(1, time.Hour)
	b.tryTake("a", now)
	b.settle("a", true, now.Add(-time.Microsecond))
	if ok, _ := b.tryTake("a", now.Add(-2*time.Microsecond)); !ok {
		t.Fatal("an out-of-order clock reading cost a token")
	}
}

// TestLimits: MaxConnections, HandshakeTimeout and MaxHandshakePacket.
func TestLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.MaxConnections = 2
		c.HandshakeTimeout = 300 * time.Millisecond
		c.MaxHandshakePacket = 1024
	})
	t.Run("max-connections", func(t *testing.T) {
		a, b := dialRaw(t, e.addr), dialRaw(t, e.addr)
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, p, err := wire.ReadPacket(c, 1<<16)
		if err != nil {
			t.Fatal(err)
		}
		expectErr(t, p, mysql.ER_CON_COUNT_ERROR)
		a.conn.Close()
		b.conn.Close()
	})
	t.Run("handshake-timeout", func(t *testing.T) {
		waitFor(t, 2*time.Second, func() bool { return e.srv.ActiveConnections() == 0 })
		rc := dialRaw(t, e.addr)
		start := time.Now()
		assertClosed(t, rc.conn)
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Fatalf("closed after %s", d)
		}
	})
	t.Run("packet-too-large", func(t *testing.T) {
		rc := dialRaw(t, e.addr)
		rc.conn.Write([]byte{0x00, 0x20, 0x00, 1}) // declares 8 KiB
		expectErr(t, rc.read(), mysql.ER_NET_PACKET_TOO_LARGE)
		assertClosed(t, rc.conn)
	})
	waitFor(t, 2*time.Second, func() bool { return e.srv.Count(CountHandshakeTimeout) >= 1 })
	c := e.srv.Counters()
	if c["too_many_connections"] != 1 || c["packet_too_large"] != 1 {
		t.Fatalf("counters: %v", c)
	}
	if e.waker.total.Load() != 0 {
		t.Fatal("Wake called")
	}
}

// TestWakeFailure: a compute that cannot start gives the client a generic
// message with a reference, never the cause (compute ids, the daemon's
// admin user, socket paths), which goes to the log under that reference.
func TestWakeFailure(t *testing.T) {
	logs := &syncBuffer{}
	e := newEnvLogger(t, nil, slog.New(slog.NewTextHandler(logs, nil)))
	e.waker.fail["p-broken"] = errors.New("compute c-p-broken: connect as serverlessd_admin@unix:/data/computes/c-p-broken/mysqld.sock: mariadbd exited during start-up: status 1")
	err := openDB(t, e.dsn("broken.u", "pw", "", "")).Ping()
	msg := fmt.Sprint(err)
	if !strings.Contains(msg, `the database of project "broken" could not be started; try again in a moment (reference `) {
		t.Fatalf("got %v", err)
	}
	for _, secret := range []string{"c-p-broken", "serverlessd_admin", "/data/computes", "mariadbd"} {
		if strings.Contains(msg, secret) {
			t.Errorf("client message names %q: %s", secret, msg)
		}
	}
	ref := regexp.MustCompile(`reference ([0-9a-f]{8})`).FindStringSubmatch(msg)
	if ref == nil || !strings.Contains(logs.String(), "ref="+ref[1]) || !strings.Contains(logs.String(), "serverlessd_admin") {
		t.Fatalf("the log lacks the cause under reference %v:\n%s", ref, logs.String())
	}
	err = openDB(t, e.dsn("nocompute.u", "pw", "", "")).Ping()
	if err == nil || !strings.Contains(err.Error(), `project "nocompute" has no compute; create one through the API`) {
		t.Fatalf("no compute: %v", err)
	}
	if e.srv.Count(CountWakeFailed) != 2 {
		t.Fatalf("wake_failed = %d", e.srv.Count(CountWakeFailed))
	}
}

// TestRefusedCompression: a client asking for a capability the proxy did
// not offer and cannot carry is refused clearly.
func TestRefusedCompression(t *testing.T) {
	e := newEnv(t, nil)
	rc := dialRaw(t, e.addr)
	if rc.greet.Caps&(mysql.CLIENT_COMPRESS|mysql.CLIENT_QUERY_ATTRIBUTES|wire.ClientMySQL) != 0 {
		t.Fatalf("greeting advertises %v", wire.CapNames(rc.greet.Caps))
	}
	rc.login("shop.u", mysql.AUTH_NATIVE_PASSWORD, mysql.CalcNativePassword(rc.greet.Nonce, []byte("pw")), mysql.CLIENT_COMPRESS)
	expectErr(t, rc.read(), mysql.ER_NOT_SUPPORTED_YET)
}
