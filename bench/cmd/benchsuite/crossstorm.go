package main

import (
	"context"
	"database/sql/driver"
	"fmt"
	"log"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/serverlessd/serverlessd/bench"
)

// CrossStormRound is one cross-project storm: one login to each of many
// suspended projects, all at once, so that every compute starts together.
type CrossStormRound struct {
	Clients int
	Errors  int
	Login   bench.Latency // each client's connect (with its compute's start) + SELECT 1
	Wall    float64       // ms from the release to the last answer
	// PeakMemKB is the machine's highest used memory (MemTotal -
	// MemAvailable, sampled every 50 ms) during the storm, minus its value
	// just before: what starting every compute at once costs the node.
	PeakMemKB int64
	// RSSSumKB is the sum of VmRSS of the daemon's mariadbd processes
	// once every login has answered, PssSumKB the sum of their proportional
	// set sizes (shared pages counted once); Mariadbds is how many were
	// found.
	RSSSumKB  int64
	PssSumKB  int64
	Mariadbds int
}

// CrossStormResult is every round on the same projects.
type CrossStormResult struct {
	Projects  int
	Memory    string
	Rounds    []CrossStormRound
	Errors    int
	ErrorKind []string
}

// crossStormMemory is each project's compute size: the smallest the API
// takes, so that many fit on a small machine.
const crossStormMemory = "64Mi"

// memSampleEvery is how often the machine's used memory is sampled.
const memSampleEvery = 50 * time.Millisecond

// crossStorm creates projects with small computes on a fresh daemon, then
// storms them crossStormRounds times: suspend all, then one client per
// project released at once.
func (s *suite) crossStorm() error {
	d, err := startDaemon(s.bin, filepath.Join(s.opts.workDir, "d5"), 0)
	if err != nil {
		return err
	}
	defer d.stopAndReap()
	ps, err := crossStormProjects(d, s.opts.crossN)
	if err != nil {
		return err
	}
	res := &CrossStormResult{Projects: len(ps), Memory: crossStormMemory}
	kinds := map[string]int{}
	for round := range s.opts.crossRounds {
		if err := d.suspendAll(ps); err != nil {
			return err
		}
		r, err := crossStormRound(d, ps, kinds)
		if err != nil {
			return err
		}
		res.Rounds = append(res.Rounds, r)
		res.Errors += r.Errors
		log.Printf("crossstorm %d: %d logins, %d errors, p50 %.0f p99 %.0f ms, last %.0f ms; peak memory +%.0f MiB, mariadbd RSS %.0f MiB, PSS %.0f MiB (%d processes)",
			round+1, r.Clients, r.Errors, r.Login.P50, r.Login.P99, r.Wall, mib(r.PeakMemKB), mib(r.RSSSumKB), mib(r.PssSumKB), r.Mariadbds)
	}
	for k, v := range kinds {
		res.ErrorKind = append(res.ErrorKind, fmt.Sprintf("%d× %s", v, k))
	}
	sort.Strings(res.ErrorKind)
	if len(res.ErrorKind) > 5 {
		res.ErrorKind = res.ErrorKind[:5]
	}
	s.res.CrossStorm = res
	return d.suspendAll(ps)
}

// crossStormProjects creates n projects (never idle-suspended) with a
// compute each, four at a time.
func crossStormProjects(d *daemon, n int) ([]*project, error) {
	ps := make([]*project, n)
	var g errgroup.Group
	g.SetLimit(4)
	for i := range n {
		g.Go(func() error {
			p, err := d.createProject(fmt.Sprintf("cross%03d", i), 0)
			if err != nil {
				return err
			}
			ps[i] = p
			return d.createCompute(p, crossStormMemory)
		})
	}
	return ps, g.Wait()
}

// crossStormRound releases one client per project at once (each its own
// connection: connect, SELECT 1, close) while sampling the machine's memory.
func crossStormRound(d *daemon, ps []*project, kinds map[string]int) (CrossStormRound, error) {
	conns := make([]driver.Connector, len(ps))
	for i, p := range ps {
		c, err := bench.Connector(d.proxyDSN(p, ""))
		if err != nil {
			return CrossStormRound{}, err
		}
		conns[i] = c
	}
	n := len(ps)
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var ready, done sync.WaitGroup
	gate := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			ready.Done()
			<-gate
			t0 := time.Now()
			errs[i] = bench.Select1(ctx, conns[i])
			lat[i] = time.Since(t0)
		}()
	}
	ready.Wait()
	before, err := memUsedKB()
	if err != nil {
		return CrossStormRound{}, err
	}
	stop := make(chan struct{})
	peak := sampleMemPeak(before, stop)
	since := time.Now()
	close(gate)
	done.Wait()
	r := CrossStormRound{Clients: n, Wall: bench.Ms(time.Since(since))}
	close(stop)
	r.PeakMemKB = <-peak - before
	pids := d.mariadbdPIDs()
	rss := rssKB(pids)
	r.Mariadbds, r.PssSumKB = len(rss), pssSumKB(pids)
	for _, kb := range rss {
		r.RSSSumKB += kb
	}
	ok, failed := tally(errs, lat, kinds)
	r.Errors = failed
	r.Login = bench.Summarize(ok)
	return r, nil
}

// sampleMemPeak samples the machine's used memory every memSampleEvery
// until stop is closed, then sends the highest value seen (at least
// floor, the value before the sampling began).
func sampleMemPeak(floor int64, stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		peak := floor
		t := time.NewTicker(memSampleEvery)
		defer t.Stop()
		for {
			if kb, err := memUsedKB(); err == nil {
				peak = max(peak, kb)
			}
			select {
			case <-stop:
				if kb, err := memUsedKB(); err == nil {
					peak = max(peak, kb)
				}
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}
