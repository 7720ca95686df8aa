package bench

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/compute/mariadb"
	"github.com/serverlessd/serverlessd/proxy"
	"github.com/serverlessd/serverlessd/store"
)

// Flags of BenchmarkProxySysbench (pass them after -args).
var (
	proxyProfile  = flag.String("proxyprofile", "", "write a CPU profile of the sysbench window of BenchmarkProxySysbench to this file")
	proxyWorkload = flag.String("proxyworkload", "oltp_point_select", "sysbench workload of BenchmarkProxySysbench")
	proxyThreads  = flag.Int("proxythreads", 4, "sysbench threads of BenchmarkProxySysbench")
	proxyTime     = flag.Duration("proxytime", 20*time.Second, "sysbench run time of BenchmarkProxySysbench")
	proxyPool     = flag.Int("proxypool", 0, "BenchmarkProxySysbench with transaction pooling over this many backend connections (0: session mode)")
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// cpuTime is this process's user+system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCompute provisions and starts one compute with the local driver, so
// the backend has exactly the settings serverlessd gives computes, and
// returns the driver, the compute and its admin credentials.
func startCompute(b *testing.B, dir string) (*local.Driver, *store.Compute, compute.Credentials, string) {
	b.Helper()
	ctx := context.Background()
	drv, err := local.New(local.Options{Dir: filepath.Join(dir, "computes"), StopTimeout: 30 * time.Second, Logger: quiet()})
	if err != nil {
		b.Fatalf("local driver (is mariadb-server installed?): %v", err)
	}
	c := &store.Compute{ID: "cmp_bench", Driver: "local"}
	if err := drv.Provision(ctx, c); err != nil {
		b.Fatal(err)
	}
	addr, err := drv.Start(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = drv.Stop(context.Background(), c) })
	creds, err := drv.Admin(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	return drv, c, creds, strings.TrimPrefix(addr, "unix:")
}

// BenchmarkProxySysbench runs serverlessd's proxy in this process in front of
// a compute-configured mariadbd and drives it with sysbench, so that a CPU
// profile of this process is a profile of the proxy's hot path and nothing
// else (sysbench and mariadbd are other processes). The directory and waker
// are in-memory stand-ins: after the login they are not on the hot path.
//
//	go test -run '^$' -bench ProxySysbench -benchtime 1x ./bench -args -proxyprofile=cpu.pprof
//	go tool pprof -top cpu.pprof
func BenchmarkProxySysbench(b *testing.B) {
	dir := localtest.Dir(b)
	sock := prepareSysbench(b, dir)
	ctx := context.Background()
	tgt := startProxy(b, dir, sock, "")

	if *proxyProfile != "" {
		f, err := os.Create(*proxyProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatalf("%v (do not combine -proxyprofile with -cpuprofile)", err)
		}
		defer pprof.StopCPUProfile()
	}
	var res SysbenchResult
	var cpu time.Duration
	for b.Loop() {
		c0 := cpuTime(b)
		var err error
		res, err = SysbenchRun(ctx, tgt, *proxyWorkload, *proxyThreads, *proxyTime)
		if err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime(b) - c0
	}
	b.ReportMetric(res.TPS, "tps")
	b.ReportMetric(res.QPS, "qps")
	// The proxy's CPU per query: the figure that decides how much of a
	// 2-core machine the relay takes from the database.
	queries := res.QPS * proxyTime.Seconds() * float64(b.N)
	b.ReportMetric(float64(cpu.Microseconds())/queries, "proxy-cpu-µs/query")
	b.ReportMetric(0, "ns/op")
}

// prepareSysbench starts a compute with sysbench's tables and user sb.
func prepareSysbench(b *testing.B, dir string) (sock string) {
	mysql.SetLogger(mysql.Logger(nopLogger{}))
	_, _, admin, sock := startCompute(b, dir)
	db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@unix(%s)/", admin.User, admin.Password, sock))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS " + SysbenchDB,
		"CREATE USER IF NOT EXISTS 'sb'@'%' IDENTIFIED BY 'pw'",
		"GRANT ALL ON *.* TO 'sb'@'%'",
	} {
		if _, err := db.Exec(q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	if err := SysbenchPrepare(context.Background(), Target{Name: "direct", Socket: sock, User: "sb", Pass: "pw"}); err != nil {
		b.Fatal(err)
	}
	return sock
}

// startProxy runs an in-process proxy with the given relay in front of the
// compute's socket, and returns it as a sysbench target.
func startProxy(b *testing.B, dir, sock, relay string) Target {
	w := &fixedWaker{addr: "unix:" + sock}
	srv, err := proxy.New(proxy.Config{DataDir: filepath.Join(dir, "proxy"), RateLimitBurst: -1, Relay: relay}, fixedDir{pool: *proxyPool}, w, quiet())
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	port := ln.Addr().(*net.TCPAddr).Port
	return Target{Name: "serverlessd", Host: "127.0.0.1", Port: port, User: "bench.sb", Pass: "pw"}
}

type fixedDir struct{ pool int }

func (d fixedDir) ProjectPooling(context.Context, string) (proxy.PoolSettings, error) {
	return proxy.PoolSettings{Transaction: d.pool > 0, Size: d.pool}, nil
}

func (fixedDir) LookupRole(ctx context.Context, project, user string) (string, string, error) {
	if project != "bench" || user != "sb" {
		return "", "", fmt.Errorf("unknown role %s.%s", project, user)
	}
	return "prj_bench", mariadb.HashPassword("pw"), nil
}

type fixedWaker struct {
	addr string
	act  compute.Activity
}

func (w *fixedWaker) Wake(ctx context.Context, projectID string) (compute.WakeResult, error) {
	return compute.WakeResult{Address: w.addr, ComputeID: "cmp_bench", ProjectID: projectID}, nil
}

// Warm answers as the manager does for a running compute.
func (w *fixedWaker) Warm(projectID string) (compute.WakeResult, bool) {
	res, err := w.Wake(context.Background(), projectID)
	return res, err == nil
}

func (w *fixedWaker) Activity(string) *compute.Activity { return &w.act }

type nopLogger struct{}

func (nopLogger) Print(...any) {}
