package main

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/serverlessd/serverlessd/bench"
	"github.com/serverlessd/serverlessd/config"
	node "github.com/serverlessd/serverlessd/machine"
)

// DensityResult: how many small computes one node keeps running at once
// under its memory budget (compute.local.max_memory), and what each costs
// in real memory. Computes are created one after another and left idle;
// once the budget is full, a create must suspend the least recently used
// idle compute (an operation with reason "memory") instead of
// overcommitting.
type DensityResult struct {
	MaxMemory   string // the budget asked (SERVERLESSD_COMPUTE_LOCAL_MAX_MEMORY); "" = the default
	BudgetBytes int64
	BudgetFrom  string // "the daemon's log" or "computed as the daemon does"
	Memory      string // each compute's size
	Cap         int    // the most computes the run would create
	Created     int
	PeakActive  int    // computes active at once at the peak (/metrics)
	PeakAsked   int64  // their memory together, in bytes
	Stop        string // why creating stopped
	// MemorySuspends counts suspends with reason "memory" in the operations
	// API at the end, over every project.
	MemorySuspends int
	Create         bench.Latency // POST project + POST compute, one at a time
	// VmRSS of each mariadbd at the end, in kB, and of the daemon; the
	// mariadbds' proportional set sizes summed (shared pages counted once).
	Mariadbds          int
	RSSMinKB, RSSMedKB int64
	RSSMaxKB, RSSSumKB int64
	PssSumKB           int64
	DaemonRSSKB        int64
	Elapsed            time.Duration // from the daemon's start to the measurement
}

// densityMemory is each compute's size: the smallest the API takes.
const densityMemory = "64Mi"

// densityFloorKB is the machine's available memory below which the run
// stops creating whatever the budget says: a budget above what the
// machine can hold must show as a finding, not as an out-of-memory kill.
func densityFloorKB(totalKB int64) int64 { return max(1<<20, totalKB/10) }

// density creates computes on a fresh daemon until a create makes another
// compute suspend for memory, the cap is reached, the time runs out or the
// machine runs low on memory.
func (s *suite) density() error {
	dir := filepath.Join(s.opts.workDir, "d6")
	env := []string{"SERVERLESSD_LOG_LEVEL=info"} // for the budget's log line
	if s.opts.densityMax != "" {
		env = append(env, "SERVERLESSD_COMPUTE_LOCAL_MAX_MEMORY="+s.opts.densityMax)
	}
	t0 := time.Now()
	d, err := startDaemonEnv(s.bin, dir, 0, env...)
	if err != nil {
		return err
	}
	defer d.stopAndReap()
	res := &DensityResult{MaxMemory: s.opts.densityMax, Memory: densityMemory, Cap: s.opts.densityCap}
	if err := densityBudget(d, res); err != nil {
		return err
	}
	log.Printf("density: budget %.0f MiB (%s); creating %s computes up to %d", float64(res.BudgetBytes)/(1<<20), res.BudgetFrom, densityMemory, res.Cap)
	ps, err := s.densityFill(d, res)
	if err != nil {
		return err
	}
	if err := densityMeasure(d, ps, res); err != nil {
		return err
	}
	res.PeakAsked = int64(res.PeakActive) * densityBytes
	res.Elapsed = time.Since(t0).Round(time.Second)
	s.res.Density = res
	log.Printf("density: %d active at the peak of %d created (%s); %d memory suspends; mariadbd RSS median %.0f MiB (min %.0f, max %.0f), daemon RSS %.0f MiB",
		res.PeakActive, res.Created, res.Stop, res.MemorySuspends, mib(res.RSSMedKB), mib(res.RSSMinKB), mib(res.RSSMaxKB), mib(res.DaemonRSSKB))
	// Suspend through the API before the daemon stops: its shutdown
	// suspends four at a time within a deadline that hundreds may outlast.
	return d.suspendAll(ps)
}

// budgetLine is the daemon's start-up line with its memory budget, in the
// text or the JSON log format.
var budgetLine = regexp.MustCompile(`node memory budget for computes.*?bytes["=:]+(\d+)`)

// densityBudget reads the node's budget from the daemon's log or, failing
// that, computes it as the daemon does (the flag, or 80% of the machine's
// memory or cgroup limit).
func densityBudget(d *daemon, res *DensityResult) error {
	if b, err := os.ReadFile(d.logPath); err == nil {
		if m := budgetLine.FindSubmatch(b); m != nil {
			res.BudgetBytes, _ = strconv.ParseInt(string(m[1]), 10, 64)
			res.BudgetFrom = "the daemon's log"
			return nil
		}
	}
	n, err := config.Local{MaxMemory: res.MaxMemory}.MemoryBudget(node.Memory())
	if err != nil {
		return fmt.Errorf("memory budget %q: %w", res.MaxMemory, err)
	}
	res.BudgetBytes, res.BudgetFrom = n, "computed as the daemon does"
	return nil
}

// densityFill creates projects with a compute each, one at a time, and
// after each reads /metrics: the active computes, and whether a suspend for
// memory happened. It stops at the first such suspend.
func (s *suite) densityFill(d *daemon, res *DensityResult) ([]*project, error) {
	mem, err := memInfoKB("MemTotal")
	if err != nil {
		return nil, err
	}
	floor := densityFloorKB(mem["MemTotal"])
	deadline := time.Now().Add(s.opts.densityFor)
	var ps []*project
	var times []time.Duration
	defer func() { res.Create = bench.Summarize(times) }()
	for i := range res.Cap {
		if time.Now().After(deadline) {
			res.Stop = fmt.Sprintf("time limit (%s) reached", s.opts.densityFor)
			return ps, nil
		}
		if m, err := memInfoKB("MemAvailable"); err == nil && m["MemAvailable"] < floor {
			res.Stop = fmt.Sprintf("the machine's available memory fell below %.0f MiB", mib(floor))
			return ps, nil
		}
		t0 := time.Now()
		p, err := d.createProject(fmt.Sprintf("dense%03d", i), 0)
		if err != nil {
			return ps, err
		}
		ps = append(ps, p)
		err = d.createCompute(p, densityMemory)
		var ae *apiError
		if errors.As(err, &ae) && ae.status == 503 {
			res.Created = len(ps)
			res.Stop = "a create found the node full (503): " + ae.body
			return ps, nil
		} else if err != nil {
			return ps, err
		}
		times = append(times, time.Since(t0))
		res.Created = len(ps)
		m, err := d.metrics()
		if err != nil {
			return ps, err
		}
		res.PeakActive = max(res.PeakActive, int(m[`serverlessd_computes{state="active"}`]))
		if m[`serverlessd_suspends_total{trigger="memory"}`] > 0 {
			res.Stop = fmt.Sprintf("compute %d made another suspend for memory", len(ps))
			return ps, nil
		}
		if len(ps)%25 == 0 {
			log.Printf("density: %d computes active", res.PeakActive)
		}
	}
	res.Stop = fmt.Sprintf("the cap of %d computes was reached", res.Cap)
	return ps, nil
}

// densityMeasure reads every mariadbd's RSS and the daemon's, and counts
// the suspends for memory in the operations API.
func densityMeasure(d *daemon, ps []*project, res *DensityResult) error {
	pids := d.mariadbdPIDs()
	res.PssSumKB = pssSumKB(pids)
	rss := rssKB(pids)
	slices.Sort(rss)
	if res.Mariadbds = len(rss); len(rss) > 0 {
		res.RSSMinKB, res.RSSMedKB, res.RSSMaxKB = rss[0], rss[len(rss)/2], rss[len(rss)-1]
		for _, kb := range rss {
			res.RSSSumKB += kb
		}
	}
	var err error
	if res.DaemonRSSKB, err = procStatusKB(d.pid(), "VmRSS"); err != nil {
		return err
	}
	for _, p := range ps {
		ops, err := d.operations(p, time.Time{})
		if err != nil {
			return fmt.Errorf("operations of %s: %w", p.Name, err)
		}
		res.MemorySuspends += countOps(ops, "suspend", "memory")
	}
	return nil
}

// densityBytes is densityMemory in bytes.
const densityBytes = 64 << 20
