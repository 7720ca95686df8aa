package local

import (
	"fmt"

	"github.com/serverlessd/serverlessd/compute/local/cgroup"
	"github.com/serverlessd/serverlessd/quantity"
	"github.com/serverlessd/serverlessd/store"
)

// cgroupPath is where a compute's cgroup lives in each hierarchy.
func cgroupPath(id string) string { return "/serverlessd/" + id }

// sizing is what a compute's spec makes of its mariadbd: memory and
// storage in bytes (storage 0: no limit), and its cgroup's limits.
type sizing struct {
	mem, storage int64
	cgroup       cgroup.Limits
}

// sizingFor reads a compute's spec.
func sizingFor(spec store.ComputeSpec) (sizing, error) {
	mem, err := memoryOf(spec.Resources.Memory)
	if err != nil {
		return sizing{}, err
	}
	sz := sizing{mem: mem}
	if spec.Storage != "" {
		if sz.storage, err = quantity.Units(spec.Storage); err != nil {
			return sizing{}, fmt.Errorf("storage: %w", err)
		}
	}
	sz.cgroup, err = limitsFor(spec, mem)
	return sz, err
}

// limitsFor sizes a compute's cgroup from its spec: memory is the spec's
// budget (mariadbd's settings are sized to fit inside it, see sizeMemory),
// CPU the spec's cpu (no limit when empty), and tasks mariadbd's
// connection threads plus room for its own background threads.
func limitsFor(spec store.ComputeSpec, mem int64) (cgroup.Limits, error) {
	lim := cgroup.Limits{
		MemoryBytes: max(mem, minMemory),
		Pids:        sizeMemory(mem).maxConnections + 256,
	}
	if spec.Resources.CPU != "" {
		milli, err := quantity.Milli(spec.Resources.CPU)
		if err != nil {
			return lim, fmt.Errorf("resources.cpu: %w", err)
		}
		lim.CPUMilli = milli
	}
	return lim, nil
}

// confine puts a just-started mariadbd in its compute's cgroup. Without
// cgroups (the daemon is not root, or none are mounted) it does nothing:
// New has logged that limits are not enforced.
func (d *Driver) confine(id string, pid int, lim cgroup.Limits) (*cgroup.Group, error) {
	if !d.cgroups {
		return nil, nil
	}
	g, err := cgroup.Open(cgroupPath(id), lim)
	if err != nil {
		return nil, fmt.Errorf("cgroup for compute %s: %w", id, err)
	}
	if err := g.Add(pid); err != nil {
		return nil, fmt.Errorf("cgroup for compute %s: add mariadbd (pid %d): %w", id, pid, err)
	}
	return g, nil
}

// release removes an exited compute's cgroup.
func (d *Driver) release(id string, g *cgroup.Group) {
	if g == nil {
		return
	}
	if err := g.Delete(); err != nil {
		d.log.Warn("cannot remove the compute's cgroup", "compute", id, "path", g.Path(), "err", err)
	}
}

// daemonReserve is how many of a compute's connections are kept from its
// clients for the daemon's own sessions (idle and storage checks, role
// changes, kills), on top of the one extra connection MariaDB keeps for
// CONNECTION ADMIN: a client still in its handshake takes that one too.
const daemonReserve = 4

// MaxClients is how many client connections a compute of spec takes: its
// mariadbd's max_connections less the daemon's reserve.
func (d *Driver) MaxClients(spec store.ComputeSpec) int {
	mem, err := memoryOf(spec.Resources.Memory)
	if err != nil {
		return 0
	}
	return int(sizeMemory(mem).maxConnections) - daemonReserve
}
