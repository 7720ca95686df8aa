// Package scheduler is the idle-suspend loop: every interval it suspends the
// computes that have had no proxied traffic for their project's idle
// timeout, and meters usage.
package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/metrics"
	"github.com/serverlessd/serverlessd/store"
)

// Options configure a Scheduler.
type Options struct {
	Store    store.Store
	Manager  *compute.Manager
	Interval time.Duration
	// StorageInterval is how often computes that had writes are measured
	// against their storage limit (default 2s).
	StorageInterval time.Duration
	Metrics         *metrics.Metrics
	Logger          *slog.Logger
	// Spent, when set, reports whether a tenant has used up a quota that
	// keeps its computes down (compute-seconds this month):
	// such a compute suspends at its next idle point, one interval without
	// commands, whatever its idle timeout.
	Spent func(ctx context.Context, tenantID string) bool
	// Leading, when set, reports whether this daemon suspends idle
	// computes now: of several daemons sharing computes, only the leader.
	Leading func() bool
}

// Scheduler suspends idle computes.
type Scheduler struct {
	spent    func(ctx context.Context, projectID string) bool
	leading  func() bool
	st       store.Store
	mgr      *compute.Manager
	interval time.Duration
	storage  time.Duration
	met      *metrics.Metrics
	log      *slog.Logger
	// postponedAt remembers which computes were found busy, so the log
	// says once per busy stretch, not once per tick.
	postponed map[string]bool
}

// New returns a scheduler; Run starts it.
func New(opts Options) *Scheduler {
	return &Scheduler{
		st: opts.Store, mgr: opts.Manager, interval: opts.Interval, storage: opts.StorageInterval, met: opts.Metrics,
		log: opts.Logger.With("component", "scheduler"), postponed: map[string]bool{}, spent: opts.Spent,
		leading: opts.Leading,
	}
}

// Run runs the idle loop and the storage loop until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	go s.watchStorage(ctx)
	return s.runIdle(ctx)
}

// watchStorage measures, every storage interval, the computes that got
// client traffic (or are read-only) against their storage limits. It is
// a loop of its own: a slow idle suspend must not let a compute write
// past its limit meanwhile.
func (s *Scheduler) watchStorage(ctx context.Context) {
	every := s.storage
	if every <= 0 {
		every = 2 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.CheckStorage(ctx)
		}
	}
}

// CheckStorage runs one pass of the storage loop. Each compute is
// measured on a goroutine of its own, one measure at a time per compute,
// so that one whose tenant holds up the daemon's statements delays no
// other.
func (s *Scheduler) CheckStorage(ctx context.Context) {
	for _, w := range s.mgr.ActiveComputes() {
		a := s.mgr.Activity(w.ComputeID)
		if ctx.Err() != nil || !a.StorageMayHaveGrown() || !a.StartStorageCheck() {
			continue
		}
		go func() {
			defer a.EndStorageCheck()
			if _, err := s.mgr.CheckStorage(ctx, w.ComputeID); err != nil {
				s.log.Warn("storage check failed", "compute", w.ComputeID, "project", w.ProjectID, "err", err)
			}
		}()
	}
}

// runIdle ticks every interval until ctx ends. When a compute's idle deadline
// falls before the next tick, it also wakes at that deadline, so computes
// suspend close to idle_timeout rather than up to an interval later.
func (s *Scheduler) runIdle(ctx context.Context) error {
	s.log.Info("idle scheduler running", "interval", s.interval.String())
	timer := time.NewTimer(s.interval)
	defer timer.Stop()
	nextTick := time.Now().Add(s.interval)
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-timer.C:
			deadline := s.suspendIdle(ctx, now)
			if !now.Before(nextTick) {
				s.meter(ctx, now)
				nextTick = now.Add(s.interval)
			}
			wake := nextTick
			if !deadline.IsZero() && deadline.Before(wake) {
				wake = deadline
			}
			timer.Reset(max(time.Until(wake), 5*time.Millisecond))
		}
	}
}

// Tick runs one full pass: idle suspends, then metering.
func (s *Scheduler) Tick(ctx context.Context, now time.Time) {
	s.suspendIdle(ctx, now)
	s.meter(ctx, now)
}

// suspendIdle suspends the idle computes and returns the earliest idle
// deadline among the others (zero if none). It looks at the computes the
// manager lists as running (see RunningComputes), and only while this
// daemon leads (Options.Leading).
func (s *Scheduler) suspendIdle(ctx context.Context, now time.Time) time.Time {
	if s.leading != nil && !s.leading() {
		return time.Time{}
	}
	running, err := s.mgr.RunningComputes(ctx)
	if err != nil {
		s.log.Warn("cannot list running computes; no idle suspends this tick", "err", err)
		return time.Time{}
	}
	var earliest time.Time
	for _, r := range running {
		if ctx.Err() != nil {
			return time.Time{}
		}
		since, deadline, ok := s.idle(ctx, r, now)
		if ok {
			s.suspend(ctx, r.WakeResult, since)
		} else if !deadline.IsZero() && (earliest.IsZero() || deadline.Before(earliest)) {
			earliest = deadline
		}
	}
	return earliest
}

// meter advances the usage heartbeat, samples every active compute's
// storage and traffic, and copies users changed in SQL into the store.
func (s *Scheduler) meter(ctx context.Context, now time.Time) {
	if err := s.mgr.Heartbeat(ctx, now); err != nil {
		s.log.Warn("usage heartbeat failed", "err", err)
	}
	for _, w := range s.mgr.ActiveComputes() {
		if err := s.mgr.SampleActive(ctx, &store.Compute{ID: w.ComputeID, ProjectID: w.ProjectID, TenantID: w.TenantID}); err != nil {
			s.log.Warn("usage sample failed", "compute", w.ComputeID, "project", w.ProjectID, "err", err)
		}
		// Only a compute that got client traffic can have new SQL users.
		if s.mgr.Activity(w.ComputeID).ClientSentSinceLastCall() {
			if err := s.mgr.PullRoles(ctx, w.ComputeID); err != nil {
				s.log.Warn("copying SQL roles failed", "compute", w.ComputeID, "project", w.ProjectID, "err", err)
			}
		}
	}
}

// idle reports whether a compute has gone without commands for its
// project's idle timeout with no session pinned to it, and may be
// suspended with its open connections (which then survive the suspend).
// It returns the last activity it saw (for SuspendIfIdle to check against)
// and, when not idle yet, the time it will be.
func (s *Scheduler) idle(ctx context.Context, r compute.Running, now time.Time) (last, deadline time.Time, ok bool) {
	w := r.WakeResult
	p, err := s.st.GetProject(ctx, w.ProjectID)
	if err != nil {
		s.log.Warn("cannot read project config; not suspending", "project", w.ProjectID, "err", err)
		return
	}
	timeout := time.Duration(p.Config.IdleTimeout) * time.Second
	if s.spent != nil && s.spent(ctx, w.TenantID) && (timeout == 0 || timeout > s.interval) {
		timeout = s.interval
	}
	if timeout == 0 {
		return // 0 means never suspend
	}
	a := s.mgr.Activity(w.ComputeID)
	last = a.LastActive()
	if r.LastActive.After(last) {
		last = r.LastActive // another daemon's sessions
	}
	if now.Sub(last) < timeout {
		return last, last.Add(timeout), false
	}

	return last, time.Time{}, p.Config.SuspendsWithOpenConnections() || a.Conns() == 0
}

// suspend suspends an idle compute unless client work is in progress, in
// which case it is postponed to the next tick. A compute whose idle check
// fails (a tenant may lock the daemon's account out) is suspended on its
// traffic alone: otherwise a tenant could keep it up forever. The next
// start re-creates the daemon's account.
func (s *Scheduler) suspend(ctx context.Context, w compute.WakeResult, idleSince time.Time) {
	log := s.log.With("compute", w.ComputeID, "project", w.ProjectID)
	busy, err := s.mgr.Busy(ctx, w.ComputeID)
	if err != nil {
		log.Warn("cannot check the compute for running work; suspending on its idle traffic alone", "err", err)
		busy = ""
	}
	if n := s.mgr.Activity(w.ComputeID).Pinned(); n > 0 && busy == "" {
		// Sessions hold state that cannot move (LOCK TABLES, GET_LOCK, a
		// temporary table, a cursor): the proxy knows, MariaDB's lists
		// do not all show it.
		busy = fmt.Sprintf("%d client sessions hold state that cannot move", n)
	}
	if busy != "" {
		if !s.postponed[w.ComputeID] {
			log.Info("idle, but client work is in progress; suspend postponed", "work", busy)
		}
		s.postponed[w.ComputeID] = true
		s.met.Postponed()
		return
	}
	delete(s.postponed, w.ComputeID)
	if _, err := s.mgr.SuspendIfIdle(ctx, w.ComputeID, idleSince); err != nil {
		log.Error("idle suspend failed", "err", err)
	}
}
