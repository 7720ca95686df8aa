package main

import (
	"bufio"
	"bytes"
	"fmt"
	"log"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Package string // relative, e.g. ./compute
	Name    string // without the Benchmark prefix and the -GOMAXPROCS suffix
	N       int
	Metrics []Metric
}

// Metric is one value/unit pair of a benchmark line.
type Metric struct {
	Value float64
	Unit  string
}

// Get returns the value of unit, or false.
func (b GoBench) Get(unit string) (float64, bool) {
	for _, m := range b.Metrics {
		if m.Unit == unit {
			return m.Value, true
		}
	}
	return 0, false
}

// GoBenchResult is every package's Go benchmarks.
type GoBenchResult struct {
	Packages []GoBenchPackage
}

// GoBenchPackage is one package's run.
type GoBenchPackage struct {
	Package   string
	BenchTime string
	Benches   []GoBench
	Error     string
}

// find returns the benchmark pkg/name, if it ran.
func (r *GoBenchResult) find(pkg, name string) (GoBench, bool) {
	if r == nil {
		return GoBench{}, false
	}
	for _, p := range r.Packages {
		for _, b := range p.Benches {
			if p.Package == pkg && b.Name == name {
				return b, true
			}
		}
	}
	return GoBench{}, false
}

// benchTime is how long each package's benchmarks run. Those that start a
// mariadbd per iteration run a fixed count (30 cycles of resume, enough for
// its p99); the fast ones run for the default second, which gives store
// operations thousands of iterations and latency percentiles enough samples.
func benchTime(pkg string) string {
	if strings.HasPrefix(pkg, "./compute") {
		return "30x"
	}
	return "1s"
}

// compileTests builds, at the start of the run, the test binaries of every
// package with benchmarks (found by `go test -list`, so benchmarks added
// later join the suite by themselves) and of this package. Running those
// binaries later, rather than `go test` in each phase, measures one state of
// the tree: others may be editing it while the suite runs for minutes.
func (s *suite) compileTests() error {
	var pkgs []string
	if s.want("gobench") {
		var err error
		if pkgs, err = benchPackages(); err != nil {
			return err
		}
		s.benchPkgs = pkgs
	}
	if s.want("profile") {
		pkgs = append(pkgs, "./bench")
	}
	s.testBins = map[string]string{}
	for _, pkg := range pkgs {
		bin := filepath.Join(s.opts.workDir, "tests", strings.ReplaceAll(strings.Trim(pkg, "./"), "/", "_")+".test")
		cmd := exec.Command("go", "test", "-c", "-o", bin, pkg)
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			log.Printf("%s: test binary does not build: %v: %s", pkg, err, lastLines(out, 5))
			continue
		}
		s.testBins[pkg] = bin
	}
	return nil
}

// runTestBin runs a package's compiled test binary in the package's
// folder, as `go test` would.
func (s *suite) runTestBin(pkg string, args ...string) ([]byte, error) {
	bin, ok := s.testBins[pkg]
	if !ok {
		return nil, fmt.Errorf("%s: no test binary (it did not build at the start of the run)", pkg)
	}
	cmd := exec.Command(bin, append([]string{"-test.run=^$"}, args...)...)
	cmd.Dir = filepath.Join(moduleRoot(), pkg)
	return cmd.CombinedOutput()
}

// goBench runs the Go benchmarks of every package that has some.
func (s *suite) goBench() error {
	res := &GoBenchResult{}
	for _, pkg := range s.benchPkgs {
		bt := benchTime(pkg)
		log.Printf("%s: benchmarks, -benchtime %s", pkg, bt)
		out, err := s.runTestBin(pkg, "-test.bench=.", "-test.benchtime="+bt, "-test.timeout=20m")
		gp := GoBenchPackage{Package: pkg, BenchTime: bt, Benches: parseBench(pkg, out)}
		if err != nil {
			gp.Error = fmt.Sprintf("%v: %s", err, lastLines(out, 8))
			log.Printf("%s: %s", pkg, gp.Error)
		}
		res.Packages = append(res.Packages, gp)
	}
	s.res.GoBench = res
	return nil
}

// benchPackages lists the module's packages that define benchmarks, except
// the end-to-end suite and this one (its ProxySysbench is the profile phase).
func benchPackages() ([]string, error) {
	cmd := exec.Command("go", "test", "-run", "^$", "-list", "^Benchmark", "./...")
	cmd.Dir = moduleRoot()
	out, err := cmd.CombinedOutput()
	mod, _ := exec.Command("go", "list", "-m").Output()
	prefix := strings.TrimSpace(string(mod))
	var pkgs []string
	has := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "Benchmark") {
			has = true
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "ok" || f[0] == "?" || f[0] == "FAIL") {
			pkg := "." + strings.TrimPrefix(f[1], prefix)
			if pkg == "." {
				pkg = "./"
			}
			if has && f[0] == "ok" && pkg != "./bench" && pkg != "./e2e" {
				pkgs = append(pkgs, pkg)
			}
			if f[0] == "FAIL" {
				log.Printf("go test -list: %s fails to build; its benchmarks are skipped", pkg)
			}
			has = false
		}
	}
	if len(pkgs) == 0 && err != nil {
		return nil, fmt.Errorf("go test -list: %v: %s", err, lastLines(out, 10))
	}
	return pkgs, nil
}

var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)

func parseBench(pkg string, out []byte) []GoBench {
	var bs []GoBench
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		b := GoBench{Package: pkg, Name: m[1]}
		b.N, _ = strconv.Atoi(m[3])
		f := strings.Fields(m[4])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			if f[i+1] == "ns/op" && v == 0 {
				continue // benchmarks that zero ns/op: their percentiles say more
			}
			b.Metrics = append(b.Metrics, Metric{v, f[i+1]})
		}
		bs = append(bs, b)
	}
	return bs
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " / ")
}
