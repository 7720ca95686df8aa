//go:build linux

package cgroup

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// unifiedRoot is where the v2 hierarchy is mounted on a unified host.
const unifiedRoot = "/sys/fs/cgroup"

// controllers are the controllers every group uses, by their v1 and v2 name.
var controllers = []string{"memory", "cpu", "pids"}

// Group is one cgroup for one compute, e.g. path "/serverlessd/<compute id>".
// Its methods are safe for concurrent use.
type Group struct {
	path string
	v1   cgroup1.Cgroup    // on a legacy or hybrid host, else nil
	v2   *cgroup2.Manager  // on a unified host, else nil
	dirs map[string]string // controller name -> the group's directory in it
}

// unified reports whether this host uses the v2 hierarchy. Hybrid hosts
// (v1 controllers plus an empty v2 mount) use v1.
func unified() bool { return cgroups.Mode() == cgroups.Unified }

// Available reports whether this process can create cgroups here (root, a
// writable cgroupfs with the memory, cpu and pids controllers); reason says
// why not, for a log line.
func Available() (ok bool, reason string) {
	var err error
	switch cgroups.Mode() {
	case cgroups.Unavailable:
		return false, "no cgroup filesystem is mounted at " + unifiedRoot
	case cgroups.Unified:
		err = availableV2()
	default:
		err = availableV1()
	}
	if err != nil {
		reason = err.Error()
		if os.Geteuid() != 0 {
			reason += " (creating cgroups needs root)"
		}
		return false, reason
	}
	return true, ""
}

var probeSeq atomic.Int64

// probe creates and removes an empty group under dir, the only reliable
// test that this process may create groups there.
func probe(dir string) error {
	p := filepath.Join(dir, fmt.Sprintf("serverlessd-probe-%d-%d", os.Getpid(), probeSeq.Add(1)))
	if err := os.Mkdir(p, 0o755); err != nil {
		return fmt.Errorf("cannot create cgroups in %s: %w", dir, err)
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("cannot remove probe cgroup %s: %w", p, err)
	}
	return nil
}

func availableV1() error {
	subs, err := v1Hierarchy()
	if err != nil {
		return err
	}
	for _, s := range subs {
		if err := probe(subsystemDir(s, "/")); err != nil {
			return err
		}
	}
	return nil
}

func availableV2() error {
	if err := v2RootControllers(); err != nil {
		return err
	}
	// A cgroup namespace root (inside a container) is not the real root: it
	// cannot enable controllers for children while it holds processes.
	if _, err := os.Stat(filepath.Join(unifiedRoot, "cgroup.type")); err == nil {
		enabled, _ := os.ReadFile(filepath.Join(unifiedRoot, "cgroup.subtree_control"))
		procs, _ := os.ReadFile(filepath.Join(unifiedRoot, "cgroup.procs"))
		for _, c := range controllers {
			if !hasField(string(enabled), c) && len(strings.TrimSpace(string(procs))) > 0 {
				return fmt.Errorf("controller %s is not enabled in %s/cgroup.subtree_control and cannot be while that cgroup holds processes (run the daemon in a leaf cgroup of a delegated subtree)", c, unifiedRoot)
			}
		}
	}
	return probe(unifiedRoot)
}

// v2RootControllers checks the v2 root offers every controller we use.
func v2RootControllers() error {
	b, err := os.ReadFile(filepath.Join(unifiedRoot, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("reading cgroup v2 controllers: %w", err)
	}
	for _, c := range controllers {
		if !hasField(string(b), c) {
			return fmt.Errorf("cgroup v2 controller %s is not available in %s", c, unifiedRoot)
		}
	}
	return nil
}

func hasField(s, f string) bool {
	for _, x := range strings.Fields(s) {
		if x == f {
			return true
		}
	}
	return false
}

// pather is implemented by every v1 subsystem that has a directory.
type pather interface {
	Path(path string) string
}

func subsystemDir(s cgroup1.Subsystem, path string) string {
	return s.(pather).Path(path)
}

// v1Hierarchy is the library's default v1 hierarchy (read from
// /proc/self/mountinfo) narrowed to the memory, cpu and pids controllers: a
// group is not created in the others (cpuset, devices, blkio, ...).
func v1Hierarchy() ([]cgroup1.Subsystem, error) {
	all, err := cgroup1.Default()
	if err != nil {
		return nil, fmt.Errorf("reading cgroup v1 mounts: %w", err)
	}
	var out []cgroup1.Subsystem
	for _, want := range controllers {
		found := false
		for _, s := range all {
			if _, ok := s.(pather); ok && string(s.Name()) == want {
				out = append(out, s)
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("cgroup v1 controller %s is not mounted", want)
		}
	}
	return out, nil
}

// Open creates (or opens, if it exists: adoption after a daemon restart) the
// group at path with the limits, updating limits on an existing group.
// path is absolute, e.g. "/serverlessd/<compute id>", relative to the root
// of each hierarchy.
func Open(path string, lim Limits) (*Group, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	g := &Group{path: path, dirs: map[string]string{}}
	if unified() {
		if err := v2RootControllers(); err != nil {
			return nil, err
		}
		for _, c := range controllers {
			g.dirs[c] = filepath.Join(unifiedRoot, path)
		}
	} else {
		subs, err := v1Hierarchy()
		if err != nil {
			return nil, err
		}
		for _, s := range subs {
			g.dirs[string(s.Name())] = subsystemDir(s, path)
		}
	}
	_, statErr := os.Stat(g.dirs["memory"])
	existed := statErr == nil

	if unified() {
		// Empty resources for each controller: NewManager enables them in
		// the parents' cgroup.subtree_control and writes nothing else; the
		// limits follow in apply.
		m, err := cgroup2.NewManager(unifiedRoot, path, &cgroup2.Resources{
			Memory: &cgroup2.Memory{}, CPU: &cgroup2.CPU{}, Pids: &cgroup2.Pids{},
		})
		if err != nil {
			return nil, fmt.Errorf("creating cgroup %s: %w", path, err)
		}
		g.v2 = m
	} else {
		// Empty resources: New only creates the directories (or finds them);
		// the limits follow in apply, which orders the writes so that an
		// existing group's old limits never reject the new ones.
		cg, err := cgroup1.New(cgroup1.StaticPath(path), &specs.LinuxResources{},
			cgroup1.WithHierarchy(v1Hierarchy))
		if err != nil {
			return nil, fmt.Errorf("creating cgroup %s: %w", path, err)
		}
		g.v1 = cg
	}
	if err := g.apply(lim); err != nil {
		if !existed {
			_ = g.Delete()
		}
		return nil, fmt.Errorf("setting limits on cgroup %s: %w", path, err)
	}
	return g, nil
}

// apply writes all three limits, resetting those that are zero to "no
// limit", so that reopening a group leaves exactly lim in force.
func (g *Group) apply(lim Limits) error {
	if g.v2 != nil {
		return g.applyV2(lim)
	}
	return g.applyV1(lim)
}

func (g *Group) applyV1(lim Limits) error {
	// Memory. memory+swap (memsw) may never be below the memory limit, so
	// the two are written in the order that keeps that true: memsw first
	// when the limit goes up, the limit first when it goes down. (The
	// library's own ordering does not cover memsw.)
	memDir := g.dirs["memory"]
	memsw := fileExists(filepath.Join(memDir, "memory.memsw.limit_in_bytes"))
	limit := int64(-1) // no limit
	if lim.MemoryBytes > 0 {
		limit = lim.MemoryBytes
	}
	setLimit := func() error {
		return g.v1.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
	}
	setMemsw := func() error {
		if !memsw {
			return nil
		}
		return g.v1.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: &limit}})
	}
	steps := []func() error{setLimit, setMemsw}
	if cur, err := readUint(filepath.Join(memDir, "memory.limit_in_bytes")); err != nil {
		return fmt.Errorf("memory: %w", err)
	} else if limit < 0 || uint64(limit) > cur {
		steps = []func() error{setMemsw, setLimit}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("memory: %w", err)
		}
	}
	if lim.MemoryBytes > 0 && !memsw {
		// Swap is not accounted: keep the group's pages out of swap as far
		// as reclaim allows. Best effort.
		zero := uint64(0)
		_ = g.v1.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Swappiness: &zero}})
	}

	// CPU: quota -1 is no limit.
	period := uint64(cpuPeriodMicros)
	quota := int64(-1)
	if q := cpuQuotaMicros(lim.CPUMilli); q > 0 {
		quota = q
	}
	if err := g.v1.Update(&specs.LinuxResources{CPU: &specs.LinuxCPU{Period: &period, Quota: &quota}}); err != nil {
		return fmt.Errorf("cpu: %w", err)
	}

	// Pids: the library writes only positive limits, so "max" is written
	// here.
	if lim.Pids > 0 {
		n := lim.Pids
		if err := g.v1.Update(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &n}}); err != nil {
			return fmt.Errorf("pids: %w", err)
		}
	} else if err := os.WriteFile(filepath.Join(g.dirs["pids"], "pids.max"), []byte("max"), 0); err != nil {
		return fmt.Errorf("pids: %w", err)
	}
	return nil
}

func (g *Group) applyV2(lim Limits) error {
	dir := g.dirs["memory"]
	// The kernel reads any value of at least the largest page count times
	// the page size as "max"; the library's memory fields are numbers.
	unlimited := int64(math.MaxInt64)
	memMax, swapMax := unlimited, unlimited
	if lim.MemoryBytes > 0 {
		memMax, swapMax = lim.MemoryBytes, 0
	}
	mem := &cgroup2.Memory{Max: &memMax}
	if fileExists(filepath.Join(dir, "memory.swap.max")) {
		mem.Swap = &swapMax
	}
	period := uint64(cpuPeriodMicros)
	var quota *int64 // nil: "max"
	if q := cpuQuotaMicros(lim.CPUMilli); q > 0 {
		quota = &q
	}
	pids := int64(-1) // the library writes "max" for a negative limit
	if lim.Pids > 0 {
		pids = lim.Pids
	}
	return g.v2.Update(&cgroup2.Resources{
		Memory: mem,
		CPU:    &cgroup2.CPU{Max: cgroup2.NewCPUMax(quota, &period)},
		Pids:   &cgroup2.Pids{Max: pids},
	})
}

// Add moves a process (all its threads) into the group. Its later children
// and threads are born in the group.
func (g *Group) Add(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("cgroup %s: invalid pid %d", g.path, pid)
	}
	var err error
	if g.v2 != nil {
		err = g.v2.AddProc(uint64(pid))
	} else {
		err = g.v1.AddProc(uint64(pid))
	}
	if err != nil {
		return fmt.Errorf("adding pid %d to cgroup %s: %w", pid, g.path, err)
	}
	return nil
}

// Stats returns the group's current memory usage, its peak and the OOM-kill
// count, where the kernel gives them (best effort: missing files read as
// zero).
func (g *Group) Stats() (Stats, error) {
	var st Stats
	if g.v2 != nil {
		m, err := g.v2.StatFiltered(cgroup2.StatMemory | cgroup2.StatMemoryEvents)
		if err != nil {
			return st, fmt.Errorf("cgroup %s stats: %w", g.path, err)
		}
		if m.Memory != nil {
			st.MemoryBytes = clampInt64(m.Memory.Usage)
			st.PeakBytes = clampInt64(m.Memory.MaxUsage)
		}
		if m.MemoryEvents != nil {
			st.OOMKills = clampInt64(m.MemoryEvents.OomKill)
		}
		return st, nil
	}
	m, err := g.v1.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return st, fmt.Errorf("cgroup %s stats: %w", g.path, err)
	}
	if m.Memory != nil && m.Memory.Usage != nil {
		st.MemoryBytes = clampInt64(m.Memory.Usage.Usage)
		st.PeakBytes = clampInt64(m.Memory.Usage.Max)
	}
	if m.MemoryOomControl != nil {
		st.OOMKills = clampInt64(m.MemoryOomControl.OomKill)
	}
	return st, nil
}

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// Delete removes the group; it must be empty (call it after the process
// exited and was reaped). Deleting a missing group is not an error.
func (g *Group) Delete() error {
	var err error
	if g.v2 != nil {
		if !fileExists(g.dirs["memory"]) {
			return nil
		}
		err = g.v2.Delete()
	} else {
		err = g.v1.Delete()
		if errors.Is(err, cgroup1.ErrCgroupDeleted) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("deleting cgroup %s: %w", g.path, err)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// readUint reads a cgroupfs file holding one unsigned integer.
func readUint(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}
