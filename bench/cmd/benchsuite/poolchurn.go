package main

import (
	"database/sql"
	"fmt"
	"log"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/serverlessd/serverlessd/bench"
)

// PoolChurnResult: applications' connection pools kept open while their
// projects' computes suspend between bursts of queries and wake at the
// next burst, on connections that stay open throughout.
type PoolChurnResult struct {
	Projects      int
	PoolSize      int
	Duration      time.Duration
	IdleTimeout   int // seconds
	Interval      time.Duration
	Memory        string
	Rows          int // rows of the table each query counts
	Bursts        int
	Queries       int
	FailedQueries int
	ErrorKind     []string
	Query         bench.Latency // every successful query
	SlowQuery     bench.Latency // queries slower than 20 ms: those that waited for a start
	Starts        int           // wake starts (operations API)
	IdleSuspends  int           // idle suspends by the scheduler (operations API)
	// From /metrics: sessions detached for a suspend, re-attached starting
	// the compute (cold) or to a compute already running (warm), and
	// re-attaches that failed.
	Detached       int
	ReattachCold   int
	ReattachWarm   int
	ReattachFailed int
	OpenAtEnd      int // the pools' open connections at the end, all together
	FullPools      int // pools with all PoolSize connections open at the end
	// Redialed is the connections database/sql opened after the pools were
	// filled: it replaces a connection it finds dead without a word to the
	// application, so only this count shows whether sessions were kept.
	Redialed int
}

// The pool churn's shape: pools of poolSize connections, as an
// application's database/sql pool would hold them, on small computes that
// suspend after poolIdle seconds without a query; every query counts the
// poolRows rows of a table made at setup.
const (
	poolSize   = 10
	poolIdle   = 1
	poolMemory = "128Mi"
	poolRows   = 100
)

// pool is one project with its application's connection pool.
type pool struct {
	p      *project
	db     *sql.DB
	dialer *countingConnector
	filled int64 // connections dialed when the pool was filled
}

// poolChurn runs the pool churn on a daemon of its own, with the short
// scheduler interval of the churn run.
func (s *suite) poolChurn() error {
	d, err := startDaemon(s.bin, filepath.Join(s.opts.workDir, "d3"), s.opts.interval)
	if err != nil {
		return err
	}
	defer d.stop()
	pools, err := s.poolProjects(d)
	defer func() {
		for _, pl := range pools {
			if pl != nil {
				pl.db.Close()
			}
		}
	}()
	if err != nil {
		return err
	}
	return s.poolRun(d, pools)
}

// poolProjects creates the projects with their computes and table, four at
// a time, and fills each one's pool: poolSize connections opened together.
func (s *suite) poolProjects(d *daemon) ([]*pool, error) {
	pools := make([]*pool, s.opts.poolN)
	var g errgroup.Group
	g.SetLimit(4)
	for i := range pools {
		g.Go(func() error {
			p, err := d.createProject(fmt.Sprintf("pool%02d", i), poolIdle)
			if err != nil {
				return err
			}
			if err := d.createCompute(p, poolMemory); err != nil {
				return err
			}
			if err := poolTable(d, p); err != nil {
				return err
			}
			pools[i], err = openPool(d, p)
			return err
		})
	}
	return pools, g.Wait()
}

// poolTable creates the table the pools' queries count, on a connection of
// its own.
func poolTable(d *daemon, p *project) error {
	db, err := sql.Open("mysql", d.proxyDSN(p, ""))
	if err != nil {
		return err
	}
	defer db.Close()
	rows := make([]string, poolRows)
	for i := range rows {
		rows[i] = fmt.Sprintf("(%d)", i+1)
	}
	for _, q := range []string{"CREATE DATABASE pool", "CREATE TABLE pool.t (id INT PRIMARY KEY)",
		"INSERT INTO pool.t (id) VALUES " + strings.Join(rows, ",")} {
		if _, err := db.Exec(q); err != nil {
			return fmt.Errorf("%.40s on %s: %w", q, p.Name, err)
		}
	}
	return nil
}

// openPool opens the project's pool as an application would keep one:
// poolSize connections, none closed for age or idleness; then fills it.
func openPool(d *daemon, p *project) (*pool, error) {
	c, err := bench.Connector(d.proxyDSN(p, "pool"))
	if err != nil {
		return nil, err
	}
	pl := &pool{p: p, dialer: &countingConnector{Connector: c}}
	pl.db = sql.OpenDB(pl.dialer)
	pl.db.SetMaxOpenConns(poolSize)
	pl.db.SetMaxIdleConns(poolSize)
	pl.db.SetConnMaxLifetime(0)
	pl.db.SetConnMaxIdleTime(0)
	_, errs := burst(pl.db, poolSize)
	for _, err := range errs {
		if err != nil {
			pl.db.Close()
			return nil, fmt.Errorf("fill the pool of %s: %w", p.Name, err)
		}
	}
	pl.filled = pl.dialer.dials.Load()
	return pl, nil
}

// burst takes k connections out of the pool at once, so k distinct ones,
// then runs the count on all of them together; it returns each query's
// time and error. The queries' time includes any wake and re-attach.
func burst(db *sql.DB, k int) ([]time.Duration, []error) {
	ctx, cancel := withTimeout(time.Minute)
	defer cancel()
	lat, errs := make([]time.Duration, k), make([]error, k)
	var held, done sync.WaitGroup
	held.Add(k)
	done.Add(k)
	for i := range k {
		go func() {
			defer done.Done()
			c, err := db.Conn(ctx)
			held.Done()
			if err != nil {
				errs[i] = fmt.Errorf("take a pooled connection: %w", err)
				return
			}
			defer c.Close()
			held.Wait()
			var n int
			t0 := time.Now()
			err = c.QueryRowContext(ctx, "SELECT COUNT(*) FROM t").Scan(&n)
			lat[i] = time.Since(t0)
			if err == nil && n != poolRows {
				err = fmt.Errorf("COUNT(*) is %d, not %d", n, poolRows)
			}
			errs[i] = err
		}()
	}
	done.Wait()
	return lat, errs
}

// poolRun starts from suspended computes, then each project's application
// runs a burst on 2 to poolSize of its connections and pauses a random 2-4
// s: longer than the 1 s idle timeout, so most bursts find the compute
// suspended and the rest find it suspending or still up. A last burst uses
// every connection of every pool. Every query must succeed, and no pool
// may have dialed a connection again.
func (s *suite) poolRun(d *daemon, pools []*pool) error {
	res := &PoolChurnResult{Projects: len(pools), PoolSize: poolSize, Duration: s.opts.poolFor,
		IdleTimeout: poolIdle, Interval: s.opts.interval, Memory: poolMemory, Rows: poolRows}
	for _, pl := range pools {
		if err := d.waitState(pl.p, "suspended", 30*time.Second); err != nil {
			return err
		}
	}
	m0, err := d.metrics()
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var lats []time.Duration
	kinds := map[string]int{}
	record := func(lat []time.Duration, errs []error) {
		mu.Lock()
		defer mu.Unlock()
		res.Bursts++
		for i, err := range errs {
			res.Queries++
			if err != nil {
				res.FailedQueries++
				kinds[socketPath.ReplaceAllString(err.Error(), "<compute socket>")]++
				continue
			}
			lats = append(lats, lat[i])
		}
	}
	since := time.Now()
	stopAt := since.Add(s.opts.poolFor)
	var wg sync.WaitGroup
	for i, pl := range pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 11))
			for time.Now().Before(stopAt) {
				record(burst(pl.db, 2+rng.IntN(poolSize-1)))
				time.Sleep(time.Duration(2000+rng.IntN(2000)) * time.Millisecond)
			}
			record(burst(pl.db, poolSize))
		}()
	}
	wg.Wait()
	end := time.Now()
	res.Query = bench.Summarize(lats)
	var slow []time.Duration
	for _, l := range lats {
		if l > 20*time.Millisecond {
			slow = append(slow, l)
		}
	}
	res.SlowQuery = bench.Summarize(slow)
	for k, v := range kinds {
		res.ErrorKind = append(res.ErrorKind, fmt.Sprintf("%d× %s", v, k))
	}
	sort.Strings(res.ErrorKind)
	if err := poolOps(d, pools, since, end, res); err != nil {
		return err
	}
	m1, err := d.metrics()
	if err != nil {
		return err
	}
	poolEvents(m0, m1, res)
	for _, pl := range pools {
		open := pl.db.Stats().OpenConnections
		res.OpenAtEnd += open
		if open == poolSize {
			res.FullPools++
		}
		res.Redialed += int(pl.dialer.dials.Load() - pl.filled)
	}
	s.res.PoolChurn = res
	log.Printf("pool churn: %d queries in %d bursts, %d failed; %d wake starts, %d idle suspends; %d cold and %d warm re-attaches, %d failed; %d of %d connections open at the end, %d re-dialed",
		res.Queries, res.Bursts, res.FailedQueries, res.Starts, res.IdleSuspends, res.ReattachCold, res.ReattachWarm, res.ReattachFailed,
		res.OpenAtEnd, len(pools)*poolSize, res.Redialed)
	return nil
}

// poolOps counts the wake starts and idle suspends of the run from the
// operations API.
func poolOps(d *daemon, pools []*pool, since, end time.Time, res *PoolChurnResult) error {
	for _, pl := range pools {
		starts, idle, err := d.startsAndSuspends(pl.p, since, end)
		if err != nil {
			return err
		}
		res.Starts += starts
		res.IdleSuspends += idle
	}
	return nil
}

// poolEvents takes the proxy's session counts over the run from two
// scrapes of /metrics.
func poolEvents(m0, m1 map[string]float64, res *PoolChurnResult) {
	delta := func(key string) int { return int(m1[key] - m0[key]) }
	res.Detached = delta(sessionEvent("detached"))
	res.ReattachCold = delta(sessionEvent("reattach_cold"))
	res.ReattachWarm = delta(sessionEvent("reattach_warm"))
	failures := "serverlessd_proxy_reattach_failures_total"
	res.ReattachFailed = int(sumSeries(m1, failures) - sumSeries(m0, failures))
}
