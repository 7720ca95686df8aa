package cgroup

import (
	"errors"
	"fmt"
	"path"
)

// Limits for one compute. Zero (or a negative value) means no limit for
// that resource.
type Limits struct {
	// MemoryBytes is the hard limit on the memory charged to the group
	// (memory.limit_in_bytes on v1, memory.max on v2). Swap use is disabled
	// for the group where the kernel allows it.
	MemoryBytes int64
	// CPUMilli is the CPU bandwidth: 1000 is one CPU. It becomes a CFS quota
	// per 100 ms period (cpu.cfs_quota_us on v1, cpu.max on v2). The kernel's
	// smallest quota is 1 ms, so values from 1 to 9 count as 10.
	CPUMilli int64
	// Pids caps the number of tasks in the group (pids.max). Threads count.
	Pids int64
}

// Stats is what the kernel reports about a group's memory. Fields the
// kernel does not provide are zero.
type Stats struct {
	// MemoryBytes is the memory charged to the group now (memory.usage_in_bytes
	// on v1, memory.current on v2), page cache included.
	MemoryBytes int64
	// PeakBytes is the highest MemoryBytes seen since the group was created
	// (memory.max_usage_in_bytes on v1, memory.peak on v2 from Linux 5.19).
	PeakBytes int64
	// OOMKills is how many processes the OOM killer killed in the group
	// (oom_kill in memory.oom_control on v1 from Linux 4.13, in
	// memory.events on v2).
	OOMKills int64
}

// cpuPeriodMicros is the CFS period used for every group: 100 ms.
const cpuPeriodMicros = 100_000

// minQuotaMicros is the smallest CFS quota the kernel accepts.
const minQuotaMicros = 1_000

// cpuQuotaMicros converts CPUMilli to a CFS quota per cpuPeriodMicros; 0
// means no quota.
func cpuQuotaMicros(milli int64) int64 {
	if milli <= 0 {
		return 0
	}
	q := milli * cpuPeriodMicros / 1000
	if q < minQuotaMicros {
		q = minQuotaMicros
	}
	return q
}

// errBadPath is returned by Open for a path that is not an absolute,
// clean path below the root.
var errBadPath = errors.New("cgroup: path must be absolute, clean and not the root")

// checkPath validates a group path such as "/serverlessd/<compute id>".
func checkPath(p string) error {
	if p == "" || p[0] != '/' || path.Clean(p) != p || p == "/" {
		return fmt.Errorf("%w: %q", errBadPath, p)
	}
	return nil
}

// MemoryUsage returns the memory charged to the group now. See Stats for
// the peak and the OOM-kill count.
func (g *Group) MemoryUsage() (int64, error) {
	st, err := g.Stats()
	if err != nil {
		return 0, err
	}
	return st.MemoryBytes, nil
}

// Path returns the group's path, as given to Open.
func (g *Group) Path() string { return g.path }
