package server

import (
	"runtime"

	"github.com/serverlessd/serverlessd/machine"
	"github.com/serverlessd/serverlessd/quantity"
)

// Bounds on the free-text fields the API accepts. Each is far above any
// real value; they keep a client from storing megabytes in a project row or
// a compute spec, which every lookup then reads.
const (
	maxURLLen = 2048
	// maxImageLen is a registry host, a repository path and a tag.
	maxImageLen = 255
	// maxRoleNameLen is compute.ValidateRoleName's limit, checked here first
	// so that no error echoes a longer name.
	maxRoleNameLen = 32
	// maxProjectConnections bounds a project's max_connections; 0 is the
	// daemon's default.
	maxProjectConnections = 100_000
	// maxPoolSize bounds pool_size; the compute's own connection count
	// bounds it further when sessions borrow.
	maxPoolSize = 10_000
	// maxPoolWait bounds pool_wait_timeout, in seconds.
	maxPoolWait = 3600
)

// Limits bound the resources the API accepts for a compute, so that a unit
// mistake is a 400 naming the range rather than a compute that cannot start.
// Zero fields take the defaults of resourceLimits.
type Limits struct {
	MinMemory, MaxMemory   int64 // bytes
	MinCPU, MaxCPU         int64 // millicores
	MinStorage, MaxStorage int64 // bytes
	// Images, when not empty, are the only container images a compute may
	// name: a tenant must not run an image of their choosing on the
	// cluster's nodes.
	Images []string
}

// Defaults. The minimums are what MariaDB runs in: the local driver sizes
// its caches for 64Mi at least; an empty datadir of the image (system
// tablespace, redo log, undo tablespaces) takes a few hundred megabytes of
// its volume, while a local compute's takes about 60 MiB (a 32 MiB redo
// log and a 12 MiB system tablespace), so 100Mi leaves it room to work.
// The shared maximums are beyond any Kubernetes node and only catch unit
// mistakes; a node-local driver's computes cannot outgrow this machine.
const (
	defaultMinMemory  = 64 << 20
	defaultMinCPU     = 100 // 0.1 CPU
	defaultMinStorage = 1 << 30
	localMinStorage   = 100 << 20
	sharedMaxMemory   = 4 << 40
	sharedMaxCPU      = 1024 * 1000
	defaultMaxStorage = 64 << 40
)

// resourceLimits are the checked ranges of a compute's memory, cpu and
// storage.
type resourceLimits struct {
	memory, cpu, storage quantity.Range
	images               []string // empty: any
}

// resolve fills l's zero fields with the defaults. nodeLocal says the
// driver runs computes on this machine, which then bounds memory and cpu.
func (l Limits) resolve(nodeLocal bool) resourceLimits {
	r := resourceLimits{
		memory:  quantity.Range{Min: or(l.MinMemory, defaultMinMemory), Max: l.MaxMemory, MaxIs: "the configured maximum"},
		cpu:     quantity.Range{Min: or(l.MinCPU, defaultMinCPU), Max: l.MaxCPU, Milli: true, MaxIs: "the configured maximum"},
		storage: quantity.Range{Min: or(l.MinStorage, defaultMinStorage), Max: or(l.MaxStorage, defaultMaxStorage)},
		images:  l.Images,
	}
	if r.memory.Max == 0 {
		r.memory.Max, r.memory.MaxIs = sharedMaxMemory, ""
		// Whole MiB, so that the message shows it as a quantity users write.
		if mem := machine.Memory() / (1 << 20) * (1 << 20); nodeLocal && mem > 0 {
			r.memory.Max, r.memory.MaxIs = mem, "this machine's memory"
		}
	}
	if nodeLocal && l.MinStorage == 0 {
		r.storage.Min = localMinStorage
	}
	if r.cpu.Max == 0 {
		r.cpu.Max, r.cpu.MaxIs = sharedMaxCPU, ""
		if nodeLocal {
			r.cpu.Max, r.cpu.MaxIs = int64(runtime.NumCPU())*1000, "this machine's CPUs"
		}
	}
	return r
}

func or(v, def int64) int64 {
	if v == 0 {
		return def
	}
	return v
}

// checkLen refuses a string field longer than limit bytes. It runs before
// any other check of the field, so that no error message echoes a huge
// value.
func checkLen(field, v string, limit int) error {
	if len(v) > limit {
		return invalid("%s must be at most %d bytes, got %d", field, limit, len(v))
	}
	return nil
}
