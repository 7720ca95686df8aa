package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/serverlessd/serverlessd/bench"
)

// PoolingResult: transaction pooling against session mode and a direct
// connection, on one compute, and what idle pooled clients cost the
// daemon.
type PoolingResult struct {
	PoolSize int
	RunTime  time.Duration
	Reps     int
	Cells    []PoolCell
	Idle     IdleConnsResult
	Burst    ConnBurstResult
}

// PoolCell is one sysbench workload at one thread count on the three paths.
type PoolCell struct {
	Workload string
	Threads  int
	// Median transactions/s over the repetitions.
	Direct, Session, Transaction float64
	// Medians of the per-repetition ratios.
	TxVsSession, TxVsDirect, SessionVsDirect float64
	// The spread of TxVsSession over the repetitions.
	TxVsSessionMin, TxVsSessionMax float64
	// The daemon's CPU per transaction (µs) in each mode.
	SessionCPU, TransactionCPU float64
}

// IdleConnsResult is the daemon holding many idle pooled client
// connections.
type IdleConnsResult struct {
	Conns       int
	Failed      int
	ErrorKind   []string
	Open        time.Duration // to open them all, 100 at a time
	RSSBefore   float64       // MiB, before they were opened
	RSSAfter    float64       // MiB, with them all open and idle
	IdleFor     time.Duration
	CPUPercent  float64 // of one core, while they idle
	BackendMost int     // backend connections of the compute at the end
	// The Go runtime's own count, from /metrics at the end against the
	// start: live heap and goroutine stacks (MiB), and goroutines.
	HeapBefore, HeapAfter   float64
	StackBefore, StackAfter float64
	Goroutines              int
}

// ConnBurstResult is many short connections (connect, one query, close)
// spread over a short time, on a running compute.
type ConnBurstResult struct {
	Conns     int
	Spread    time.Duration
	Errors    int
	ErrorKind []string
	Latency   bench.Latency // connect + query
}

// Shape of the pooling phase.
const (
	poolingSize      = 16
	poolingIdleConns = 10000
	// poolingIdleFor spans the Go runtime's forced collection (every 2
	// minutes), so that the memory left at the end is what the idle
	// connections hold, not the garbage of opening them.
	poolingIdleFor    = 150 * time.Second
	poolingBurstConns = 1000
	poolingBurstOver  = time.Second
)

// pooling runs the phase on a daemon of its own, whose proxy lets one
// source and one project hold every connection.
func (s *suite) pooling() error {
	d, err := startDaemonEnv(s.bin, filepath.Join(s.opts.workDir, "d-pooling"), 0,
		"SERVERLESSD_PROXY_MAX_CONNECTIONS=20000", "SERVERLESSD_PROXY_MAX_CONNECTIONS_PER_SOURCE=-1",
		"SERVERLESSD_PROXY_MAX_CONNECTIONS_PER_PROJECT=-1")
	if err != nil {
		return err
	}
	defer d.stop()
	p, err := d.createProject("pooling", 0)
	if err != nil {
		return err
	}
	if err := d.createCompute(p, ""); err != nil {
		return err
	}
	res := &PoolingResult{PoolSize: poolingSize, RunTime: s.opts.sbTime, Reps: s.opts.sbReps}
	s.res.Pooling = res
	if err := s.poolingThroughput(d, p, res); err != nil {
		return err
	}
	if err := d.poolMode(p, "transaction"); err != nil {
		return err
	}
	res.Burst = connBurst(d, p)
	log.Printf("burst of %d connections over %s: %d errors, p50 %.1f ms, p99 %.1f ms",
		res.Burst.Conns, res.Burst.Spread, res.Burst.Errors, res.Burst.Latency.P50, res.Burst.Latency.P99)
	res.Idle, err = idleConns(d, p)
	log.Printf("%d idle pooled connections: RSS %.0f -> %.0f MiB, %.2f%% of a core",
		res.Idle.Conns, res.Idle.RSSBefore, res.Idle.RSSAfter, res.Idle.CPUPercent)
	return err
}

// poolMode sets the project's pool mode, with the phase's pool size.
func (d *daemon) poolMode(p *project, mode string) error {
	return d.call("PATCH", "/api/v1/projects/"+p.ref(), map[string]any{"config": map[string]any{"pool_mode": mode, "pool_size": poolingSize}}, nil)
}

// poolingThroughput runs sysbench directly, through the proxy in session
// mode and in transaction mode, interleaved; a mode applies to the logins
// after it is set, and each sysbench run logs in anew.
func (s *suite) poolingThroughput(d *daemon, p *project, res *PoolingResult) error {
	ctx := context.Background()
	db, err := sql.Open("mysql", directDSN(p, ""))
	if err != nil {
		return err
	}
	_, err = db.Exec("CREATE DATABASE " + bench.SysbenchDB)
	db.Close()
	if err != nil {
		return err
	}
	direct := bench.Target{Name: "direct", Socket: p.Socket, User: "root", Pass: p.Password}
	if err := bench.SysbenchPrepare(ctx, direct); err != nil {
		return err
	}
	host, port := splitAddr(d.proxy)
	proxied := bench.Target{Name: "serverlessd", Host: host, Port: port, User: p.Name + ".root", Pass: p.Password}
	modes := []string{"", "session", "transaction"} // "": direct
	run := func(mode, wl string, th int, t time.Duration) (bench.SysbenchResult, time.Duration, error) {
		target := direct
		if mode != "" {
			target = proxied
			if err := d.poolMode(p, mode); err != nil {
				return bench.SysbenchResult{}, 0, err
			}
		}
		c0 := cpuOf(d.pid())
		r, err := bench.SysbenchRun(ctx, target, wl, th, t)
		return r, cpuOf(d.pid()) - c0, err
	}
	for _, m := range modes { // warm the buffer pool and each path
		if _, _, err := run(m, "oltp_read_only", 4, time.Second); err != nil {
			return fmt.Errorf("warm-up (%q): %w", m, err)
		}
	}
	for _, wl := range []string{"oltp_point_select", "oltp_read_write"} {
		for _, th := range []int{16, 64} {
			c := PoolCell{Workload: wl, Threads: th}
			tps := make([][]float64, 3)
			cpu := make([]time.Duration, 3)
			txns := make([]float64, 3)
			var txVsS, txVsD, sVsD []float64
			for rep := range s.opts.sbReps {
				got := make([]float64, 3)
				for k := range modes {
					i := (k + rep) % 3
					r, used, err := run(modes[i], wl, th, s.opts.sbTime)
					if err != nil {
						return fmt.Errorf("%s/%d (%q): %w", wl, th, modes[i], err)
					}
					got[i] = r.TPS
					tps[i] = append(tps[i], r.TPS)
					cpu[i] += used
					txns[i] += r.TPS * s.opts.sbTime.Seconds()
				}
				txVsS, txVsD, sVsD = append(txVsS, got[2]/got[1]), append(txVsD, got[2]/got[0]), append(sVsD, got[1]/got[0])
			}
			c.Direct, c.Session, c.Transaction = bench.Median(tps[0]), bench.Median(tps[1]), bench.Median(tps[2])
			c.TxVsSession, c.TxVsDirect, c.SessionVsDirect = bench.Median(txVsS), bench.Median(txVsD), bench.Median(sVsD)
			c.TxVsSessionMin, c.TxVsSessionMax = minMax(txVsS)
			c.SessionCPU = float64(cpu[1].Microseconds()) / txns[1]
			c.TransactionCPU = float64(cpu[2].Microseconds()) / txns[2]
			res.Cells = append(res.Cells, c)
			log.Printf("%-18s %2d thr: direct %8.0f  session %8.0f  transaction %8.0f  tx/session %.2f",
				wl, th, c.Direct, c.Session, c.Transaction, c.TxVsSession)
		}
	}
	return nil
}

// connBurst opens poolingBurstConns connections spread evenly over
// poolingBurstOver, each running one query and closing, as functions do.
func connBurst(d *daemon, p *project) ConnBurstResult {
	res := ConnBurstResult{Conns: poolingBurstConns, Spread: poolingBurstOver}
	dsn := d.proxyDSN(p, "")
	lat := make([]time.Duration, poolingBurstConns)
	errs := make([]error, poolingBurstConns)
	gap := poolingBurstOver / poolingBurstConns
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range poolingBurstConns {
		time.Sleep(time.Until(t0.Add(time.Duration(i) * gap)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			errs[i] = oneShot(dsn)
			lat[i] = time.Since(start)
		}()
	}
	wg.Wait()
	var ok []time.Duration
	kinds := map[string]bool{}
	for i, err := range errs {
		if err != nil {
			res.Errors++
			kinds[fmt.Sprintf("%.120s", err.Error())] = true
			continue
		}
		ok = append(ok, lat[i])
	}
	res.Latency = bench.Summarize(ok)
	res.ErrorKind = sortedKeys(kinds)
	return res
}

// oneShot connects, runs SELECT 1 and closes.
func oneShot(dsn string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := withTimeout(time.Minute)
	defer cancel()
	var n int
	return db.QueryRowContext(ctx, "SELECT 1").Scan(&n)
}

// idleConns opens poolingIdleConns pooled connections, each after one
// query, and measures the daemon's memory and CPU while they idle.
func idleConns(d *daemon, p *project) (IdleConnsResult, error) {
	res := IdleConnsResult{Conns: poolingIdleConns, IdleFor: poolingIdleFor}
	rss := func() float64 {
		kb, _ := procStatusKB(d.pid(), "VmRSS")
		return float64(kb) / 1024
	}
	res.RSSBefore = rss()
	goMem := func() (heap, stack float64, goroutines int) {
		m, err := d.metrics()
		if err != nil {
			return 0, 0, 0
		}
		return m["go_memstats_heap_inuse_bytes"] / (1 << 20), m["go_memstats_stack_inuse_bytes"] / (1 << 20), int(m["go_goroutines"])
	}
	res.HeapBefore, res.StackBefore, _ = goMem()
	db, err := sql.Open("mysql", d.proxyDSN(p, ""))
	if err != nil {
		return res, err
	}
	defer db.Close()
	db.SetMaxOpenConns(poolingIdleConns)
	db.SetMaxIdleConns(poolingIdleConns)
	conns := make([]*sql.Conn, poolingIdleConns)
	errs := make([]error, poolingIdleConns)
	var g errgroup.Group
	g.SetLimit(100)
	t0 := time.Now()
	for i := range conns {
		g.Go(func() error {
			ctx, cancel := withTimeout(time.Minute)
			defer cancel()
			c, err := db.Conn(ctx)
			if err == nil {
				var n int
				err = c.QueryRowContext(ctx, "SELECT 1").Scan(&n)
			}
			conns[i], errs[i] = c, err
			return nil
		})
	}
	g.Wait()
	res.Open = time.Since(t0)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	kinds := map[string]bool{}
	for _, err := range errs {
		if err != nil {
			res.Failed++
			kinds[fmt.Sprintf("%.120s", err.Error())] = true
		}
	}
	res.ErrorKind = sortedKeys(kinds)
	time.Sleep(5 * time.Second) // let the daemon settle (a GC cycle)
	c0 := cpuOf(d.pid())
	time.Sleep(poolingIdleFor)
	res.CPUPercent = 100 * float64(cpuOf(d.pid())-c0) / float64(poolingIdleFor)
	res.RSSAfter = rss()
	res.HeapAfter, res.StackAfter, res.Goroutines = goMem()
	var n int
	if err := sqlOne(directDSN(p, ""), "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'root'", &n); err == nil {
		res.BackendMost = n - 1 // less this query's own
	}
	return res, nil
}

func sqlOne(dsn, q string, v any) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.QueryRow(q).Scan(v)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
