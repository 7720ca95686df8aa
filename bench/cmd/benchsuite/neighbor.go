package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/serverlessd/serverlessd/bench"
)

// NeighborResult: a quiet tenant's latency while another tenant's compute
// on the same node burns CPU. Both are reached through the same daemon;
// the noisy compute asks for one CPU, which the local driver enforces with
// its cgroup when it can.
type NeighborResult struct {
	RunTime  time.Duration
	NoisyCPU string // the noisy compute's resources.cpu as created ("": the API refused it)
	Refused  string // the API's answer when it refused the cpu
	Load     string // the noisy query
	// The sysbench data set in the quiet project.
	Tables, TableSize int
	LoadConn          int // connections running it
	// The quiet project's oltp_point_select, 1 thread: p99 latency (ms)
	// and transactions/s, without and with the noisy load.
	UnloadedP99, LoadedP99 float64
	UnloadedTPS, LoadedTPS float64
	Ratio                  float64 // LoadedP99 / UnloadedP99
	// NoisyCores is the CPU the noisy mariadbd used during the loaded run,
	// in cores (utime+stime over the run's wall time).
	NoisyCores float64
	LoadErrors int // load queries that failed other than by the final KILL
}

const (
	neighborCPU   = "1"
	neighborQuery = "SELECT BENCHMARK(500000000, MD5('x'))"
	neighborConns = 4
)

// neighbor runs the quiet tenant's sysbench alone, then beside the noisy
// tenant's CPU load, on a fresh daemon.
func (s *suite) neighbor() error {
	d, err := startDaemon(s.bin, filepath.Join(s.opts.workDir, "d7"), 0)
	if err != nil {
		return err
	}
	defer d.stopAndReap()
	res := &NeighborResult{RunTime: s.opts.neighborFor, Load: neighborQuery, LoadConn: neighborConns,
		Tables: bench.SysbenchTables, TableSize: bench.SysbenchTableSize}
	quiet, noisy, err := neighborProjects(d, res)
	if err != nil {
		return err
	}
	ctx := context.Background()
	host, port := splitAddr(d.proxy)
	target := bench.Target{Name: "serverlessd", Host: host, Port: port, User: quiet.mysqlUser(), Pass: quiet.Password}
	if err := neighborPrepare(ctx, d, quiet, target); err != nil {
		return err
	}
	un, err := bench.SysbenchRunPct(ctx, target, "oltp_point_select", 1, s.opts.neighborFor, 99)
	if err != nil {
		return err
	}
	res.UnloadedP99, res.UnloadedTPS = un.PctMs, un.TPS
	noisyPID, err := mariadbdPID(d.computeDir(noisy))
	if err != nil {
		return fmt.Errorf("pid of the noisy compute's mariadbd: %w", err)
	}
	load, err := startCPULoad(d, noisy, neighborConns)
	if err != nil {
		return err
	}
	time.Sleep(time.Second) // every load query running
	c0, t0 := cpuOf(noisyPID), time.Now()
	lo, err := bench.SysbenchRunPct(ctx, target, "oltp_point_select", 1, s.opts.neighborFor, 99)
	res.NoisyCores = (cpuOf(noisyPID) - c0).Seconds() / time.Since(t0).Seconds()
	res.LoadErrors = load.stop()
	if err != nil {
		return err
	}
	res.LoadedP99, res.LoadedTPS = lo.PctMs, lo.TPS
	res.Ratio = res.LoadedP99 / res.UnloadedP99
	s.res.Neighbor = res
	log.Printf("neighbor: point_select p99 %.2f ms alone, %.2f ms beside the load (%.2f×); %.0f → %.0f tps; noisy mariadbd used %.2f cores",
		res.UnloadedP99, res.LoadedP99, res.Ratio, res.UnloadedTPS, res.LoadedTPS, res.NoisyCores)
	return nil
}

// neighborProjects makes the two tenants with one project and compute
// each: the quiet one default-sized, the noisy one limited to neighborCPU
// if the API takes it.
func neighborProjects(d *daemon, res *NeighborResult) (quiet, noisy *project, err error) {
	var ps [2]*project
	for i, name := range []string{"quiet", "noisy"} {
		t, err := d.createTenant(name)
		if err != nil {
			return nil, nil, err
		}
		if ps[i], err = d.createProjectIn(t, name, 0); err != nil {
			return nil, nil, err
		}
	}
	quiet, noisy = ps[0], ps[1]
	if err := d.createCompute(quiet, ""); err != nil {
		return nil, nil, err
	}
	err = d.createComputeWith(noisy, map[string]any{"cpu": neighborCPU})
	var ae *apiError
	if errors.As(err, &ae) && ae.status == 400 {
		res.Refused = ae.Error()
		err = d.createCompute(noisy, "")
	} else if err == nil {
		res.NoisyCPU = neighborCPU
	}
	return quiet, noisy, err
}

// neighborPrepare creates the sysbench tables in the quiet project
// through the proxy and warms its buffer pool and the path with a short
// run.
func neighborPrepare(ctx context.Context, d *daemon, p *project, target bench.Target) error {
	db, err := sql.Open("mysql", d.proxyDSN(p, ""))
	if err != nil {
		return err
	}
	_, err = db.Exec("CREATE DATABASE " + bench.SysbenchDB)
	db.Close()
	if err != nil {
		return fmt.Errorf("create the sysbench database in %s: %w", p.Name, err)
	}
	log.Printf("neighbor: sysbench prepare: %d tables of %d rows", bench.SysbenchTables, bench.SysbenchTableSize)
	if err := bench.SysbenchPrepare(ctx, target); err != nil {
		return err
	}
	_, err = bench.SysbenchRun(ctx, target, "oltp_point_select", 1, 3*time.Second)
	return err
}

// cpuLoad is connections running a CPU-bound query in a loop.
type cpuLoad struct {
	db      *sql.DB
	conns   []*sql.Conn
	ids     []int64 // each connection's CONNECTION_ID(), for KILL QUERY
	halt    atomic.Bool
	errs    atomic.Int64
	running sync.WaitGroup
}

// startCPULoad opens n connections to p through the proxy, each looping
// neighborQuery. The DSN has no read timeout: one query runs for a long
// time, and a client that gives up leaves it running on the server.
func startCPULoad(d *daemon, p *project, n int) (*cpuLoad, error) {
	db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/?timeout=60s", p.mysqlUser(), p.Password, d.proxy))
	if err != nil {
		return nil, err
	}
	l := &cpuLoad{db: db}
	ctx := context.Background()
	for range n {
		c, err := db.Conn(ctx)
		if err != nil {
			l.stop()
			return nil, fmt.Errorf("connect the load to %s: %w", p.Name, err)
		}
		var id int64
		if err := c.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
			c.Close()
			l.stop()
			return nil, err
		}
		l.conns, l.ids = append(l.conns, c), append(l.ids, id)
		l.running.Add(1)
		go l.loop(c)
	}
	return l, nil
}

func (l *cpuLoad) loop(c *sql.Conn) {
	defer l.running.Done()
	for !l.halt.Load() {
		var v int
		if err := c.QueryRowContext(context.Background(), neighborQuery).Scan(&v); err != nil && !l.halt.Load() {
			l.errs.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// stop ends the load: KILL QUERY on each connection (a closed client
// connection would not stop BENCHMARK() on the server), then waits for the
// loops and closes. It returns the load's failed queries.
func (l *cpuLoad) stop() int {
	l.halt.Store(true)
	for _, id := range l.ids {
		if _, err := l.db.Exec(fmt.Sprintf("KILL QUERY %d", id)); err != nil {
			log.Printf("neighbor: KILL QUERY %d: %v", id, err)
		}
	}
	l.running.Wait()
	for _, c := range l.conns {
		c.Close()
	}
	l.db.Close()
	return int(l.errs.Load())
}
