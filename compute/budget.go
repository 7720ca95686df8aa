package compute

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/serverlessd/serverlessd/quantity"
	"github.com/serverlessd/serverlessd/store"
)

// ErrNodeFull means a compute does not fit in the node's memory budget,
// even after suspending every idle compute that could make room.
var ErrNodeFull = errors.New("the node is full")

// QuotaError is a start refused by a tenant quota. Its message names the
// quota and how to raise it, and is safe to show the client.
type QuotaError struct{ Msg string }

func (e *QuotaError) Error() string { return e.Msg }

// StartChecker may refuse a compute's start for its tenant's quotas,
// before any room is made for it.
type StartChecker interface {
	// CheckStart gets the compute (with its TenantID) and the memory
	// (bytes) of the tenant's other computes this daemon runs; it returns
	// a *QuotaError to refuse.
	CheckStart(ctx context.Context, c *store.Compute, tenantRunning int64) error
}

// checkStart runs the StartChecker, if any.
func (m *Manager) checkStart(ctx context.Context, c *store.Compute) error {
	if m.quotas == nil {
		return nil
	}
	var running int64
	m.mu.Lock()
	for _, w := range m.warm {
		if w.TenantID == c.TenantID && w.ComputeID != c.ID {
			running += w.memory
		}
	}
	m.mu.Unlock()
	return m.quotas.CheckStart(ctx, c, running)
}

// ReasonMemory is the operation reason of a suspend that makes room for
// another compute's start.
const ReasonMemory = "memory"

// idleGrace is how long a compute must have had no traffic to be
// suspended for another's room: a client that just sent something is
// not idle.
const idleGrace = time.Second

// MemoryOf is the memory a compute's spec asks for, in bytes; 0 when it
// names none or cannot be read.
func MemoryOf(spec store.ComputeSpec) int64 {
	if spec.Resources.Memory == "" {
		return 0
	}
	n, err := quantity.Units(spec.Resources.Memory)
	if err != nil {
		return 0
	}
	return n
}

// reserve holds room in the node's memory budget for c's start, suspending
// the least recently used idle computes while it does not fit. The caller
// holds c's lock and calls release once c is warm or failed to start.
func (m *Manager) reserve(ctx context.Context, c *store.Compute) (release func(), err error) {
	need := MemoryOf(c.Spec)
	if m.budget <= 0 || need <= 0 {
		return func() {}, nil
	}
	if need > m.budget {
		return nil, fmt.Errorf("compute %s asks %s, more than the node's whole memory budget of %d bytes: %w",
			c.ID, c.Spec.Resources.Memory, m.budget, ErrNodeFull)
	}
	tried := map[string]bool{}
	for {
		victim, ok := m.tryReserve(c, need, tried)
		if ok {
			return func() { m.unreserve(need) }, nil
		}
		if victim == "" {
			return nil, fmt.Errorf("compute %s needs %s and the node's other computes are busy: %w",
				c.ID, c.Spec.Resources.Memory, ErrNodeFull)
		}
		tried[victim] = true
		t0 := time.Now()
		suspended, err := m.SuspendIfIdleFor(ctx, victim, time.Now().Add(-idleGrace), ReasonMemory)
		if err != nil {
			m.log.Warn("could not suspend an idle compute to make room", "compute", victim, "for", c.ID, "err", err)
			continue
		}
		if suspended {
			m.log.Info("suspended the least recently used idle compute to make room", "compute", victim,
				"for", c.ID, "project", c.ProjectID, "duration", time.Since(t0))
		}
	}
}

// tryReserve reserves need if it fits; otherwise it returns the least
// recently used idle warm compute not yet tried ("" when none is left).
func (m *Manager) tryReserve(c *store.Compute, need int64, tried map[string]bool) (victim string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	used := m.reserved
	type cand struct {
		id   string
		last time.Time
	}
	var cands []cand
	for _, w := range m.warm {
		used += w.memory
		a := m.activity[w.ComputeID]
		if w.ComputeID == c.ID || tried[w.ComputeID] || a == nil || a.Pinned() > 0 {
			continue
		}
		if last := a.LastActive(); time.Since(last) >= idleGrace {
			cands = append(cands, cand{w.ComputeID, last})
		}
	}
	if used+need <= m.budget {
		m.reserved += need
		return "", true
	}
	if len(cands) == 0 {
		return "", false
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].last.Before(cands[j].last) })
	return cands[0].id, false
}

func (m *Manager) unreserve(n int64) {
	m.mu.Lock()
	m.reserved -= n
	m.mu.Unlock()
}

// MemoryInUse is the memory of the computes this daemon runs or is
// starting, in bytes, and its budget (0: none).
func (m *Manager) MemoryInUse() (used, budget int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	used = m.reserved
	for _, w := range m.warm {
		used += w.memory
	}
	return used, m.budget
}
