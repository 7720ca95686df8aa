package main

import (
	"os"
	"os/exec"
	"runtime"
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
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				m.MemGiB = kb / (1 << 20)
			}
		}
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
	GoBench    *GoBenchResult
	Profile    *ProfileResult
	Targets    []Target
}
