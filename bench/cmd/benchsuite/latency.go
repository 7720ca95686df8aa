package main

import (
	"fmt"
	"log"
	"path/filepath"
	"time"

	"github.com/serverlessd/serverlessd/bench"
)

// ColdResult: connect + SELECT 1 to a suspended project through the proxy,
// beside a bare mariadbd's start-to-ready on a copy of the same compute.
type ColdResult struct {
	Cycles  int
	Errors  int
	Login   bench.Latency // client: connect + SELECT 1 through serverlessd, compute suspended
	Floor   bench.Latency // bare mariadbd: exec to a login + SELECT 1 on its socket
	StartOp bench.Latency // the daemon's start operations (operations API), as it timed them
	// Extra is the median of (login - floor) over the cycles: what
	// serverlessd adds on top of mariadbd's own start-up.
	Extra float64
}

// cold measures cold logins, interleaved with the floor. Each cycle suspends
// the project through the API (untimed), then times a login through the
// proxy and a bare mariadbd start, alternating which goes first.
func (s *suite) cold(d *daemon) error {
	p, floor, err := s.suspendedWithFloor(d, "cold", "floor")
	if err != nil {
		return err
	}
	defer onInterrupt(func() { _ = floor.Stop() })()
	conn, err := bench.Connector(d.proxyDSN(p, ""))
	if err != nil {
		return err
	}
	login := func() (time.Duration, error) {
		ctx, cancel := withTimeout(time.Minute)
		defer cancel()
		t0 := time.Now()
		err := bench.Select1(ctx, conn)
		return time.Since(t0), err
	}
	floorStart := floorStarter(floor, p.Password)
	// One untimed round warms the page cache for both.
	if _, err := login(); err != nil {
		return fmt.Errorf("first cold login: %w", err)
	}
	if _, err := floorStart(); err != nil {
		return fmt.Errorf("bare mariadbd: %w", err)
	}
	res := &ColdResult{}
	var logins, floors []time.Duration
	var extra []float64
	since := time.Now()
	for i := range s.opts.coldCycles {
		if err := d.suspend(p); err != nil {
			return err
		}
		var l, f time.Duration
		var lerr, ferr error
		if i%2 == 0 {
			l, lerr = login()
			f, ferr = floorStart()
		} else {
			f, ferr = floorStart()
			l, lerr = login()
		}
		if ferr != nil {
			return fmt.Errorf("bare mariadbd: %w", ferr)
		}
		floors = append(floors, f)
		if lerr != nil {
			res.Errors++
			log.Printf("cold login %d: %v", i, lerr)
			continue
		}
		logins = append(logins, l)
		extra = append(extra, bench.Ms(l-f))
	}
	res.Cycles = s.opts.coldCycles
	res.Login, res.Floor = bench.Summarize(logins), bench.Summarize(floors)
	res.Extra = bench.Median(extra)
	if res.StartOp, err = wakeStarts(d, p, since); err != nil {
		return err
	}
	s.res.Cold = res
	log.Printf("cold login p50 %.1f p90 %.1f p99 %.1f ms; bare mariadbd p50 %.1f p99 %.1f ms; errors %d",
		res.Login.P50, res.Login.P90, res.Login.P99, res.Floor.P50, res.Floor.P99, res.Errors)
	return nil
}

// wakeStarts summarises the project's wake starts since, as the daemon
// timed them (operations API).
func wakeStarts(d *daemon, p *project, since time.Time) (bench.Latency, error) {
	ops, err := d.operations(p, since)
	if err != nil {
		return bench.Latency{}, err
	}
	var starts []time.Duration
	for _, op := range ops {
		if op.Action == "start" && op.Reason == "wake" {
			starts = append(starts, time.Duration(op.DurationMS*float64(time.Millisecond)))
		}
	}
	return bench.Summarize(starts), nil
}

// suspendedWithFloor creates a project that never idles out, with a
// default compute, and leaves the compute suspended beside a copy of it in
// floorDir (under the work dir) for the bare mariadbd floor. The compute is
// suspended and resumed once first, so that its my.cnf is the steady-state
// one (the first start also applies the admin password).
func (s *suite) suspendedWithFloor(d *daemon, name, floorDir string) (*project, *bench.Bare, error) {
	p, err := d.createProject(name, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := d.createCompute(p, ""); err != nil {
		return nil, nil, err
	}
	for _, step := range []func(*project) error{d.suspend, d.resume, d.suspend} {
		if err := step(p); err != nil {
			return nil, nil, err
		}
	}
	floor, err := bench.CopyCompute(d.computeDir(p), filepath.Join(s.opts.workDir, floorDir))
	if err != nil {
		return nil, nil, err
	}
	return p, floor, nil
}

// floorStarter returns one timed start of the bare mariadbd: exec until a
// login as root plus SELECT 1 answers on its socket. The clean shutdown
// after it is not timed.
func floorStarter(floor *bench.Bare, password string) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		ctx, cancel := withTimeout(time.Minute)
		defer cancel()
		dur, err := floor.StartToReady(ctx, "root", password)
		if serr := floor.Stop(); err == nil {
			err = serr
		}
		return dur, err
	}
}

// WarmResult: connect + SELECT 1 + close with the compute running, through
// the proxy against straight to the compute's socket.
type WarmResult struct {
	N      int
	Proxy  bench.Latency
	Direct bench.Latency
	// Overhead is the median over interleaved pairs of (proxy - direct), in
	// ms; P50/P99 differences are also shown.
	Overhead float64
}

// warm measures warm logins, interleaving the two paths one by one.
func (s *suite) warm(d *daemon) error {
	p, err := d.createProject("warm", 0)
	if err != nil {
		return err
	}
	if err := d.createCompute(p, ""); err != nil {
		return err
	}
	pc, err := bench.Connector(d.proxyDSN(p, ""))
	if err != nil {
		return err
	}
	dc, err := bench.Connector(directDSN(p, ""))
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(10 * time.Minute)
	defer cancel()
	var proxied, direct []time.Duration
	var diffs []float64
	n := s.opts.warmLogins
	for i := range n + 50 {
		var tp, td time.Duration
		for k := range 2 {
			c := pc
			if (i+k)%2 == 1 {
				c = dc
			}
			t0 := time.Now()
			if err := bench.Select1(ctx, c); err != nil {
				return fmt.Errorf("warm login: %w", err)
			}
			if c == pc {
				tp = time.Since(t0)
			} else {
				td = time.Since(t0)
			}
		}
		if i < 50 {
			continue // warm-up: connection caches, thread cache, branch predictors
		}
		proxied, direct = append(proxied, tp), append(direct, td)
		diffs = append(diffs, bench.Ms(tp-td))
	}
	s.res.Warm = &WarmResult{N: n, Proxy: bench.Summarize(proxied), Direct: bench.Summarize(direct), Overhead: bench.Median(diffs)}
	log.Printf("warm login: proxy p50 %.3f p99 %.3f ms; direct p50 %.3f p99 %.3f ms",
		s.res.Warm.Proxy.P50, s.res.Warm.Proxy.P99, s.res.Warm.Direct.P50, s.res.Warm.Direct.P99)
	return nil
}
