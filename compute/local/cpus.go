package local

import (
	"slices"
	"sync"
)

// cpuPlacer gives each compute with a CPU limit cores of its own: ceil(cpu)
// of the CPUs the daemon may use, the least used ones first and, among
// those, the highest (CPU 0 takes the most interrupts and the daemon's
// own work). The cgroup's CFS quota bounds how much CPU time a compute
// gets, but not where it runs: without a placement a compute that burns
// its whole quota runs its threads on every core in bursts, and a quiet
// tenant's query waits behind them for a time slice.
type cpuPlacer struct {
	mu     sync.Mutex
	cpus   []int            // the CPUs the daemon may use
	load   map[int]int      // computes placed per CPU
	placed map[string][]int // by compute id
}

func newCPUPlacer(cpus []int) *cpuPlacer {
	return &cpuPlacer{cpus: cpus, load: map[int]int{}, placed: map[string][]int{}}
}

// place picks the CPUs of a compute with a limit of milli thousandths of
// a CPU; nil means it runs anywhere (no limit, or one as large as the
// machine).
func (p *cpuPlacer) place(id string, milli int64) []int {
	k := int((milli + 999) / 1000)
	if milli <= 0 || k >= len(p.cpus) {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseLocked(id)
	order := slices.Clone(p.cpus)
	slices.SortStableFunc(order, func(a, b int) int {
		if d := p.load[a] - p.load[b]; d != 0 {
			return d
		}
		return b - a // the highest first
	})
	chosen := order[:k]
	slices.Sort(chosen)
	for _, c := range chosen {
		p.load[c]++
	}
	p.placed[id] = chosen
	return chosen
}

// release frees a compute's CPUs.
func (p *cpuPlacer) release(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseLocked(id)
}

func (p *cpuPlacer) releaseLocked(id string) {
	for _, c := range p.placed[id] {
		p.load[c]--
	}
	delete(p.placed, id)
}
