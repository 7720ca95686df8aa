package compute

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// With a shared driver (kubernetes) several daemons serve the same
// computes: any of them wakes a compute for its own logins, and one at a
// time, the leader, suspends idle computes and reconciles. They agree
// through the store: each reports the activity it sees (ShareActivity),
// and none trusts a compute's address from memory for longer than
// warmRecheck, since another may have suspended it.
const (
	// warmRecheck bounds how long a daemon answers a wake from memory
	// without reading the compute from the store.
	warmRecheck = time.Second
	// ShareEvery is how often, at most, each daemon reports the activity
	// it saw: the leader sees another daemon's sessions this late, which
	// idle timeouts of minutes do not notice. A shorter scheduler interval
	// shortens it (RunShareActivity).
	ShareEvery = 5 * time.Second
	// staleAfter is longer than any operation runs (a start is bounded by
	// startTimeout, a stop by the stop timeout and the driver's own
	// bounds): an operation or a transitional state older than this has no
	// daemon behind it.
	staleAfter = 10 * time.Minute
)

// recheckWarm reads a warm compute from the store: it reports whether the
// entry still holds, and drops it otherwise.
func (m *Manager) recheckWarm(ctx context.Context, res WakeResult) bool {
	c, err := m.st.GetCompute(ctx, res.ComputeID)
	if err == nil && c.State == store.StateActive && c.Address == res.Address {
		m.mu.Lock()
		m.checked[res.ProjectID] = time.Now()
		m.mu.Unlock()
		return true
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		// The store is unreachable: the address is the best there is.
		return true
	}
	m.dropWarmIf(res)
	return false
}

// dropWarmIf drops the project's warm entry if it is still res.
func (m *Manager) dropWarmIf(res WakeResult) {
	m.mu.Lock()
	if w, ok := m.warm[res.ProjectID]; ok && w.ComputeID == res.ComputeID && w.Address == res.Address {
		delete(m.warm, res.ProjectID)
	}
	m.mu.Unlock()
}

// ShareActivity reports to the store the computes this daemon saw activity
// on since its last report, and those its sessions pin (state that cannot
// move: a suspend by another daemon would lose it, so they count as busy
// now), so that the daemon that suspends idle computes counts every
// daemon's sessions.
func (m *Manager) ShareActivity(ctx context.Context, now time.Time) error {
	var ids []string
	m.mu.Lock()
	for _, w := range m.warm {
		a := m.activity[w.ComputeID]
		if a == nil {
			continue
		}
		last := a.LastActive()
		if a.Pinned() > 0 || last.After(m.shared[w.ComputeID]) {
			ids = append(ids, w.ComputeID)
			m.shared[w.ComputeID] = last
		}
	}
	m.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	if err := m.st.TouchComputes(ctx, ids, now.UTC()); err != nil {
		return fmt.Errorf("report activity of %d computes: %w", len(ids), err)
	}
	return nil
}

// RunShareActivity reports activity every ShareEvery, or every scheduler
// interval if that is shorter, until ctx ends.
func (m *Manager) RunShareActivity(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(min(ShareEvery, max(interval, 100*time.Millisecond)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := m.ShareActivity(ctx, now); err != nil {
				m.log.Warn("could not share activity with the other daemons", "err", err)
			}
		}
	}
}

// Running is an active compute as the idle scheduler sees it.
type Running struct {
	WakeResult
	// LastActive is the last activity any daemon reported to the store.
	LastActive time.Time
}

// RunningComputes lists the computes the idle scheduler looks after: with
// a node-local driver the ones this daemon runs (from memory: suspended
// projects cost nothing), with a shared one every active compute, whoever
// started it.
func (m *Manager) RunningComputes(ctx context.Context) ([]Running, error) {
	if m.drv.NodeLocal() {
		active := m.ActiveComputes()
		out := make([]Running, len(active))
		for i, w := range active {
			out[i] = Running{WakeResult: w}
		}
		return out, nil
	}
	active, err := allPages(func(p store.Page) ([]store.Compute, error) {
		return m.st.ListComputesInState(ctx, store.StateActive, p)
	})
	if err != nil {
		return nil, err
	}
	out := make([]Running, len(active))
	for i := range active {
		c := &active[i]
		out[i] = Running{WakeResult: m.resultOf(c, false), LastActive: c.LastActive}
	}
	return out, nil
}

// takeOver settles a start whose final compare-and-set (resuming to
// active) lost: with a shared driver, the leader's reconciliation may have
// seen the compute while this daemon started it, and adopted it (active at
// the same address) or reset it (suspended, failed). The backend runs, so
// it is marked active at its address. It reports whether c is now active.
func (m *Manager) takeOver(ctx context.Context, c *store.Compute, casErr error) bool {
	if !errors.Is(casErr, store.ErrConflict) {
		return false
	}
	fresh, err := m.st.GetCompute(ctx, c.ID)
	if err != nil {
		return false
	}
	switch fresh.State {
	case store.StateActive:
		if fresh.Address != c.Address {
			return false
		}
	case store.StateSuspended, store.StateFailed:
		from := fresh.State
		fresh.State, fresh.Error, fresh.Address = store.StateActive, "", c.Address
		fresh.StartedAt, fresh.LastActive = c.StartedAt, c.LastActive
		if m.st.UpdateCompute(ctx, fresh, from) != nil {
			return false
		}
		m.log.Info("compute was reconciled while it started; marked active", "compute", c.ID, "project", c.ProjectID, "was", from)
	default:
		return false
	}
	*c = *fresh
	return true
}

// settledAs reports whether a lost compare-and-set left the compute in the
// state this daemon wanted anyway (another daemon's reconciliation got
// there first), and then takes the stored compute.
func (m *Manager) settledAs(ctx context.Context, c *store.Compute, casErr error, want store.ComputeState) bool {
	if !errors.Is(casErr, store.ErrConflict) {
		return false
	}
	fresh, err := m.st.GetCompute(ctx, c.ID)
	if err != nil || fresh.State != want {
		return false
	}
	*c = *fresh
	return true
}
