package proxy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/serverlessd/serverlessd/compute"
)

// benchTargets are the ways to reach the shared backend: directly, and
// through the proxy to its unix socket or its TCP port.
func benchTargets(b *testing.B) (e *env, targets []struct{ name, dsn string }) {
	e = newEnv(b, nil)
	m := e.db
	return e, []struct{ name, dsn string }{
		{"direct-unix", fmt.Sprintf("u:pw@unix(%s)/app", m.sock)},
		{"direct-tcp", fmt.Sprintf("u:pw@tcp(%s)/app", m.tcpAddr())},
		{"proxy-to-unix", e.dsn("shop.u", "pw", "app", "")},
		{"proxy-to-tcp", e.dsn("tcpshop.u", "pw", "app", "")},
		{"proxy-tls-to-unix", e.dsn("shop.u", "pw", "app", "tls=skip-verify")},
	}
}

// BenchmarkConnectSelect1 measures a warm (compute running) connect plus
// SELECT 1 plus close, the cost a client without a pool pays per request.
// It reports p50 and p99 latencies besides the mean.
func BenchmarkConnectSelect1(b *testing.B) {
	_, targets := benchTargets(b)
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			cfg, err := mysql.ParseDSN(tg.dsn)
			if err != nil {
				b.Fatal(err)
			}
			conn, _ := mysql.NewConnector(cfg)
			ctx := context.Background()
			dest := make([]driver.Value, 1)
			var lat []time.Duration
			for b.Loop() {
				t0 := time.Now()
				c, err := conn.Connect(ctx)
				if err != nil {
					b.Fatal(err)
				}
				rows, err := c.(driver.QueryerContext).QueryContext(ctx, "SELECT 1", nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := rows.Next(dest); err != nil {
					b.Fatal(err)
				}
				rows.Close()
				c.Close()
				lat = append(lat, time.Since(t0))
			}
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkSelect1 measures a query on an open connection: the relay's
// per-round-trip cost, in each relay mode. The Go client runs in the same
// process, so its own wake-ups depend on how busy the runtime is: sysbench
// (bench.BenchmarkRelays) is the fairer comparison of relays.
func BenchmarkSelect1(b *testing.B) {
	e, targets := benchTargets(b)
	for _, tg := range targets {
		variants := relayVariants[:1]
		if strings.HasPrefix(tg.name, "proxy-") && !strings.Contains(tg.name, "tls") {
			variants = relayVariants
		}
		for _, v := range variants {
			name := tg.name
			if len(variants) > 1 {
				name += "-" + v.name
			}
			b.Run(name, func(b *testing.B) {
				defer e.useRelay(v)()
				benchSelect1(b, tg.dsn)
			})
		}
	}
}

func benchSelect1(b *testing.B, dsn string) {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var v int
	var lat []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := db.QueryRow("SELECT 1").Scan(&v); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	reportPercentiles(b, lat)
}

// BenchmarkBulkRead streams 64 MiB of result rows, comparing the spliced
// relay with a user-space copy.
func BenchmarkBulkRead(b *testing.B) {
	e, targets := benchTargets(b)
	const rows, rowSize = 64, 1 << 20
	q := fmt.Sprintf("SELECT REPEAT('x', %d) FROM seq_1_to_%d", rowSize, rows)
	run := func(b *testing.B, dsn string) {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		b.SetBytes(rows * rowSize)
		var s sql.RawBytes
		for b.Loop() {
			r, err := db.Query(q)
			if err != nil {
				b.Fatal(err)
			}
			for r.Next() {
				r.Scan(&s)
			}
			if err := r.Err(); err != nil {
				b.Fatal(err)
			}
			r.Close()
		}
	}
	b.Run("direct-unix", func(b *testing.B) { run(b, targets[0].dsn) })
	b.Run("direct-tcp", func(b *testing.B) { run(b, targets[1].dsn) })
	for _, v := range relayVariants {
		b.Run("proxy-to-unix-"+v.name, func(b *testing.B) {
			defer e.useRelay(v)()
			run(b, e.dsn("shop.u", "pw", "app", ""))
		})
		b.Run("proxy-to-tcp-"+v.name, func(b *testing.B) {
			defer e.useRelay(v)()
			run(b, e.dsn("tcpshop.u", "pw", "app", ""))
		})
	}
	b.Run("proxy-tls", func(b *testing.B) { run(b, e.dsn("shop.u", "pw", "app", "tls=skip-verify")) })
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkRelayCopy isolates the server->client relay: a backend socket
// (unix or TCP) streams 1 MiB writes, copyOut moves them to a loopback TCP
// client, which discards them. It compares splice(2) with a user-space copy.
// The relay goroutine ends when the backend socket closes.
func BenchmarkRelayCopy(b *testing.B) {
	for _, backendNet := range []string{"unix", "tcp"} {
		for _, mode := range []int{relayPlain, relaySplice} {
			b.Run(backendNet+"-"+relayModeNames[mode], func(b *testing.B) {
				defer setRelayMode(setRelayMode(mode))
				benchRelay(b, backendNet)
			})
		}
	}
}

func benchRelay(b *testing.B, backendNet string) {
	const chunk = 1 << 20
	srcW, srcR := socketPair(b, backendNet) // backend writes srcW, relay reads srcR
	dstW, dstR := socketPair(b, "tcp")      // relay writes dstW, client reads dstR
	go func() { io.Copy(io.Discard, readerOnly{dstR}) }()
	lease := (&compute.Activity{}).Acquire()
	done := make(chan struct{})
	go func() { copyOut(dstW, srcR, lease); close(done) }()
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	for b.Loop() {
		if _, err := srcW.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	srcW.Close()
	<-done
}

type readerOnly struct{ io.Reader }

var relayModeNames = map[int]string{relayPlain: "plain-copy", relaySplice: "splice"}

// relayVariant is one way to relay established sessions: Config.Relay,
// and for the goroutine relay its server->client copy.
type relayVariant struct {
	name  string
	relay string
	copy  int
}

var relayVariants = []relayVariant{
	{"event-loop", RelayEventLoop, relayPlain},
	{"plain-copy", RelayGoroutines, relayPlain},
	{"splice", RelayGoroutines, relaySplice},
}

// useRelay switches e's proxy to v for the sessions opened afterwards, and
// returns what switches it back.
func (e *env) useRelay(v relayVariant) (restore func()) {
	oldRelay, oldMode := e.srv.cfg.Relay, relayMode
	e.srv.cfg.Relay, relayMode = v.relay, v.copy
	return func() { e.srv.cfg.Relay, relayMode = oldRelay, oldMode }
}

// setRelayMode switches the relay and returns the previous mode. Only
// connections opened afterwards use the new mode.
func setRelayMode(m int) int {
	old := relayMode
	relayMode = m
	return old
}

// socketPair returns two connected sockets of network "unix" or "tcp".
func socketPair(b testing.TB, network string) (net.Conn, net.Conn) {
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(b.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	s := <-accepted
	b.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}
