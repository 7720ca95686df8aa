package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Machine describes where and on what the figures were measured.
type Machine struct {
	Host     string
	Cores    int
	CPUModel string
	MemGiB   float64
	Kernel   string
	Mariadbd string
	Sysbench string
	HAProxy  string
	Go       string
	Commit   string
	Dirty    bool
	Load     string // load average when the run started
	LoadEnd  string // and when it ended
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	m.Host, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if mem, err := memInfoKB("MemTotal"); err == nil {
		m.MemGiB = float64(mem["MemTotal"]) / (1 << 20)
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	m.Load = loadAvg()
	m.Mariadbd = firstLine("mariadbd", "--version")
	m.Sysbench = firstLine("sysbench", "--version")
	m.HAProxy = firstLine("haproxy", "-v")
	root := moduleRoot()
	if out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
		m.Dirty = len(strings.TrimSpace(string(out))) > 0
	}
	return m
}

// loadAvg is the 1, 5 and 15 minute load averages: on a shared machine,
// how much else was running.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// Results is everything one run measured; the report is rendered from it.
type Results struct {
	Machine  Machine
	Started  time.Time
	Elapsed  time.Duration
	Command  string
	Failures []string

	Cold       *ColdResult
	Reattach   *ReattachResult
	Warm       *WarmResult
	Throughput *ThroughputResult
	Storms     []*StormResult
	Churn      *ChurnResult
	Scale      *ScaleResult
	PoolChurn  *PoolChurnResult
	Pooling    *PoolingResult
	TenantAPI  *TenantAPIResult
	CrossStorm *CrossStormResult
	Density    *DensityResult
	Neighbor   *NeighborResult
	KubeReal   *KubeRealResult
	Console    *ConsoleResult
	GoBench    *GoBenchResult
	Profile    *ProfileResult
	Targets    []Target
}

// memInfoKB reads fields of /proc/meminfo ("MemTotal", "MemAvailable"), in kB.
func memInfoKB(fields ...string) (map[string]int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok || !slices.Contains(fields, name) {
			continue
		}
		if out[name], err = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err != nil {
			return nil, fmt.Errorf("parse %s in /proc/meminfo: %w", name, err)
		}
	}
	for _, f := range fields {
		if _, ok := out[f]; !ok {
			return nil, fmt.Errorf("no %s in /proc/meminfo", f)
		}
	}
	return out, nil
}

// memUsedKB is the machine's memory in use, MemTotal - MemAvailable: what
// the kernel could not hand out without swapping, page cache that can be
// dropped excluded.
func memUsedKB() (int64, error) {
	m, err := memInfoKB("MemTotal", "MemAvailable")
	if err != nil {
		return 0, err
	}
	return m["MemTotal"] - m["MemAvailable"], nil
}
