package compute

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/serverlessd/serverlessd/store"
)

// stoppedMidOperation is the error of an operation that a daemon left
// running: it was killed (-9, OOM, power loss) between starting the action
// and recording its outcome.
const stoppedMidOperation = "the daemon stopped before the operation finished, so its outcome is unknown; " +
	"the compute's state shows where it stands"

// Reconcile squares the store with what really runs, once at start-up:
// FinishStaleOperations, then SettleRunning.
func (m *Manager) Reconcile(ctx context.Context) error {
	if err := m.FinishStaleOperations(ctx); err != nil {
		return err
	}
	return m.SettleRunning(ctx)
}

// FinishStaleOperations finishes as failed the operations a killed daemon
// left running. It reads and writes only the store, so it is quick. It must
// run before this daemon records any operation of its own: every running
// one it finds was started by a daemon before this one. With a shared
// driver other daemons may be running some, so only those older than any
// operation runs are failed, and the leader calls it again now and then.
func (m *Manager) FinishStaleOperations(ctx context.Context) error {
	_, known, err := m.computesByID(ctx)
	if err != nil {
		return err
	}
	n, err := m.failStuckOperations(ctx, known, store.Now())
	if err != nil {
		return fmt.Errorf("reconcile: finish operations left running: %w", err)
	}
	if n > 0 {
		m.log.Warn("finished operations left running by a stopped daemon", "failed_operations", n)
	}
	return nil
}

// SettleRunning squares the computes' states with the backends that really
// run: backends that still run (left by a daemon that was killed) are
// adopted when the store says active or resuming and stopped cleanly
// otherwise; computes the store thinks are running but are not go to
// suspended or failed. It may wait on backends (a Pod still starting), so
// a daemon may serve while it runs: a compute that this daemon woke or
// changed in the meantime is left as it is.
func (m *Manager) SettleRunning(ctx context.Context) error {
	t0 := time.Now()
	running, err := m.drv.Running(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: list running computes: %w", err)
	}
	live := map[string]Instance{}
	for _, in := range running {
		live[in.ComputeID] = in
	}
	computes, known, err := m.computesByID(ctx)
	if err != nil {
		return err
	}
	var adopted, stopped, fixed int
	for i := range computes {
		c := &computes[i]
		if m.checkNode(c) != nil {
			continue
		}
		in, isLive := live[c.ID]
		a, s, f := m.reconcileOne(ctx, c, in, isLive)
		adopted, stopped, fixed = adopted+a, stopped+s, fixed+f
	}
	for id, in := range live {
		if known[id] == nil {
			// A backend for a compute the store does not know: stop it
			// cleanly, but keep its data for a human to look at.
			m.log.Warn("stopping a running backend that the store does not know", "compute", id, "pid", in.PID)
			if err := m.drv.Stop(ctx, &store.Compute{ID: id}); err != nil {
				m.log.Error("could not stop unknown backend", "compute", id, "err", err)
			}
			stopped++
		}
	}
	if err := m.closeOrphanIntervals(ctx, live); err != nil {
		return fmt.Errorf("reconcile: close usage intervals: %w", err)
	}
	m.log.Info("reconciled computes with running backends", "computes", len(computes), "running", len(running),
		"adopted", adopted, "stopped", stopped, "fixed", fixed, "duration_ms", time.Since(t0).Milliseconds())
	return nil
}

// failStuckOperations finishes as failed, at now, the running operations of
// the computes this daemon reconciles (checkNode: with a local driver this
// node's, with a shared one all) and of computes that no longer exist, which
// no daemon will ever finish. It returns how many it finished.
//
// With a shared driver another daemon may be running one of them right now:
// its own FinishOperation, which writes unconditionally, then replaces the
// failure with the real outcome.
func (m *Manager) failStuckOperations(ctx context.Context, computes map[string]*store.Compute, now time.Time) (int, error) {
	ops, err := m.st.RunningOperations(ctx)
	if err != nil {
		return 0, err
	}
	seen, total := map[string]bool{}, 0
	if !m.drv.NodeLocal() {
		// Other daemons may be running the young ones right now.
		for _, op := range ops {
			if now.Sub(op.StartedAt) < staleAfter {
				seen[op.ComputeID] = true
			}
		}
	}
	for _, op := range ops {
		c := computes[op.ComputeID]
		if seen[op.ComputeID] || c != nil && m.checkNode(c) != nil {
			continue
		}
		seen[op.ComputeID] = true
		n, err := m.st.FailRunningOperations(ctx, op.ComputeID, stoppedMidOperation, now)
		if err != nil {
			return total, err
		}
		total += n
		m.log.Warn("operations left running by a stopped daemon marked failed",
			"compute", op.ComputeID, "project", op.ProjectID, "operations", n)
	}
	return total, nil
}

// reconcileOne settles one compute; it returns (adopted, stopped, fixed) counts.
func (m *Manager) reconcileOne(ctx context.Context, listed *store.Compute, in Instance, isLive bool) (int, int, int) {
	unlock := m.lock(listed.ID)
	defer unlock()
	// Re-read under the lock: a wake, a suspend or an API call of this
	// daemon may have moved the compute since it was listed, and the
	// driver's view predates that.
	c, err := m.st.GetCompute(ctx, listed.ID)
	if err != nil || c.State != listed.State || c.Address != listed.Address || m.isWarm(c) || m.drivenElsewhere(c) {
		return 0, 0, 0
	}
	log := m.log.With("compute", c.ID, "project", c.ProjectID, "state", c.State)
	switch {
	case isLive && (c.State == store.StateActive || c.State == store.StateResuming):
		from := c.State
		c.State, c.Address = store.StateActive, in.Address
		if err := m.st.UpdateCompute(ctx, c, from); err != nil {
			log.Error("could not adopt running compute", "err", err)
			return 0, 0, 0
		}
		m.Activity(c.ID).Touch()
		m.openInterval(ctx, c)
		m.setWarm(c)
		log.Info("adopted running compute", "pid", in.PID, "address", in.Address)
		return 1, 0, 0
	case isLive:
		// Running, but the store wants it stopped (suspending, suspended,
		// failed, creating, destroying): stop it cleanly first.
		if _, _, err := m.suspendLocked(ctx, c, ReasonReconcile); err != nil {
			log.Error("could not stop stray backend", "err", err)
		}
		return 0, 1, 0
	case c.State == store.StateActive || c.State == store.StateResuming || c.State == store.StateSuspending:
		// Not running although the store says so: its process died while
		// no daemon watched. Data is safe (InnoDB recovers at next start).
		from := c.State
		c.State, c.Address = store.StateSuspended, ""
		if from == store.StateActive {
			c.State, c.Error = store.StateFailed, "backend was not running when the daemon started; the next wake restarts it"
		}
		if err := m.st.UpdateCompute(ctx, c, from); err != nil {
			log.Error("could not fix compute state", "err", err)
			return 0, 0, 0
		}
		log.Warn("compute was not running; state fixed", "new_state", c.State)
		return 0, 0, 1
	}
	return 0, 0, 0
}

// computesByID lists every compute, and indexes them by id.
func (m *Manager) computesByID(ctx context.Context) ([]store.Compute, map[string]*store.Compute, error) {
	computes, err := m.allComputes(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("reconcile: list computes: %w", err)
	}
	known := make(map[string]*store.Compute, len(computes))
	for i := range computes {
		known[computes[i].ID] = &computes[i]
	}
	return computes, known, nil
}

// drivenElsewhere reports whether another daemon may be creating or
// destroying c right now (a shared driver, lately): reconciling would
// stop it half-way. A start or a stop another daemon runs is reconciled
// all the same, because a daemon killed in the middle of one must not
// leave its compute waiting: the daemon that finishes it takes the
// outcome over (takeOver, settledAs).
func (m *Manager) drivenElsewhere(c *store.Compute) bool {
	switch c.State {
	case store.StateCreating, store.StateDestroying:
		return !m.drv.NodeLocal() && time.Since(c.UpdatedAt) < staleAfter
	}
	return false
}

// allComputes pages through every compute in the store.
func (m *Manager) allComputes(ctx context.Context) ([]store.Compute, error) {
	return allPages(func(p store.Page) ([]store.Compute, error) { return m.st.ListComputes(ctx, p) })
}

// allPages reads a listing of computes to its end, a page at a time.
func allPages(list func(store.Page) ([]store.Compute, error)) ([]store.Compute, error) {
	var all []store.Compute
	page := store.Page{Limit: 500}
	for {
		batch, err := list(page)
		if err != nil {
			return nil, err
		}
		all = append(all, batch...)
		if len(batch) < page.Limit {
			return all, nil
		}
		page.After = batch[len(batch)-1].ID
	}
}

// SuspendAll suspends every active compute of this node, a few at a time.
// The daemon calls it on SIGTERM so that no mariadbd outlives it uncleanly.
func (m *Manager) SuspendAll(ctx context.Context, reason string) error {
	if !m.drv.NodeLocal() {
		// Shared drivers' computes outlive one daemon: a rolling update of
		// the daemon must not stop every database.
		return nil
	}
	computes, err := m.allComputes(ctx)
	if err != nil {
		return fmt.Errorf("suspend all: list computes: %w", err)
	}
	var g errgroup.Group
	g.SetLimit(4)
	for _, c := range computes {
		if c.State != store.StateActive && c.State != store.StateResuming || m.checkNode(&c) != nil {
			continue
		}
		g.Go(func() error {
			_, _, err := m.Suspend(ctx, c.ID, reason)
			return err
		})
	}
	return g.Wait()
}
