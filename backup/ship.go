package backup

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// tick is how often the loop looks for work: rotations due, retries due.
const tick = time.Second

// loop ships running computes' binary logs every MaxDelay and retries
// failed jobs when their backoff ends.
func (s *Service) loop() {
	defer s.wg.Done()
	t := time.NewTicker(min(tick, s.MaxDelay))
	defer t.Stop()
	pruned := time.Now().Add(firstPrune - pruneEvery)
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.retryDue()
		s.rotateDue()
		if time.Since(pruned) >= pruneEvery {
			s.prune()
			pruned = time.Now()
		}
	}
}

// Backups older than the retention are pruned every pruneEvery, the first
// time firstPrune after the start.
const (
	pruneEvery = time.Hour
	firstPrune = time.Minute
)

// prune deletes the backups no restore within the retention needs.
func (s *Service) prune() {
	log := s.Log.With("component", "backup")
	t0 := time.Now()
	st, err := Prune(s.ctx, s.Target, t0, s.Retention)
	if err != nil {
		log.Warn("pruning old backups failed; it is tried again in an hour", "err", err)
		return
	}
	log.Info("old backups pruned", "retention", s.Retention, "snapshots", st.Snapshots, "binlogs", st.Binlogs,
		"objects", st.Objects, "duration", time.Since(t0))
}

// retryDue restarts the failed jobs whose backoff ended.
func (s *Service) retryDue() {
	now := time.Now()
	var due []*state
	s.mu.Lock()
	for _, st := range s.computes {
		if st.failures > 0 && !st.running && now.After(st.retryAt) && (len(st.pending) > 0 || st.snapshot) {
			due = append(due, st)
		}
	}
	s.mu.Unlock()
	for _, st := range due {
		s.kick(st)
	}
}

// rotateDue rotates and ships the binary log of each running compute last
// rotated MaxDelay ago, one compute at a time, and starts a hot backup of
// one whose newest snapshot is Interval old.
func (s *Service) rotateDue() {
	if s.Computes == nil {
		return
	}
	for _, w := range s.Computes.ActiveComputes() {
		c := &store.Compute{ID: w.ComputeID, ProjectID: w.ProjectID}
		if _, ok := s.DataDir(c); !ok {
			continue
		}
		st := s.stateOf(c)
		s.mu.Lock()
		due := time.Since(st.rotated) >= s.MaxDelay && !st.retryAt.After(time.Now())
		s.mu.Unlock()
		if !due || s.ctx.Err() != nil {
			continue
		}
		err := s.rotate(s.ctx, st, c)
		if err != nil && !s.active(c.ID) {
			err = nil // it suspended meanwhile: the suspend ships its binary log
		}
		s.settle(st, err)
		if err == nil && s.hotDue(s.ctx, st, c) {
			s.startHot(st, *c)
		}
	}
}

// active reports whether the store says the compute runs.
func (s *Service) active(computeID string) bool {
	c, err := s.Store.GetCompute(s.ctx, computeID)
	return err != nil || c.State == store.StateActive // unknown: assume it runs
}

// rotate closes c's binary log, ships the closed files and purges them
// from the compute.
func (s *Service) rotate(ctx context.Context, st *state, c *store.Compute) error {
	if !st.lock.TryLock() {
		return nil // a snapshot is being stored: rotate at the next tick
	}
	defer st.lock.Unlock()
	s.mu.Lock()
	since := st.pos
	s.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, s.MaxDelay)
	defer cancel()
	names, pos, err := s.Computes.RotateBinlog(rctx, c.ID, since)
	if err != nil || len(names) == 0 {
		return err
	}
	s.mu.Lock()
	st.rotated, st.pos = time.Now(), pos
	s.mu.Unlock()
	closed := names[:len(names)-1]
	if len(closed) == 0 {
		return nil
	}
	if err := s.ship(rctx, st, c, closed); err != nil {
		return err
	}
	return s.Computes.PurgeBinlogs(rctx, c.ID, names[len(names)-1])
}

// errNoDatadir means the compute's datadir is gone (a lost disk).
var errNoDatadir = errors.New("the compute's datadir does not exist")

// Backup ships everything a stopped compute holds and takes its snapshot
// now, for a restore that keeps the current data first. It fails if the
// compute is not suspended.
func (s *Service) Backup(ctx context.Context, c *store.Compute) (*Manifest, error) {
	dir, ok := s.DataDir(c)
	if !ok {
		return nil, ErrNoData
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, errNoDatadir
	}
	st := s.stateOf(c)
	st.lock.Lock()
	defer st.lock.Unlock()
	names, err := IndexedBinlogs(dir)
	if err != nil {
		return nil, err
	}
	if err := s.ship(ctx, st, c, names); err != nil {
		return nil, err
	}
	st.prev = nil // save a manifest even if nothing changed: the restore names it
	if err := s.snapshot(ctx, st, c, false); err != nil {
		return nil, err
	}
	s.mu.Lock()
	st.pending, st.snapshot = nil, false
	s.mu.Unlock()
	return st.prev, nil
}
