package proxy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"

	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// benchTargets are the ways to reach the shared backend: directly, and
// through the proxy to its unix socket or its TCP port.
func benchTargets(b *testing.B) (e *env, targets []struct{ name, dsn string }) {
	e = newEnv(b, nil)
	m := e.db
	e.dir.pools["p-other"] = PoolSettings{Transaction: true, Size: 4}
	return e, []struct{ name, dsn string }{
		{"direct-unix", fmt.Sprintf("u:pw@unix(%s)/app", m.sock)},
		{"direct-tcp", fmt.Sprintf("u:pw@tcp(%s)/app", m.tcpAddr())},
		{"proxy-to-unix", e.dsn("shop.u", "pw", "app", "")},
		{"proxy-to-tcp", e.dsn("tcpshop.u", "pw", "app", "")},
		{"proxy-tls-to-unix", e.dsn("shop.u", "pw", "app", "tls=skip-verify")},
		{"proxy-pooled-to-unix", e.dsn("other.u", "pw", "app", "")},
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
// per-round-trip cost. The Go client runs in the same process, so its own
// wake-ups depend on how busy the runtime is: sysbench
// (bench.BenchmarkRelays) is the fairer comparison with other relays.
func BenchmarkSelect1(b *testing.B) {
	_, targets := benchTargets(b)
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) { benchSelect1(b, tg.dsn) })
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

// BenchmarkBulkRead streams 64 MiB of result rows, directly and through
// the relay.
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
	b.Run("proxy-to-unix", func(b *testing.B) { run(b, e.dsn("shop.u", "pw", "app", "")) })
	b.Run("proxy-to-tcp", func(b *testing.B) { run(b, e.dsn("tcpshop.u", "pw", "app", "")) })
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
