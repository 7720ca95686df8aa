// Command benchsuite is serverlessd's benchmark suite. From one
// command it builds the daemon, drives it with real clients beside the
// references it is judged against (a bare mariadbd, direct connections,
// haproxy), runs the Go benchmarks of every package, profiles the proxy,
// and writes BENCHMARKS.md from the figures of this run.
//
//	go run ./bench/cmd/benchsuite -out BENCHMARKS.md        # make bench
//	go run ./bench/cmd/benchsuite -only throughput          # make bench-proxy
//
// Comparisons are interleaved (A, B, A, B...) rather than run as blocks,
// because the machines this runs on are shared and noisy: drift then hits
// both sides alike, and the medians of paired runs are what is quoted.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// phases, in the order they run. Each is independent of the others' results.
var allPhases = []string{"cold", "reattach", "warm", "throughput", "storm", "churn", "scale", "poolchurn",
	"pooling", "tenantapi", "crossstorm", "density", "neighbor", "kubereal", "console", "gobench", "profile"}

type options struct {
	out     string
	only    map[string]bool
	binary  string
	keep    bool
	workDir string

	coldCycles     int
	reattachCycles int
	warmLogins     int
	sbTime         time.Duration
	sbReps         int
	sbThreads      []int
	sbWorkloads    []string
	stormClients   int
	stormRounds    int
	churnFor       time.Duration
	churnN         int
	scaleN         int
	scaleActive    int
	scaleIdle      time.Duration
	poolFor        time.Duration
	poolN          int
	profileFor     time.Duration
	interval       time.Duration
	tenantsN       int
	tenantProjects int
	tenantRequests int
	crossN         int
	crossRounds    int
	densityMax     string
	densityCap     int
	densityFor     time.Duration
	neighborFor    time.Duration
}

func main() {
	log.SetFlags(log.Ltime)
	var o options
	var only, threads, workloads string
	flag.StringVar(&o.out, "out", "", "write the report (markdown) to this file, e.g. BENCHMARKS.md; empty prints it only")
	flag.StringVar(&only, "only", "", "comma-separated phases to run (default all): "+strings.Join(allPhases, ","))
	flag.StringVar(&o.binary, "binary", "", "serverlessd binary to drive (default: build one from the tree)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (data dirs, logs, profile)")
	flag.IntVar(&o.coldCycles, "cold-cycles", 60, "cold login cycles (each also starts the bare mariadbd floor once)")
	flag.IntVar(&o.reattachCycles, "reattach-cycles", 60, "cycles of suspend + first query on a kept connection (each also starts the bare mariadbd floor once)")
	flag.IntVar(&o.warmLogins, "warm-logins", 500, "warm logins per path (proxy and direct, interleaved)")
	flag.DurationVar(&o.sbTime, "sysbench-time", 5*time.Second, "length of one sysbench run (runs of 3s put the serverlessd/haproxy ratio anywhere in 0.8-1.3)")
	flag.IntVar(&o.sbReps, "sysbench-reps", 7, "interleaved repetitions of each sysbench cell (the median is quoted)")
	flag.StringVar(&threads, "sysbench-threads", "1,4,16", "sysbench thread counts")
	flag.StringVar(&workloads, "sysbench-workloads", "oltp_point_select,oltp_read_only,oltp_read_write", "sysbench workloads")
	flag.IntVar(&o.stormClients, "storm-clients", 500, "concurrent logins in the wake storm")
	flag.IntVar(&o.stormRounds, "storm-rounds", 3, "wake storms to run")
	flag.DurationVar(&o.churnFor, "churn-time", 60*time.Second, "length of the churn run")
	flag.IntVar(&o.churnN, "churn-projects", 20, "projects cycling in the churn run")
	flag.IntVar(&o.scaleN, "scale-projects", 1000, "projects in the store for the scale figures")
	flag.IntVar(&o.scaleActive, "scale-active", 20, "active computes for the scale figures")
	flag.DurationVar(&o.scaleIdle, "scale-idle", 60*time.Second, "idle window over which the scheduler's CPU is measured")
	flag.DurationVar(&o.poolFor, "poolchurn-duration", 10*time.Minute, "length of the pool churn run")
	flag.IntVar(&o.poolN, "poolchurn-projects", 20, "projects, each with a pool of kept connections, in the pool churn run")
	flag.DurationVar(&o.profileFor, "profile-time", 20*time.Second, "sysbench time under the CPU profile of the proxy")
	flag.DurationVar(&o.interval, "interval", 200*time.Millisecond, "scheduler interval of the churn, scale and pool churn daemons")
	flag.IntVar(&o.tenantsN, "tenantapi-tenants", 100, "tenants in the store for the tenant API key figures")
	flag.IntVar(&o.tenantProjects, "tenantapi-projects", 10000, "projects in the store for the tenant API key figures, spread evenly over the tenants")
	flag.IntVar(&o.tenantRequests, "tenantapi-requests", 500, "timed requests of each kind (list, get; tenant key, admin)")
	flag.IntVar(&o.crossN, "crossstorm-projects", 100, "projects, each with a 64Mi compute, woken at once in the cross-project storm")
	flag.IntVar(&o.crossRounds, "crossstorm-rounds", 2, "cross-project storms to run")
	flag.StringVar(&o.densityMax, "density-max-memory", "", "the density daemon's compute.local.max_memory, e.g. 1Gi (empty: its default, 80% of the machine's memory)")
	flag.IntVar(&o.densityCap, "density-cap", 400, "the most 64Mi computes the density run creates")
	flag.DurationVar(&o.densityFor, "density-time", 10*time.Minute, "time after which the density run stops creating computes")
	flag.DurationVar(&o.neighborFor, "neighbor-time", 20*time.Second, "length of each sysbench run of the quiet tenant, alone and beside the noisy one")
	rerender := flag.String("render", "", "only render the report from a results.json that an earlier run saved in its work directory")
	flag.Parse()
	if *rerender != "" {
		os.Exit(renderSaved(*rerender, o.out))
	}

	o.only = map[string]bool{}
	for _, p := range strings.Split(only, ",") {
		if p = strings.TrimSpace(p); p != "" {
			if !slices.Contains(allPhases, p) {
				log.Fatalf("unknown phase %q (phases: %s)", p, strings.Join(allPhases, ","))
			}
			o.only[p] = true
		}
	}
	for _, t := range strings.Split(threads, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(t), &n); err != nil || n < 1 {
			log.Fatalf("bad -sysbench-threads %q", threads)
		}
		o.sbThreads = append(o.sbThreads, n)
	}
	o.sbWorkloads = strings.Split(workloads, ",")

	// The driver logs every failed poll of a starting mariadbd otherwise.
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))

	for _, tool := range []string{"mariadbd", "sysbench", "haproxy", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			if tool == "mariadbd" {
				if _, err := os.Stat("/usr/sbin/mariadbd"); err == nil {
					os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin")
					continue
				}
			}
			log.Fatalf("%s is not installed (make bench installs sysbench, haproxy and mariadb-server)", tool)
		}
	}
	// On Ctrl-C, stop the daemons (which suspend their computes), haproxy
	// and the bare mariadbd, rather than leave them running.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		log.Printf("interrupted; stopping what the suite started")
		runCleanups()
		os.Exit(130)
	}()
	work, err := os.MkdirTemp("", "sdbench-")
	if err != nil {
		log.Fatal(err)
	}
	// The daemons' computes run as their own uids (the suite runs as
	// root) and must be able to walk through the work dir to their folders.
	if err := os.Chmod(work, 0o711); err != nil {
		log.Fatal(err)
	}
	o.workDir = work
	s := &suite{opts: o, res: &Results{}}
	code := s.run()
	if o.keep || code != 0 {
		log.Printf("work directory kept: %s", work)
	} else {
		os.RemoveAll(work)
	}
	os.Exit(code)
}

var (
	cleanupMu sync.Mutex
	cleanups  = map[int]func(){}
	cleanupID int
)

// onInterrupt registers fn to run if the suite is interrupted; the returned
// func unregisters it once the resource is released normally.
func onInterrupt(fn func()) (done func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanupID++
	id := cleanupID
	cleanups[id] = fn
	return func() {
		cleanupMu.Lock()
		defer cleanupMu.Unlock()
		delete(cleanups, id)
	}
}

func runCleanups() {
	cleanupMu.Lock()
	fns := make([]func(), 0, len(cleanups))
	for _, fn := range cleanups {
		fns = append(fns, fn)
	}
	cleanupMu.Unlock()
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	wg.Wait()
}

// renderSaved renders the report from a saved results.json.
func renderSaved(path, out string) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		log.Print(err)
		return 1
	}
	var r Results
	if err := json.Unmarshal(raw, &r); err != nil {
		log.Print(err)
		return 1
	}
	r.Targets = targets(&r)
	report, err := render(&r)
	if err != nil {
		log.Print(err)
		return 1
	}
	if out == "" {
		fmt.Print(string(report))
		return 0
	}
	if err := os.WriteFile(out, report, 0o644); err != nil {
		log.Print(err)
		return 1
	}
	return 0
}

func (s *suite) want(phase string) bool { return len(s.opts.only) == 0 || s.opts.only[phase] }

// suite holds one run's options and results.
type suite struct {
	opts      options
	res       *Results
	bin       string
	benchPkgs []string          // packages with Go benchmarks
	testBins  map[string]string // package -> its test binary, built at the start
}

func (s *suite) run() int {
	t0 := time.Now()
	s.res.Machine = machine()
	s.res.Started = t0
	s.res.Command = "go run ./bench/cmd/benchsuite " + strings.Join(os.Args[1:], " ")
	log.Printf("serverlessd benchmark suite; work dir %s", s.opts.workDir)
	if err := s.build(); err != nil {
		log.Printf("build: %v", err)
		return 1
	}
	if s.want("gobench") || s.want("profile") {
		log.Printf("building the test binaries")
		if err := s.compileTests(); err != nil {
			s.fail("test binaries", err)
		}
	}

	// Daemon 1 serves the latency, re-attach and throughput phases. Its
	// projects never idle out (idle_timeout 0), and its scheduler runs at the
	// default interval: at 200 ms, its usage sampling (a walk of every active
	// compute's folder per tick) would be measured as relay cost.
	if s.want("cold") || s.want("reattach") || s.want("warm") || s.want("throughput") || s.want("storm") {
		d, err := startDaemon(s.bin, filepath.Join(s.opts.workDir, "d1"), 0)
		if err != nil {
			s.fail("daemon", err)
		} else {
			s.phase("cold", func() error { return s.cold(d) })
			s.phase("reattach", func() error { return s.reattach(d) })
			s.phase("warm", func() error { return s.warm(d) })
			s.phase("throughput", func() error { return s.throughput(d) })
			s.phase("storm", func() error { return s.storm(d) })
			d.stop()
		}
	}
	// Churn, then scale on the same data dir with a fresh daemon.
	if s.want("churn") || s.want("scale") {
		s.phase("churn+scale", s.churnAndScale)
	}
	s.phase("poolchurn", s.poolChurn)
	s.phase("pooling", s.pooling)
	s.phase("tenantapi", s.tenantAPI)
	s.phase("crossstorm", s.crossStorm)
	s.phase("density", s.density)
	s.phase("neighbor", s.neighbor)
	s.phase("kubereal", s.kubeReal)
	s.phase("console", s.console)
	s.phase("gobench", s.goBench)
	s.phase("profile", s.profile)

	s.res.Elapsed = time.Since(t0).Round(time.Second)
	s.res.Machine.LoadEnd = loadAvg()
	s.res.Targets = targets(s.res)
	// The raw results, so the report can be re-rendered (-render) after a
	// change of wording without measuring again.
	if raw, err := json.MarshalIndent(s.res, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(s.opts.workDir, "results.json"), raw, 0o644)
	}
	report, err := render(s.res)
	if err != nil {
		log.Printf("render: %v", err)
		return 1
	}
	if s.opts.out != "" {
		if err := os.WriteFile(s.opts.out, report, 0o644); err != nil {
			log.Printf("write %s: %v", s.opts.out, err)
			return 1
		}
		log.Printf("wrote %s", s.opts.out)
	}
	fmt.Println()
	fmt.Print(summary(s.res))
	if len(s.res.Failures) > 0 {
		return 1
	}
	return 0
}

// phase runs one phase if selected; a failure is recorded in the report and
// the next phase still runs.
func (s *suite) phase(name string, fn func() error) {
	sel := s.want(name)
	if name == "churn+scale" {
		sel = s.want("churn") || s.want("scale")
	}
	if !sel {
		return
	}
	log.Printf("== %s", name)
	t0 := time.Now()
	if err := fn(); err != nil {
		s.fail(name, err)
		return
	}
	log.Printf("== %s done in %s", name, time.Since(t0).Round(time.Second))
}

func (s *suite) fail(name string, err error) {
	log.Printf("!! %s failed: %v", name, err)
	s.res.Failures = append(s.res.Failures, fmt.Sprintf("%s: %v", name, err))
}

// build compiles serverlessd from the tree (unless -binary was given), with
// symbols, so that perf or pprof on it can name functions.
func (s *suite) build() error {
	if s.opts.binary != "" {
		abs, err := filepath.Abs(s.opts.binary)
		s.bin = abs
		return err
	}
	s.bin = filepath.Join(s.opts.workDir, "serverlessd")
	log.Printf("building serverlessd")
	cmd := exec.Command("go", "build", "-o", s.bin, ".")
	cmd.Dir = moduleRoot()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// moduleRoot is the directory of go.mod (the suite may run from anywhere
// inside the module).
func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "."
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}
