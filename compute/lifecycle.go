package compute

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// Reasons recorded on operations: why an action ran.
const (
	ReasonAPI       = "api"
	ReasonWake      = "wake"
	ReasonIdle      = "idle"
	ReasonShutdown  = "shutdown"
	ReasonReconcile = "reconcile"
	ReasonCrash     = "crash"
	ReasonRestore   = "restore"
	ReasonBranch    = "branch"
)

// Create records a new compute for the project, provisions its storage and
// starts it. It fails with store.ErrAlreadyExists if the project has one.
func (m *Manager) Create(ctx context.Context, projectID string, spec store.ComputeSpec) (*store.Compute, *store.Operation, error) {
	provision := m.drv.Provision
	if m.afterProvision != nil {
		provision = func(ctx context.Context, c *store.Compute) error {
			if err := m.drv.Provision(ctx, c); err != nil {
				return err
			}
			m.afterProvision(ctx, *c)
			return nil
		}
	}
	return m.create(ctx, projectID, spec, provision, nil)
}

// create is Create with the step that provisions the compute's storage,
// and one run at its first start before roles are applied (may be nil).
func (m *Manager) create(ctx context.Context, projectID string, spec store.ComputeSpec,
	provision func(context.Context, *store.Compute) error, first func(*store.Compute, string) error) (*store.Compute, *store.Operation, error) {
	if spec.Image == "" {
		spec.Image = m.defs.Image
	}
	if spec.Resources.Memory == "" {
		spec.Resources.Memory = m.defs.Resources.Memory
	}
	if spec.Resources.CPU == "" {
		spec.Resources.CPU = m.defs.Resources.CPU
	}
	if spec.Storage == "" {
		spec.Storage = m.defs.Storage
	}
	now := store.Now()
	c := &store.Compute{
		ID: store.NewID("cmp"), ProjectID: projectID, State: store.StateCreating,
		Driver: m.drv.Name(), Spec: spec, CreatedAt: now, UpdatedAt: now,
	}
	if m.drv.NodeLocal() {
		// Only a node-local driver's computes record a node: checkNode
		// relies on it. A shared driver's are reachable from every node.
		c.Node = m.node
	}
	if err := m.st.CreateCompute(ctx, c); err != nil {
		return nil, nil, fmt.Errorf("create compute for project %s: %w", projectID, err)
	}
	unlock := m.lock(c.ID)
	defer unlock()
	op, err := m.runOp(ctx, c, store.ActionCreate, ReasonAPI, func() error { return provision(ctx, c) })
	if err != nil {
		m.markFailed(ctx, c, err)
		return c, op, err
	}
	var qe *QuotaError
	var firstStep func(string) error
	if first != nil {
		firstStep = func(addr string) error { return first(c, addr) }
	}
	if _, err := m.startInBudgetWith(ctx, c, ReasonAPI, firstStep); errors.Is(err, ErrNodeFull) || errors.As(err, &qe) {
		// Provisioned but with no room to run: a whole compute, suspended,
		// that the next wake starts once there is room.
		c.State = store.StateSuspended
		if uerr := m.st.UpdateCompute(ctx, c, store.StateCreating); uerr != nil {
			return c, op, errors.Join(err, uerr)
		}
		return c, op, err
	} else if err != nil {
		return c, op, err
	}
	c, err = m.st.GetCompute(ctx, c.ID)
	return c, op, err
}

// startInBudget starts c once the node's memory budget has room for it.
func (m *Manager) startInBudget(ctx context.Context, c *store.Compute, reason string) (WakeResult, error) {
	return m.startInBudgetWith(ctx, c, reason, nil)
}

// startInBudgetWith is startInBudget with a step run once the backend
// runs, before roles are applied (see startWith).
func (m *Manager) startInBudgetWith(ctx context.Context, c *store.Compute, reason string, first func(addr string) error) (WakeResult, error) {
	if err := m.checkStart(ctx, c); err != nil {
		return WakeResult{}, err
	}
	release, err := m.reserve(ctx, c)
	if err != nil {
		return WakeResult{}, err
	}
	defer release()
	return m.startWith(ctx, c, reason, first)
}

// Resume starts a suspended or failed compute and returns it with the start
// operation. Resuming an active compute is a no-op.
func (m *Manager) Resume(ctx context.Context, computeID string) (*store.Compute, error) {
	unlock := m.lock(computeID)
	defer unlock()
	if _, err := m.ensureActive(ctx, computeID, ReasonAPI); err != nil {
		return nil, err
	}
	return m.st.GetCompute(ctx, computeID)
}

// start runs the compute and marks it active. The caller holds its lock; c
// is the compute as last read from the store.
func (m *Manager) start(ctx context.Context, c *store.Compute, reason string) (WakeResult, error) {
	return m.startWith(ctx, c, reason, nil)
}

// startWith is start with a step, when first is not nil, run as soon as
// the backend runs: before roles are applied and before any client can
// reach it (a restore's binlog replay).
func (m *Manager) startWith(ctx context.Context, c *store.Compute, reason string, first func(addr string) error) (WakeResult, error) {
	from := c.State
	c.State, c.Error = store.StateResuming, ""
	if err := m.st.UpdateCompute(ctx, c, from); err != nil {
		// A lost compare-and-set means another actor (another daemon)
		// moved the compute: it never drives the driver.
		if errors.Is(err, store.ErrConflict) {
			return WakeResult{}, fmt.Errorf("start compute %s: %w", c.ID, errLostRace)
		}
		return WakeResult{}, fmt.Errorf("start compute %s: %w", c.ID, err)
	}
	var addr string
	_, err := m.runOp(ctx, c, store.ActionStart, reason, func() error {
		var err error
		if addr, err = m.drv.Start(ctx, c); err != nil {
			return err
		}
		if first != nil {
			if err := first(addr); err != nil {
				return err
			}
		}
		return m.syncRoles(ctx, c, addr)
	})
	if err != nil {
		m.markFailed(ctx, c, err)
		return WakeResult{}, fmt.Errorf("start compute %s of project %s: %w", c.ID, c.ProjectID, err)
	}
	now := store.Now()
	c.State, c.Address, c.StartedAt, c.LastActive = store.StateActive, addr, now, now
	if err := m.st.UpdateCompute(ctx, c, store.StateResuming); err != nil && !m.takeOver(ctx, c, err) {
		return WakeResult{}, fmt.Errorf("mark compute %s active: %w", c.ID, err)
	}
	a := m.Activity(c.ID)
	a.Touch()
	// The data may not be what the last measure saw (a restore replaces
	// it without a client byte): the first usage sample measures again.
	a.measureNext()
	m.openInterval(ctx, c)
	m.setWarm(c)
	m.checkStorageSoon(c.ID)
	return m.resultOf(c, true), nil
}

// Suspend stops an active compute gracefully and marks it suspended.
// Suspending a suspended compute is a no-op.
func (m *Manager) Suspend(ctx context.Context, computeID, reason string) (*store.Compute, *store.Operation, error) {
	unlock := m.lock(computeID)
	defer unlock()
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil {
		return nil, nil, fmt.Errorf("suspend compute %s: %w", computeID, err)
	}
	if c.State == store.StateSuspended {
		return c, nil, nil
	}
	if c.State == store.StateDestroying {
		return c, nil, fmt.Errorf("suspend compute %s: %w", c.ID, ErrDestroying)
	}
	if err := m.checkNode(c); err != nil {
		return c, nil, err
	}
	return m.suspendLocked(ctx, c, reason)
}

// SuspendIfIdle suspends an active compute for the idle scheduler, unless
// there was activity after idleSince (the scheduler's last look). It checks
// again after new wakes have been turned to the slow path, so that a login
// that got the address a moment before cannot be cut by the suspend.
func (m *Manager) SuspendIfIdle(ctx context.Context, computeID string, idleSince time.Time) (bool, error) {
	return m.SuspendIfIdleFor(ctx, computeID, idleSince, ReasonIdle)
}

// SuspendIfIdleFor is SuspendIfIdle with the suspend's reason.
func (m *Manager) SuspendIfIdleFor(ctx context.Context, computeID string, idleSince time.Time, reason string) (bool, error) {
	unlock := m.lock(computeID)
	defer unlock()
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil || c.State != store.StateActive {
		return false, err
	}
	// With a shared driver the compute may run for another daemon's
	// sessions only: the activity they reported is in the store.
	warm := m.isWarm(c)
	if !warm && (m.drv.NodeLocal() || c.LastActive.After(idleSince)) {
		return false, nil
	}
	m.dropWarm(c)
	if m.Activity(c.ID).LastActive().After(idleSince) {
		if warm {
			m.setWarm(c)
		}
		return false, nil
	}
	_, _, err = m.suspendLocked(ctx, c, reason)
	return err == nil, err
}

func (m *Manager) suspendLocked(ctx context.Context, c *store.Compute, reason string) (*store.Compute, *store.Operation, error) {
	// Another daemon's compute (a shared driver) runs just the same.
	wasRunning := c.State == store.StateActive && (m.isWarm(c) || !m.drv.NodeLocal())
	from := c.State
	// New wakes take the slow path and queue on the compute's lock from
	// before the store says suspending: nobody who sees that state can be
	// answered with the address from memory.
	m.dropWarm(c)
	c.State = store.StateSuspending
	if err := m.st.UpdateCompute(ctx, c, from); err != nil {
		c.State = from
		if wasRunning {
			m.setWarm(c)
		}
		return c, nil, fmt.Errorf("suspend compute %s: %w", c.ID, err)
	}
	if wasRunning {
		// Users created or dropped in SQL since the last pull must be in
		// the store before the compute goes away.
		if err := m.pullRoles(ctx, c); err != nil {
			m.log.Warn("could not copy SQL roles before suspending", "compute", c.ID, "project", c.ProjectID, "err", err)
		}
	}
	detached := 0
	if from == store.StateActive {
		detached = m.detachSessions(ctx, c)
	}
	op, err := m.runOpWith(ctx, c, &store.Operation{Action: store.ActionSuspend, Reason: reason, DetachedSessions: detached},
		func() error { return m.drv.Stop(ctx, c) })
	if err != nil {
		m.markFailed(ctx, c, err)
		return c, op, err
	}
	now := store.Now()
	m.clearStorage(c.ID)
	m.closeInterval(ctx, c, now)
	if err := m.Sample(ctx, c); err != nil {
		m.log.Warn("usage sample at suspend failed", "compute", c.ID, "project", c.ProjectID, "err", err)
	}
	c.State, c.Address, c.SuspendedAt = store.StateSuspended, "", now
	if la := m.Activity(c.ID).LastActive(); !la.IsZero() {
		c.LastActive = la.UTC().Truncate(time.Microsecond)
	}
	if err := m.st.UpdateCompute(ctx, c, store.StateSuspending); err != nil && !m.settledAs(ctx, c, err, store.StateSuspended) {
		return c, op, fmt.Errorf("mark compute %s suspended: %w", c.ID, err)
	}
	m.met.Suspended(reason)
	if m.afterSuspend != nil && reason != ReasonRestore {
		m.afterSuspend(*c, reason) // must not block: the compute's lock is held
	}
	return c, op, nil
}

// Destroy stops the compute, removes its storage and deletes it from the store.
func (m *Manager) Destroy(ctx context.Context, computeID, reason string) (*store.Operation, error) {
	unlock := m.lock(computeID)
	defer unlock()
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil {
		return nil, fmt.Errorf("destroy compute %s: %w", computeID, err)
	}
	if err := m.checkNode(c); err != nil {
		return nil, err
	}
	from, wasWarm := c.State, m.isWarm(c)
	m.dropWarm(c) // before the store says destroying, as in suspendLocked
	c.State = store.StateDestroying
	if err := m.st.UpdateCompute(ctx, c, from); err != nil {
		if wasWarm {
			m.setWarm(c)
		}
		return nil, fmt.Errorf("destroy compute %s: %w", c.ID, err)
	}
	m.closeInterval(ctx, c, store.Now())
	op, err := m.runOp(ctx, c, store.ActionDestroy, reason, func() error { return m.drv.Destroy(ctx, c) })
	if err != nil {
		m.markFailed(ctx, c, err)
		return op, err
	}
	if err := m.st.DeleteCompute(ctx, c.ID); err != nil {
		return op, fmt.Errorf("delete compute %s: %w", c.ID, err)
	}
	m.mu.Lock()
	if a, ok := m.activity[c.ID]; ok {
		in, out := a.Bytes()
		m.retiredIn, m.retiredOut = m.retiredIn+in, m.retiredOut+out
		delete(m.activity, c.ID)
	}
	m.mu.Unlock()
	return op, nil
}

// markFailed records a failure on the compute so the API shows it and the
// next wake retries. It is best effort: the original error is what matters.
func (m *Manager) markFailed(ctx context.Context, c *store.Compute, cause error) {
	m.dropWarm(c)
	m.clearStorage(c.ID)
	m.closeInterval(ctx, c, store.Now())
	for range 3 {
		from := c.State
		c.State, c.Error, c.Address = store.StateFailed, cause.Error(), ""
		err := m.st.UpdateCompute(ctx, c, from)
		if err == nil || !errors.Is(err, store.ErrConflict) {
			if err != nil {
				m.log.Error("could not mark compute failed", "compute", c.ID, "project", c.ProjectID, "err", err)
			}
			return
		}
		fresh, gerr := m.st.GetCompute(ctx, c.ID)
		if gerr != nil {
			return
		}
		*c = *fresh
	}
}

// onExit is the driver's crash callback: a backend exited on its own.
func (m *Manager) onExit(computeID string, exitErr error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	unlock := m.lock(computeID)
	defer unlock()
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil {
		return
	}
	// Whatever the store says, this backend is gone: no wake may be
	// answered with its address from memory.
	m.dropWarm(c)
	if c.State != store.StateActive {
		return
	}
	m.log.Error("compute exited unexpectedly; the next wake restarts it",
		"compute", c.ID, "project", c.ProjectID, "err", exitErr)
	m.markFailed(ctx, c, fmt.Errorf("backend exited unexpectedly: %w", exitErr))
}

// runOp records fn as an operation on c, logs it with its duration and
// returns the finished operation.
func (m *Manager) runOp(ctx context.Context, c *store.Compute, action, reason string, fn func() error) (*store.Operation, error) {
	return m.runOpWith(ctx, c, &store.Operation{Action: action, Reason: reason}, fn)
}

// runOpWith is runOp for an operation that carries more than its action
// and reason.
func (m *Manager) runOpWith(ctx context.Context, c *store.Compute, op *store.Operation, fn func() error) (*store.Operation, error) {
	action, reason := op.Action, op.Reason
	op.ID, op.ProjectID, op.ComputeID = store.NewID("op"), c.ProjectID, c.ID
	op.Status, op.StartedAt = store.OpRunning, store.Now()
	if err := m.st.CreateOperation(ctx, op); err != nil {
		return nil, fmt.Errorf("record %s operation on compute %s: %w", action, c.ID, err)
	}
	err := fn()
	op.FinishedAt = store.Now()
	op.DurationMS = float64(op.FinishedAt.Sub(op.StartedAt).Microseconds()) / 1000
	op.Status = store.OpSucceeded
	log := m.log.With("compute", c.ID, "project", c.ProjectID, "action", action, "reason", reason, "duration_ms", op.DurationMS)
	if err != nil {
		op.Status, op.Error = store.OpFailed, err.Error()
		m.met.OperationFailed(action)
		log.Error("compute operation failed", "err", err)
	} else {
		log.Info("compute operation done")
	}
	// The operation must be finished even if the caller's context ended.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if ferr := m.st.FinishOperation(fctx, op); ferr != nil {
		m.log.Error("could not record operation result", "op", op.ID, "err", ferr)
	}
	return op, err
}
