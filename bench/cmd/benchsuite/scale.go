package main

import (
	"fmt"
	"log"
	"math/rand/v2"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/serverlessd/serverlessd/bench"
)

// ScaleResult: a daemon with many projects in its store and a few active.
type ScaleResult struct {
	Projects, Active       int
	ActiveAfter            int           // computes still active after the idle window
	CreateProject          bench.Latency // POST /api/v1/projects while filling the store
	RSSStartKB             int64         // after restart, resume and a settle
	RSSAfterKB             int64         // after the idle window and the API load
	HWMKB                  int64         // peak RSS of the process
	Window                 time.Duration
	Interval               time.Duration
	Ticks                  int
	CPUWindowMs            float64 // the daemon's utime+stime over the window
	CPUPerTickMs           float64
	List100, List1000, Get bench.Latency
}

// scale fills the store up to scaleN projects, restarts the daemon on the
// same data dir (so its memory reflects a daemon serving that store, not
// the churn run before), resumes scaleActive computes, then measures RSS,
// the scheduler's CPU over an idle window, and API latencies.
func (s *suite) scale(d *daemon, projects []*project, dir string) error {
	res := &ScaleResult{Projects: s.opts.scaleN, Active: s.opts.scaleActive, Window: s.opts.scaleIdle, Interval: s.opts.interval}
	extra := s.opts.scaleN - len(projects)
	times := make([]time.Duration, max(extra, 0))
	var g errgroup.Group
	g.SetLimit(4)
	for i := range extra {
		g.Go(func() error {
			t0 := time.Now()
			_, err := d.createProject(fmt.Sprintf("scale%04d", i), 300)
			times[i] = time.Since(t0)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	res.CreateProject = bench.Summarize(times)
	active := projects[:s.opts.scaleActive]
	for _, p := range active {
		// The default idle timeout: nothing suspends during the window.
		if err := d.call("PATCH", "/api/v1/projects/"+p.Name, map[string]any{"config": map[string]any{"idle_timeout": 300}}, nil); err != nil {
			return err
		}
	}
	d.stop()
	d3, err := startDaemon(s.bin, dir, s.opts.interval)
	if err != nil {
		return err
	}
	defer d3.stop()
	g = errgroup.Group{}
	g.SetLimit(4)
	for _, p := range active {
		g.Go(func() error {
			if c, err := d3.compute(p); err == nil && c.State == "active" {
				return nil
			}
			return d3.resume(p)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	time.Sleep(5 * time.Second)
	if res.RSSStartKB, err = procStatusKB(d3.pid(), "VmRSS"); err != nil {
		return err
	}
	log.Printf("scale: %d projects, %d active; RSS %d MiB; measuring the scheduler over %s idle",
		s.opts.scaleN, len(active), res.RSSStartKB>>10, s.opts.scaleIdle)
	c0, err := bench.ProcCPU(d3.pid())
	if err != nil {
		return err
	}
	t0 := time.Now()
	time.Sleep(s.opts.scaleIdle)
	c1, err := bench.ProcCPU(d3.pid())
	if err != nil {
		return err
	}
	window := time.Since(t0)
	res.Ticks = int(window / s.opts.interval)
	res.CPUWindowMs = bench.Ms(c1 - c0)
	res.CPUPerTickMs = res.CPUWindowMs / float64(res.Ticks)
	for _, p := range active {
		if c, err := d3.compute(p); err == nil && c.State == "active" {
			res.ActiveAfter++
		}
	}

	names := make([]string, 0, s.opts.scaleN)
	for i := range extra {
		names = append(names, fmt.Sprintf("scale%04d", i))
	}
	for _, p := range projects {
		names = append(names, p.Name)
	}
	timeGets := func(n int, path func(int) string) (bench.Latency, error) {
		var lat []time.Duration
		for i := range n + 20 {
			el, err := d3.get(path(i))
			if err != nil {
				return bench.Latency{}, err
			}
			if i >= 20 { // warm-up: connection, caches
				lat = append(lat, el)
			}
		}
		return bench.Summarize(lat), nil
	}
	rng := rand.New(rand.NewPCG(1, 2))
	if res.List100, err = timeGets(1000, func(int) string { return "/api/v1/projects?limit=100" }); err != nil {
		return err
	}
	if res.List1000, err = timeGets(200, func(int) string { return "/api/v1/projects?limit=1000" }); err != nil {
		return err
	}
	if res.Get, err = timeGets(1000, func(int) string { return "/api/v1/projects/" + names[rng.IntN(len(names))] }); err != nil {
		return err
	}
	if res.RSSAfterKB, err = procStatusKB(d3.pid(), "VmRSS"); err != nil {
		return err
	}
	if res.HWMKB, err = procStatusKB(d3.pid(), "VmHWM"); err != nil {
		return err
	}
	s.res.Scale = res
	log.Printf("scale: tick CPU %.2f ms (%.0f ms over %d ticks); list p99 %.2f ms, get p99 %.2f ms; RSS %d MiB",
		res.CPUPerTickMs, res.CPUWindowMs, res.Ticks, res.List100.P99, res.Get.P99, res.RSSAfterKB>>10)
	return nil
}
