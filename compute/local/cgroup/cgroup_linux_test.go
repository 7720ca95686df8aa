//go:build linux

package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests create real cgroups. They need root and a cgroupfs with the
// memory, cpu and pids controllers, as CI has: they fail, never skip, when
// either is missing.

const (
	childModeEnv = "SERVERLESSD_CGROUP_TEST_CHILD" // alloc, threads or wait
	childArgEnv  = "SERVERLESSD_CGROUP_TEST_ARG"   // MiB to allocate, threads to start
	mib          = 1 << 20
)

// TestMain turns the test binary into a child process when childModeEnv is
// set, so that no external tool is needed. Every child first waits for one
// byte on stdin: the parent sends it after adding the child to a group.
func TestMain(m *testing.M) {
	mode := os.Getenv(childModeEnv)
	if mode == "" {
		os.Exit(m.Run())
	}
	n, _ := strconv.Atoi(os.Getenv(childArgEnv))
	var b [1]byte
	if _, err := io.ReadFull(os.Stdin, b[:]); err != nil {
		fmt.Fprintln(os.Stderr, "child: waiting for the parent:", err)
		os.Exit(3)
	}
	switch mode {
	case "alloc":
		childAlloc(n)
	case "threads":
		childThreads(n)
	case "wait":
		_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
	default:
		fmt.Fprintln(os.Stderr, "child: unknown mode", mode)
		os.Exit(3)
	}
	fmt.Println("done")
	os.Exit(0)
}

// childAlloc allocates and touches n MiB, one MiB at a time, printing the
// MiB touched so far after each.
func childAlloc(n int) {
	page := os.Getpagesize()
	var chunks [][]byte
	for i := 1; i <= n; i++ {
		c := make([]byte, mib)
		for j := 0; j < len(c); j += page {
			c[j] = 1
		}
		chunks = append(chunks, c)
		fmt.Println(i)
	}
	runtime.KeepAlive(chunks)
}

// childThreads starts n goroutines that each lock an OS thread and block
// for ever, so that each one needs a new thread, printing the process's
// thread count after each.
func childThreads(n int) {
	for i := 0; i < n; i++ {
		started := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(started)
			select {}
		}()
		<-started
		fmt.Println(threadCount())
	}
}

func threadCount() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

// child is a re-executed test binary waiting for release.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // stdout, line by line; closed at EOF
	stderr bytes.Buffer
	waited bool
}

func startChild(t *testing.T, mode string, arg int) *child {
	t.Helper()
	c := &child{lines: make(chan string, 1024)}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), childModeEnv+"="+mode, childArgEnv+"="+strconv.Itoa(arg))
	c.cmd.Stderr = &c.stderr
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if !c.waited {
			_ = c.cmd.Process.Kill()
			c.wait()
		}
	})
	return c
}

// release lets the child go on past its wait for the parent.
func (c *child) release(t *testing.T) {
	t.Helper()
	if _, err := c.stdin.Write([]byte{1}); err != nil {
		t.Fatalf("releasing child: %v", err)
	}
}

// wait reads all output and reaps the child.
func (c *child) wait() (out []string, err error) {
	_ = c.stdin.Close() // a "wait" child exits at EOF
	for l := range c.lines {
		out = append(out, l)
	}
	err = c.cmd.Wait()
	c.waited = true
	return out, err
}

// requireCgroups fails the test, rather than skipping it, when cgroups
// cannot be created: CI runs these tests as root on a host with cgroups.
func requireCgroups(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("cgroup tests must run as root (euid is %d): they create real cgroups; run `sudo go test ./compute/local/cgroup/` or as root, as CI does", os.Geteuid())
	}
	if ok, reason := Available(); !ok {
		t.Fatalf("cgroups are not available on this host, and CI has them: %s", reason)
	}
}

const testParent = "/serverlessd-test"

func testPath(t *testing.T) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return fmt.Sprintf("%s/%s-%d", testParent, name, os.Getpid())
}

// openTestGroup opens a fresh group for the test and removes it (and the
// shared parent, when empty) at the end.
func openTestGroup(t *testing.T, lim Limits) *Group {
	t.Helper()
	requireCgroups(t)
	p := testPath(t)
	g, err := Open(p, lim)
	if err != nil {
		t.Fatalf("Open(%q, %+v): %v", p, lim, err)
	}
	t.Cleanup(func() {
		if err := g.Delete(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, c := range controllers {
			_ = os.Remove(filepath.Dir(g.dir(c))) // the shared parent, if empty
		}
	})
	return g
}

// dir returns the group's directory in a controller ("memory", "cpu",
// "pids"); on v2 it is the same directory for all.
func (g *Group) dir(controller string) string { return g.dirs[controller] }

// readInt reads a cgroupfs file holding one integer; "max" reads as -1.
func readInt(t *testing.T, p string) int64 {
	t.Helper()
	s := readString(t, p)
	if s == "max" {
		return -1
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return n
}

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// readKey reads "key value" lines (memory.events, pids.events, ...).
func readKey(p, key string) (int64, bool) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			n, err := strconv.ParseInt(f[1], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// checkLimits reads the limit files back from the cgroupfs.
func checkLimits(t *testing.T, g *Group, lim Limits) {
	t.Helper()
	quota := cpuQuotaMicros(lim.CPUMilli)
	if g.v2 != nil {
		dir := g.dir("memory")
		want := func(file string, set bool, v int64) {
			t.Helper()
			w := "max"
			if set {
				w = strconv.FormatInt(v, 10)
			}
			if got := readString(t, filepath.Join(dir, file)); got != w {
				t.Errorf("%s = %q, want %q", file, got, w)
			}
		}
		want("memory.max", lim.MemoryBytes > 0, lim.MemoryBytes)
		if fileExists(filepath.Join(dir, "memory.swap.max")) {
			want("memory.swap.max", lim.MemoryBytes > 0, 0)
		}
		want("pids.max", lim.Pids > 0, lim.Pids)
		wantCPU := fmt.Sprintf("max %d", cpuPeriodMicros)
		if quota > 0 {
			wantCPU = fmt.Sprintf("%d %d", quota, cpuPeriodMicros)
		}
		if got := readString(t, filepath.Join(dir, "cpu.max")); got != wantCPU {
			t.Errorf("cpu.max = %q, want %q", got, wantCPU)
		}
		return
	}
	mem := g.dir("memory")
	for _, f := range []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} {
		p := filepath.Join(mem, f)
		if f != "memory.limit_in_bytes" && !fileExists(p) {
			continue
		}
		got := readInt(t, p)
		switch {
		case lim.MemoryBytes > 0 && got != lim.MemoryBytes:
			t.Errorf("%s = %d, want %d", f, got, lim.MemoryBytes)
		case lim.MemoryBytes == 0 && got < 1<<62:
			t.Errorf("%s = %d, want no limit", f, got)
		}
	}
	cpu := g.dir("cpu")
	if got := readInt(t, filepath.Join(cpu, "cpu.cfs_period_us")); got != cpuPeriodMicros {
		t.Errorf("cpu.cfs_period_us = %d, want %d", got, cpuPeriodMicros)
	}
	wantQuota := int64(-1)
	if quota > 0 {
		wantQuota = quota
	}
	if got := readInt(t, filepath.Join(cpu, "cpu.cfs_quota_us")); got != wantQuota {
		t.Errorf("cpu.cfs_quota_us = %d, want %d", got, wantQuota)
	}
	wantPids := int64(-1)
	if lim.Pids > 0 {
		wantPids = lim.Pids
	}
	if got := readInt(t, filepath.Join(g.dir("pids"), "pids.max")); got != wantPids {
		t.Errorf("pids.max = %d, want %d (-1 is max)", got, wantPids)
	}
}

// memberOf reports whether pid is in g, by /proc/<pid>/cgroup.
func memberOf(t *testing.T, pid int, g *Group) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[2] != g.path {
			continue
		}
		if g.v2 != nil && parts[0] == "0" && parts[1] == "" {
			return true
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				return true
			}
		}
	}
	return false
}

func TestAvailable(t *testing.T) {
	requireCgroups(t)
	mode := "v1"
	if unified() {
		mode = "v2"
	}
	t.Logf("cgroups available, using %s", mode)
}

func TestMemoryLimitOOMKillsChild(t *testing.T) {
	const limit = 64 * mib
	const alloc = 256 // MiB the child tries to touch
	g := openTestGroup(t, Limits{MemoryBytes: limit})
	checkLimits(t, g, Limits{MemoryBytes: limit})

	c := startChild(t, "alloc", alloc)
	if err := g.Add(c.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if !memberOf(t, c.cmd.Process.Pid, g) {
		t.Fatalf("child %d is not in %s after Add", c.cmd.Process.Pid, g.path)
	}
	if memberOf(t, os.Getpid(), g) {
		t.Fatalf("the test process itself is in %s", g.path)
	}
	c.release(t)
	out, err := c.wait()

	touched := 0
	for _, l := range out {
		if n, e := strconv.Atoi(l); e == nil {
			touched = n
		}
	}
	st, serr := g.Stats()
	if serr != nil {
		t.Fatal(serr)
	}
	t.Logf("child touched %d of %d MiB before it ended (%v); group peak %d bytes (%.1f MiB), usage now %d, OOM kills %d",
		touched, alloc, err, st.PeakBytes, float64(st.PeakBytes)/mib, st.MemoryBytes, st.OOMKills)

	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child exited with %v, want killed by SIGKILL; stderr:\n%s", err, c.stderr.String())
	}
	ws, _ := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL; stderr:\n%s", ee, c.stderr.String())
	}
	if touched >= alloc {
		t.Errorf("child touched all %d MiB under a %d MiB limit", touched, limit/mib)
	}
	if touched*mib > limit {
		t.Errorf("child reported %d MiB touched, above the %d MiB limit", touched, limit/mib)
	}
	if st.OOMKills < 1 {
		t.Errorf("OOM kills = %d, want at least 1", st.OOMKills)
	}
	// The kernel may overshoot a limit by a charge batch (a few pages).
	const slack = mib
	if st.PeakBytes <= 0 || st.PeakBytes > limit+slack {
		t.Errorf("peak = %d bytes, want in (0, %d]", st.PeakBytes, limit+slack)
	}
	u, err := g.MemoryUsage()
	if err != nil {
		t.Fatal(err)
	}
	if u > limit+slack {
		t.Errorf("MemoryUsage = %d after the kill, above the limit %d", u, limit)
	}

	// The test process is outside the group: it can still touch more than
	// the group's limit.
	big := make([]byte, 96*mib)
	for i := 0; i < len(big); i += os.Getpagesize() {
		big[i] = 1
	}
	runtime.KeepAlive(big)
}

func TestPidsLimitStopsThreads(t *testing.T) {
	const limit = 24
	g := openTestGroup(t, Limits{Pids: limit})
	if got := readInt(t, filepath.Join(g.dir("pids"), "pids.max")); got != limit {
		t.Fatalf("pids.max = %d, want %d", got, limit)
	}

	c := startChild(t, "threads", 200)
	if err := g.Add(c.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	current := readInt(t, filepath.Join(g.dir("pids"), "pids.current"))
	if current < 1 || current > limit {
		t.Fatalf("pids.current = %d right after Add, want 1..%d (the child's threads)", current, limit)
	}
	c.release(t)
	out, err := c.wait()

	maxThreads, done := 0, false
	for _, l := range out {
		if l == "done" {
			done = true
		} else if n, e := strconv.Atoi(l); e == nil && n > maxThreads {
			maxThreads = n
		}
	}
	events, hasEvents := readKey(filepath.Join(g.dir("pids"), "pids.events"), "max")
	peak := int64(-1)
	if fileExists(filepath.Join(g.dir("pids"), "pids.peak")) {
		peak = readInt(t, filepath.Join(g.dir("pids"), "pids.peak"))
	}
	stderr, _, _ := strings.Cut(c.stderr.String(), "\n")
	t.Logf("child had %d tasks after Add, reached %d threads, ended with %v (%q); pids.peak %d, refused forks (pids.events max) %d",
		current, maxThreads, err, stderr, peak, events)

	if done || err == nil {
		t.Fatalf("child started all its threads under pids.max %d (err %v)", limit, err)
	}
	if maxThreads > limit {
		t.Errorf("child reached %d threads, above pids.max %d", maxThreads, limit)
	}
	if maxThreads < int(current) {
		t.Errorf("child reported no thread growth (max %d, %d at Add); stderr:\n%s", maxThreads, current, c.stderr.String())
	}
	if peak > limit {
		t.Errorf("pids.peak = %d, above pids.max %d", peak, limit)
	}
	if hasEvents && events < 1 {
		t.Errorf("pids.events max = %d, want at least one refused fork", events)
	}
}

func TestCPUQuotaFiles(t *testing.T) {
	g := openTestGroup(t, Limits{CPUMilli: 1500})
	checkLimits(t, g, Limits{CPUMilli: 1500})
	if g.v2 == nil {
		if got := readInt(t, filepath.Join(g.dir("cpu"), "cpu.cfs_quota_us")); got != 150_000 {
			t.Errorf("cpu.cfs_quota_us = %d, want 150000 for 1.5 CPUs", got)
		}
	} else if got := readString(t, filepath.Join(g.dir("cpu"), "cpu.max")); got != "150000 100000" {
		t.Errorf("cpu.max = %q, want \"150000 100000\" for 1.5 CPUs", got)
	}
	for _, milli := range []int64{250, 5, 0, 4000} {
		g2, err := Open(g.path, Limits{CPUMilli: milli})
		if err != nil {
			t.Fatalf("Open with CPUMilli %d: %v", milli, err)
		}
		checkLimits(t, g2, Limits{CPUMilli: milli})
	}
}

func TestCPUQuotaMicros(t *testing.T) {
	for _, c := range []struct{ milli, want int64 }{
		{0, 0}, {-5, 0}, {1, 1000}, {9, 1000}, {10, 1000}, {250, 25_000}, {1000, 100_000}, {1500, 150_000}, {16000, 1_600_000},
	} {
		if got := cpuQuotaMicros(c.milli); got != c.want {
			t.Errorf("cpuQuotaMicros(%d) = %d, want %d", c.milli, got, c.want)
		}
	}
}

func TestOpenUpdatesExistingGroup(t *testing.T) {
	first := Limits{MemoryBytes: 64 * mib, CPUMilli: 1000, Pids: 64}
	g := openTestGroup(t, first)
	checkLimits(t, g, first)

	// A process in the group stays there when the group is opened again,
	// as after a daemon restart.
	c := startChild(t, "wait", 0)
	if err := g.Add(c.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	c.release(t)

	for _, lim := range []Limits{
		{MemoryBytes: 128 * mib, CPUMilli: 2000, Pids: 128}, // raise all
		{MemoryBytes: 96 * mib, CPUMilli: 500, Pids: 32},    // lower all
		{},                                   // no limits
		{MemoryBytes: 80 * mib, Pids: 100},   // limits again, from none
		{CPUMilli: 300},                      // memory and pids off, cpu on
		{MemoryBytes: 200 * mib, Pids: 4096}, // back
	} {
		g2, err := Open(g.path, lim)
		if err != nil {
			t.Fatalf("reopen with %+v: %v", lim, err)
		}
		checkLimits(t, g2, lim)
		if !memberOf(t, c.cmd.Process.Pid, g2) {
			t.Fatalf("child left the group when it was reopened with %+v", lim)
		}
	}
	if _, err := c.wait(); err != nil {
		t.Fatalf("child: %v; stderr:\n%s", err, c.stderr.String())
	}
}

func TestDeleteRemovesGroup(t *testing.T) {
	g := openTestGroup(t, Limits{MemoryBytes: 64 * mib, CPUMilli: 500, Pids: 32})
	for _, ctl := range controllers {
		if !fileExists(g.dir(ctl)) {
			t.Fatalf("%s missing after Open", g.dir(ctl))
		}
	}

	c := startChild(t, "wait", 0)
	if err := g.Add(c.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	c.release(t)
	if err := g.Delete(); err == nil {
		t.Fatal("Delete of a group holding a live process succeeded")
	} else {
		t.Logf("Delete with a live process: %v", err)
	}
	if !memberOf(t, c.cmd.Process.Pid, g) {
		t.Fatal("the failed Delete moved the process out")
	}
	if _, err := c.wait(); err != nil {
		t.Fatalf("child: %v", err)
	}

	// The kernel may take a moment to drop an exited task from the group;
	// the library retries, and so do we, briefly.
	var err error
	for i := 0; i < 20; i++ {
		if err = g.Delete(); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Delete after the process exited: %v", err)
	}
	for _, ctl := range controllers {
		if fileExists(g.dir(ctl)) {
			t.Errorf("%s still exists after Delete", g.dir(ctl))
		}
	}
	if err := g.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}

	// A Group opened for a path that was deleted by someone else deletes
	// as a no-op too.
	g2, err := Open(g.path, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	g3, err := Open(g.path, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := g2.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := g3.Delete(); err != nil {
		t.Errorf("Delete of a group deleted through another Group: %v", err)
	}
}

func TestOpenRejectsBadPath(t *testing.T) {
	for _, p := range []string{"", "/", "relative", "/a/../b", "/a/", "//a"} {
		if _, err := Open(p, Limits{}); !errors.Is(err, errBadPath) {
			t.Errorf("Open(%q) = %v, want errBadPath", p, err)
		}
	}
}

func TestAddInvalidPid(t *testing.T) {
	g := openTestGroup(t, Limits{})
	if err := g.Add(0); err == nil {
		t.Error("Add(0) succeeded")
	}
}
