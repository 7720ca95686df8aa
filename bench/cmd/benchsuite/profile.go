package main

import (
	"bufio"
	"bytes"
	"fmt"
	"log"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// ProfileNode is one function of the CPU profile.
type ProfileNode struct {
	Name            string
	Flat, Cum       time.Duration
	FlatPct, CumPct float64
}

// ProfileResult is the CPU profile of the proxy under sysbench.
type ProfileResult struct {
	Workload   string
	Threads    int
	Duration   time.Duration
	TPS        float64
	CPUPerQ    float64 // the proxy's CPU µs per query
	Total      time.Duration
	TopFlat    []ProfileNode
	TopCum     []ProfileNode
	Categories []Category
	Path       string // the profile file (kept with -keep)
	Relays     []RelayCell
}

// RelayCell is one BenchmarkRelays run: the proxy's two relays and haproxy,
// in one process against one mariadbd, interleaved.
type RelayCell struct {
	Workload string
	Threads  int
	Rows     []RelayRow
}

// RelayRow is one relay's figures in a RelayCell.
type RelayRow struct {
	Name    string
	TPS     float64
	CPU     float64 // µs per transaction
	DBCPU   float64 // mariadbd's µs per transaction
	VsHA    float64 // TPS over haproxy's (1 for haproxy)
	Default bool
}

// row is the named relay's row, or nil.
func (c RelayCell) row(name string) *RelayRow {
	for i := range c.Rows {
		if c.Rows[i].Name == name {
			return &c.Rows[i]
		}
	}
	return nil
}

// relayNames are BenchmarkRelays' relays, the default first.
// event-loop-untracked is the event loop with mariadbd's session
// trackers off: what state tracking costs, side by side.
var relayNames = []string{"event-loop", "event-loop-untracked", "goroutines", "haproxy"}

// Category is one part of the profile: the cumulative share of the
// samples under a frame (shares overlap where frames nest).
type Category struct {
	Name string
	Pct  float64
}

// breakdown names the frames that answer the questions a relay's profile
// asks: which direction costs more, how much is the kernel's read(2) and
// write(2), and how much is the Go runtime parking and waking goroutines.
// Each category adds the cumulative time of its frames, which never nest:
// the event loop's frames and the goroutine relay's.
var breakdown = []struct {
	name   string
	frames []string
}{
	{"server → client relay", []string{"github.com/serverlessd/serverlessd/proxy.(*loopConn).readServer", "github.com/serverlessd/serverlessd/proxy.copyOut"}},
	{"client → server relay", []string{"github.com/serverlessd/serverlessd/proxy.(*loopConn).readClient", "github.com/serverlessd/serverlessd/proxy.(*session).forwardCommands"}},
	{"write(2) on sockets", []string{"golang.org/x/sys/unix.write", "syscall.write"}},
	{"read(2) on sockets", []string{"golang.org/x/sys/unix.read", "syscall.read"}},
	{"epoll_wait (event loop and netpoller)", []string{"golang.org/x/sys/unix.EpollWait", "runtime.netpoll"}},
	{"scheduler looking for work (findRunnable)", []string{"runtime.findRunnable"}},
	{"futex (OS threads sleeping and waking)", []string{"runtime.futex"}},
	{"allocation (mallocgc)", []string{"runtime.mallocgc"}},
	{"garbage collection (gcBgMarkWorker)", []string{"runtime.gcBgMarkWorker"}},
}

// profile runs BenchmarkProxySysbench (the proxy in-process, in front of a
// compute-configured mariadbd, under sysbench) with a CPU profile of the
// sysbench window, and reads the profile with go tool pprof.
func (s *suite) profile() error {
	path := filepath.Join(s.opts.workDir, "proxy-cpu.pprof")
	const workload, threads = "oltp_point_select", 4
	out, err := s.runTestBin("./bench", "-test.bench=ProxySysbench", "-test.benchtime=1x", "-test.timeout=10m",
		"-proxyprofile="+path, "-proxyworkload="+workload, fmt.Sprintf("-proxythreads=%d", threads),
		"-proxytime="+s.opts.profileFor.String())
	if err != nil {
		return fmt.Errorf("BenchmarkProxySysbench: %v: %s", err, lastLines(out, 10))
	}
	res := &ProfileResult{Workload: workload, Threads: threads, Duration: s.opts.profileFor, Path: path}
	for _, b := range parseBench("./bench", out) {
		res.TPS, _ = b.Get("tps")
		res.CPUPerQ, _ = b.Get("proxy-cpu-µs/query")
	}
	top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=0", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof: %v: %s", err, lastLines(top, 5))
	}
	nodes, total := parsePprofTop(top)
	if total == 0 {
		return fmt.Errorf("empty profile: %s", lastLines(top, 5))
	}
	res.Total = total
	byFlat := append([]ProfileNode(nil), nodes...)
	sort.SliceStable(byFlat, func(i, j int) bool { return byFlat[i].Flat > byFlat[j].Flat })
	res.TopFlat = byFlat[:min(15, len(byFlat))]
	byCum := append([]ProfileNode(nil), nodes...)
	sort.SliceStable(byCum, func(i, j int) bool { return byCum[i].Cum > byCum[j].Cum })
	for _, n := range byCum {
		// The proxy's own frames, by cumulative time: where its work starts.
		if strings.Contains(n.Name, "serverlessd/proxy") && len(res.TopCum) < 10 {
			res.TopCum = append(res.TopCum, n)
		}
	}
	cum := map[string]float64{}
	var own float64
	for _, n := range nodes {
		cum[n.Name] = n.CumPct
		if strings.Contains(n.Name, "serverlessd/proxy") {
			own += n.FlatPct
		}
	}
	for _, b := range breakdown {
		var pct float64
		for _, f := range b.frames {
			pct += cum[f]
		}
		res.Categories = append(res.Categories, Category{b.name, pct})
	}
	res.Categories = append(res.Categories, Category{"the proxy's own code (flat)", own})
	s.res.Profile = res
	log.Printf("profile: %.0f tps through the in-process proxy, %.1f µs of proxy CPU per query", res.TPS, res.CPUPerQ)
	// read_write too: its BEGIN and COMMIT are what the transaction
	// tracker reports, so it shows what state tracking costs.
	for _, c := range []struct {
		workload string
		threads  int
	}{{workload, 1}, {workload, 4}, {"oltp_read_write", 4}} {
		cell, err := s.relays(c.workload, c.threads)
		if err != nil {
			return err
		}
		res.Relays = append(res.Relays, cell)
	}
	return nil
}

// relays runs BenchmarkRelays: the relay choice, measured side by side.
func (s *suite) relays(workload string, threads int) (RelayCell, error) {
	cell := RelayCell{Workload: workload, Threads: threads}
	out, err := s.runTestBin("./bench", "-test.bench=Relays", "-test.benchtime=3x", "-test.timeout=10m",
		"-proxyworkload="+workload, fmt.Sprintf("-proxythreads=%d", threads), "-proxytime="+s.opts.sbTime.String())
	if err != nil {
		return cell, fmt.Errorf("BenchmarkRelays: %v: %s", err, lastLines(out, 10))
	}
	for _, b := range parseBench("./bench", out) {
		for i, name := range relayNames {
			row := RelayRow{Name: name, VsHA: 1, Default: i == 0}
			row.TPS, _ = b.Get(name + "-tps")
			row.CPU, _ = b.Get(name + "-cpu-µs/txn")
			row.DBCPU, _ = b.Get(name + "-mariadbd-cpu-µs/txn")
			if name != "haproxy" {
				row.VsHA, _ = b.Get(name + "/haproxy")
			}
			cell.Rows = append(cell.Rows, row)
		}
	}
	if len(cell.Rows) == 0 {
		return cell, fmt.Errorf("BenchmarkRelays printed no figures: %s", lastLines(out, 5))
	}
	log.Printf("relays, %s at %d threads: %+v", workload, threads, cell.Rows)
	return cell, nil
}

var pprofTotal = regexp.MustCompile(`of ([0-9.]+[a-zµ]+) total`)

// parsePprofTop reads `go tool pprof -top` output.
func parsePprofTop(out []byte) ([]ProfileNode, time.Duration) {
	var total time.Duration
	if m := pprofTotal.FindSubmatch(out); m != nil {
		total, _ = time.ParseDuration(strings.Replace(string(m[1]), "µ", "u", 1))
	}
	var nodes []ProfileNode
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || !strings.HasSuffix(f[1], "%") {
			continue
		}
		flat, err1 := time.ParseDuration(strings.Replace(f[0], "µ", "u", 1))
		cum, err2 := time.ParseDuration(strings.Replace(f[3], "µ", "u", 1))
		if err1 != nil || err2 != nil {
			continue
		}
		var fp, cp float64
		fmt.Sscanf(f[1], "%f%%", &fp)
		fmt.Sscanf(f[4], "%f%%", &cp)
		nodes = append(nodes, ProfileNode{Name: strings.Join(f[5:], " "), Flat: flat, Cum: cum, FlatPct: fp, CumPct: cp})
	}
	return nodes, total
}
