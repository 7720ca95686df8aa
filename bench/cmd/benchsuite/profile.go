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
}

// Category is one part of the profile: the cumulative share of the
// samples under a frame (shares overlap where frames nest).
type Category struct {
	Name string
	Pct  float64
}

// breakdown names the frames that answer the questions a relay's profile
// asks: which direction costs more, how much is the kernel's read(2) and
// write(2), and how much is the Go runtime parking and waking goroutines.
var breakdown = []struct{ name, frame string }{
	{"server → client relay (copyOut)", "github.com/serverlessd/serverlessd/proxy.copyOut"},
	{"client → server relay (forwardCommands)", "github.com/serverlessd/serverlessd/proxy.(*session).forwardCommands"},
	{"write(2) on sockets", "syscall.write"},
	{"read(2) on sockets", "syscall.read"},
	{"netpoller (epoll_wait)", "runtime.netpoll"},
	{"scheduler looking for work (findRunnable)", "runtime.findRunnable"},
	{"futex (OS threads sleeping and waking)", "runtime.futex"},
	{"allocation (mallocgc)", "runtime.mallocgc"},
	{"garbage collection (gcBgMarkWorker)", "runtime.gcBgMarkWorker"},
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
		res.Categories = append(res.Categories, Category{b.name, cum[b.frame]})
	}
	res.Categories = append(res.Categories, Category{"the proxy's own code (flat)", own})
	s.res.Profile = res
	log.Printf("profile: %.0f tps through the in-process proxy, %.1f µs of proxy CPU per query", res.TPS, res.CPUPerQ)
	return nil
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
