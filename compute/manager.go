// Package compute runs the compute lifecycle: it turns API calls, wakes from
// the proxy and suspends from the scheduler into compare-and-set transitions
// in the store and calls to a Driver.
package compute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/serverlessd/serverlessd/metrics"
	"github.com/serverlessd/serverlessd/store"
)

// Errors callers can match with errors.Is.
var (
	// ErrNoCompute means the project has no compute node yet.
	ErrNoCompute = errors.New("project has no compute")
	// ErrDestroying means the compute is being destroyed.
	ErrDestroying = errors.New("compute is being destroyed")
	// ErrOtherNode means the compute lives on another node's disk.
	ErrOtherNode = errors.New("compute belongs to another node")

	// errLostRace means a start lost its compare-and-set to another daemon.
	errLostRace = fmt.Errorf("another daemon changed the compute first: %w", store.ErrConflict)
)

// startTimeout bounds one start, independent of the caller that triggered it:
// a client that gives up must not abort a start other clients share.
const startTimeout = 2 * time.Minute

// Options configure a Manager.
type Options struct {
	Store  store.Store
	Driver Driver
	// Node is this daemon's node name; local computes belong to one node.
	Node   string
	Logger *slog.Logger
	// DefaultSpec fills the parts of a new compute's spec that are not given.
	DefaultSpec store.ComputeSpec
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// MemoryBudget bounds the memory of the computes this daemon runs at
	// once, in bytes: a start that does not fit first suspends the least
	// recently used idle computes, then fails with ErrNodeFull. 0: none.
	MemoryBudget int64
	// Quotas, when set, may refuse a start for its tenant's quotas.
	Quotas StartChecker
	// AfterSuspend, when set, is told of every compute a suspend stopped
	// cleanly (but for a restore), with its version as suspended and the
	// suspend's reason. It must return at once: it runs under the
	// compute's lock.
	AfterSuspend func(c store.Compute, reason string)
	// AfterProvision, when set, is told of every new compute once its
	// storage is provisioned from the template, before its first start.
	AfterProvision func(ctx context.Context, c store.Compute)
}

// Manager owns every compute's lifecycle in this daemon.
type Manager struct {
	st   store.Store
	drv  Driver
	node string
	log  *slog.Logger
	defs store.ComputeSpec
	met  *metrics.Metrics

	starts singleflight.Group

	mu       sync.Mutex
	locks    map[string]*sync.Mutex // per compute: one lifecycle action at a time
	warm     map[string]WakeResult  // project id -> running backend, the wake fast path
	checked  map[string]time.Time   // project id -> when its warm entry was last read from the store (shared drivers)
	shared   map[string]time.Time   // compute id -> last activity reported to the store (shared drivers)
	activity map[string]*Activity   // compute id -> live usage
	// Bytes of destroyed computes, so that TotalBytes never goes down.
	retiredIn, retiredOut int64

	detach Detacher // nil until SetDetacher

	budget   int64 // MemoryBudget
	reserved int64 // memory held for starts in progress
	quotas   StartChecker

	bindKey []byte // SetBindKey; nil: accounts get the roles' own hashes

	afterSuspend   func(store.Compute, string)
	afterProvision func(context.Context, store.Compute)
}

// Detacher moves the client sessions of a compute about to stop off their
// backend connections (the proxy), so that they survive the stop, and
// returns how many it moved.
type Detacher func(ctx context.Context, computeID string) int

// SetDetacher registers the proxy's Detach, called before every planned
// stop of a running compute. Set it before serving.
func (m *Manager) SetDetacher(d Detacher) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.detach = d
}

// detachSessions runs the Detacher, waiting at most detachWait for
// sessions in the middle of a command, and returns how many it detached.
func (m *Manager) detachSessions(ctx context.Context, c *store.Compute) int {
	m.mu.Lock()
	d := m.detach
	m.mu.Unlock()
	if d == nil {
		return 0
	}
	dctx, cancel := context.WithTimeout(ctx, detachWait)
	defer cancel()
	t0 := time.Now()
	n := d(dctx, c.ID)
	if n > 0 {
		m.log.Info("client sessions detached for the suspend", "compute", c.ID, "project", c.ProjectID,
			"sessions", n, "duration", time.Since(t0))
	}
	return n
}

// detachWait bounds how long a suspend waits for a session's running
// command before stopping the compute under it.
const detachWait = 5 * time.Second

// New returns a Manager and registers its crash handler with the driver.
func New(opts Options) *Manager {
	m := &Manager{
		st:       opts.Store,
		drv:      opts.Driver,
		node:     opts.Node,
		defs:     opts.DefaultSpec,
		met:      opts.Metrics,
		log:      opts.Logger.With("component", "compute"),
		locks:    map[string]*sync.Mutex{},
		warm:     map[string]WakeResult{},
		checked:  map[string]time.Time{},
		shared:   map[string]time.Time{},
		activity: map[string]*Activity{},
		budget:   opts.MemoryBudget,
		quotas:   opts.Quotas,

		afterSuspend:   opts.AfterSuspend,
		afterProvision: opts.AfterProvision,
	}
	m.drv.SetExitHandler(m.onExit)
	return m
}

// Driver returns the driver the manager runs computes with.
func (m *Manager) Driver() Driver { return m.drv }

// DefaultSpec is what a new compute's spec takes where it names nothing.
func (m *Manager) DefaultSpec() store.ComputeSpec { return m.defs }

// Wake returns the address of the project's running compute, starting it if
// it is suspended or failed. Concurrent callers share one start. A wake that
// arrives during a suspend waits for it to finish, then resumes.
func (m *Manager) Wake(ctx context.Context, projectID string) (WakeResult, error) {
	t0 := time.Now()
	res, ok, stale := m.warmEntry(projectID)
	if stale {
		ok = m.recheckWarm(ctx, res)
	}
	if ok {
		m.met.ObserveWake(projectID, false, time.Since(t0))
		return res, nil
	}
	res, err := m.wakeShared(ctx, projectID)
	if err == nil {
		m.met.ObserveWake(projectID, res.ColdStart, time.Since(t0))
	}
	return res, err
}

// Warm is Wake for a compute known to run, without waiting: ok is false
// when Wake would need to look at the store or start the compute. It
// lets a caller skip making a context with a deadline for the common
// case.
func (m *Manager) Warm(projectID string) (res WakeResult, ok bool) {
	t0 := time.Now()
	res, ok, stale := m.warmEntry(projectID)
	if !ok || stale {
		return WakeResult{}, false
	}
	m.met.ObserveWake(projectID, false, time.Since(t0))
	return res, true
}

// warmEntry looks the project's running compute up in memory. stale says
// that another daemon may have moved it since it was last checked.
func (m *Manager) warmEntry(projectID string) (res WakeResult, ok, stale bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	res, ok = m.warm[projectID]
	if !ok {
		return res, false, false
	}
	// A login is on its way to the backend: that is activity, so an idle
	// suspend deciding right now backs off (SuspendIfIdle).
	if a := m.activity[res.ComputeID]; a != nil {
		a.Touch()
	}
	return res, true, !m.drv.NodeLocal() && time.Since(m.checked[projectID]) > warmRecheck
}

// wakeShared runs the slow path once per project for all concurrent callers.
func (m *Manager) wakeShared(ctx context.Context, projectID string) (WakeResult, error) {
	ch := m.starts.DoChan(projectID, func() (any, error) {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), startTimeout)
		defer cancel()
		return m.wakeSlow(sctx, projectID)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return WakeResult{}, r.Err
		}
		return r.Val.(WakeResult), nil
	case <-ctx.Done():
		return WakeResult{}, ctx.Err()
	}
}

func (m *Manager) wakeSlow(ctx context.Context, projectID string) (WakeResult, error) {
	c, err := m.st.GetComputeByProject(ctx, projectID)
	if errors.Is(err, store.ErrNotFound) {
		return WakeResult{}, fmt.Errorf("project %s: %w: create one with `serverlessd compute create`", projectID, ErrNoCompute)
	}
	if err != nil {
		return WakeResult{}, fmt.Errorf("wake project %s: %w", projectID, err)
	}
	unlock := m.lock(c.ID)
	defer unlock()
	return m.ensureActive(ctx, c.ID, "wake")
}

// ensureActive brings a compute to active. The caller holds its lock.
func (m *Manager) ensureActive(ctx context.Context, computeID, reason string) (WakeResult, error) {
	for {
		c, err := m.st.GetCompute(ctx, computeID)
		if err != nil {
			return WakeResult{}, fmt.Errorf("wake compute %s: %w", computeID, err)
		}
		if err := m.checkNode(c); err != nil {
			return WakeResult{}, err
		}
		switch c.State {
		case store.StateActive:
			// Active but not warm here: another daemon started it (a
			// shared driver). Its address is good; a dead backend is
			// reported by the driver's exit handler, which marks it failed.
			m.setWarm(c)
			return m.resultOf(c, false), nil
		case store.StateSuspended, store.StateFailed, store.StateCreating:
			res, err := m.startInBudget(ctx, c, reason)
			if errors.Is(err, errLostRace) {
				continue // another daemon is starting it: wait for active
			}
			return res, err
		case store.StateDestroying:
			return WakeResult{}, fmt.Errorf("compute %s: %w", c.ID, ErrDestroying)
		default:
			// resuming or suspending by someone else: wait for it to settle.
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return WakeResult{}, fmt.Errorf("compute %s stayed %s: %w", c.ID, c.State, err)
			}
		}
	}
}

// isWarm reports whether this daemon holds c as running at its address.
func (m *Manager) isWarm(c *store.Compute) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.warm[c.ProjectID]
	return ok && w.ComputeID == c.ID && w.Address == c.Address
}

func (m *Manager) setWarm(c *store.Compute) {
	m.mu.Lock()
	m.warm[c.ProjectID] = m.resultOf(c, false)
	m.checked[c.ProjectID] = time.Now()
	m.mu.Unlock()
}

// ActiveComputes lists the computes this daemon runs, from memory: the
// scheduler's tick costs nothing per suspended project.
func (m *Manager) ActiveComputes() []WakeResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]WakeResult, 0, len(m.warm))
	for _, w := range m.warm {
		out = append(out, w)
	}
	return out
}

func (m *Manager) dropWarm(c *store.Compute) {
	m.mu.Lock()
	delete(m.warm, c.ProjectID)
	m.mu.Unlock()
}

func (m *Manager) resultOf(c *store.Compute, cold bool) WakeResult {
	res := WakeResult{Address: c.Address, ComputeID: c.ID, ProjectID: c.ProjectID, TenantID: c.TenantID,
		ColdStart: cold, memory: MemoryOf(c.Spec)}
	if cl, ok := m.drv.(clientLimiter); ok {
		res.MaxClients = cl.MaxClients(c.Spec)
	}
	return res
}

// clientLimiter is a driver that knows how many client connections a
// compute of a spec takes, below its mariadbd's max_connections.
type clientLimiter interface {
	MaxClients(spec store.ComputeSpec) int
}

// lock takes the compute's lifecycle lock and returns its release.
func (m *Manager) lock(computeID string) func() {
	m.mu.Lock()
	l, ok := m.locks[computeID]
	if !ok {
		l = &sync.Mutex{}
		m.locks[computeID] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// TotalBytes adds up the bytes proxied to and from every compute.
func (m *Manager) TotalBytes() (in, out int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	in, out = m.retiredIn, m.retiredOut
	for _, a := range m.activity {
		i, o := a.Bytes()
		in, out = in+i, out+o
	}
	return in, out
}

// Activity returns the live usage counters of a compute, creating them on
// first use.
func (m *Manager) Activity(computeID string) *Activity {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.activity[computeID]
	if !ok {
		a = &Activity{}
		m.activity[computeID] = a
	}
	return a
}

// checkNode refuses computes whose storage is on another node's disk.
func (m *Manager) checkNode(c *store.Compute) error {
	if c.Node != "" && c.Node != m.node && m.nodeBound(c) {
		return fmt.Errorf("compute %s: %w %q (this node is %q): connect through that node's serverlessd",
			c.ID, ErrOtherNode, c.Node, m.node)
	}
	return nil
}

// nodeBound reports whether c lives on the disk of the node it records. This
// daemon's driver answers for the computes it recorded; a compute recorded
// by another driver (the daemon's driver was changed) is bound when it
// carries a node, since Create records one only for node-local drivers.
func (m *Manager) nodeBound(c *store.Compute) bool {
	if c.Driver == m.drv.Name() {
		return m.drv.NodeLocal()
	}
	return true
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
