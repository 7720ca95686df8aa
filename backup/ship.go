package backup

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// tick is how often the loop looks for work (rotations due, retries due),
// at most: a quarter of MaxDelay when that is shorter.
const tick = time.Second

// loop ships running computes' binary logs every MaxDelay and retries
// failed jobs when their backoff ends.
func (s *Service) loop() {
	defer s.wg.Done()
	t := time.NewTicker(min(tick, s.MaxDelay/4))
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

// rotateDue starts, for each running compute last rotated MaxDelay/2 ago,
// the rotation and shipping of its binary log, at most rotators at once
// (a compute writing fast ships big files; the others go on meanwhile),
// and a hot backup of one whose newest snapshot is Interval old.
func (s *Service) rotateDue() {
	if s.Computes == nil || (s.Leading != nil && !s.Leading()) {
		return
	}
	for _, w := range s.runningComputes() {
		c := &store.Compute{ID: w.ComputeID, ProjectID: w.ProjectID}
		if _, ok := s.DataDir(c); !ok && !s.remote(c) {
			continue
		}
		st := s.stateOf(c)
		s.mu.Lock()
		// Every MaxDelay/2: a commit just after a rotation waits at most
		// that, plus a tick, plus the upload, for the next one to ship it.
		due := !st.rotating && time.Since(st.rotated) >= s.MaxDelay/2 && !st.retryAt.After(time.Now())
		if due && s.ctx.Err() == nil && len(s.rotators) < cap(s.rotators) {
			st.rotating = true
			s.rotators <- struct{}{}
			s.wg.Add(1)
			go s.rotateOne(st, *c)
		}
		s.mu.Unlock()
	}
}

// runningComputes lists the computes that run, at most every quarter of
// MaxDelay (5 s at the most): with computes shared by daemons, a listing
// reads the store.
func (s *Service) runningComputes() []compute.Running {
	if time.Since(s.listed) < min(s.MaxDelay/4, 5*time.Second) {
		return s.running
	}
	rs, err := s.Computes.RunningComputes(s.ctx)
	if err != nil {
		s.Log.Warn("listing running computes to ship their binary logs failed; retrying", "component", "backup", "err", err)
		return s.running
	}
	s.running, s.listed = rs, time.Now()
	return rs
}

// rotators bounds the rotations that run at once.
const rotators = 4

// rotateOne rotates and ships one compute's binary log, then checks
// whether it is due a hot backup.
func (s *Service) rotateOne(st *state, c store.Compute) {
	defer s.wg.Done()
	err := s.rotate(s.ctx, st, &c)
	gone := false
	if err != nil {
		var runs bool
		runs, gone = s.active(c.ID)
		if !runs {
			// It suspended meanwhile, and the suspend ships its binary
			// log; or it was deleted, after its data was kept.
			err = nil
		}
	}
	s.mu.Lock()
	st.rotating = false
	<-s.rotators
	s.mu.Unlock()
	if gone {
		s.forget(c.ID)
		return
	}
	s.settle(st, err)
	if err == nil && s.hotDue(s.ctx, st, &c) {
		s.startHot(st, c)
	}
}

// active reports whether the store says the compute runs, and whether
// the store no longer has it. The listing of running computes may be a
// few seconds older than a delete.
func (s *Service) active(computeID string) (runs, gone bool) {
	c, err := s.Store.GetCompute(s.ctx, computeID)
	if errors.Is(err, store.ErrNotFound) {
		return false, true
	}
	return err != nil || c.State == store.StateActive, false // unknown: assume it runs
}

// rotate closes c's binary log, ships the closed files and purges them
// from the compute.
func (s *Service) rotate(ctx context.Context, st *state, c *store.Compute) error {
	if !st.shipMu.TryLock() {
		return nil // a suspend's binary logs are being shipped: rotate at the next tick
	}
	defer st.shipMu.Unlock()
	s.mu.Lock()
	since := st.pos
	s.mu.Unlock()
	// The statements have a deadline; the upload, as long as it takes.
	actx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	names, pos, err := s.Computes.RotateBinlog(actx, c.ID, since)
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
	ship := s.ship
	if s.remote(c) {
		ship = s.shipRemote
	}
	if err := ship(ctx, st, c, closed); errors.Is(err, errNoBase) {
		return nil // kept on the compute until its first snapshot
	} else if err != nil {
		return err
	}
	actx, cancel = context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	return s.Computes.PurgeBinlogs(actx, c.ID, names[len(names)-1])
}

// adminTimeout bounds the statements that rotate and purge a binary log.
const adminTimeout = 30 * time.Second

// errNoDatadir means the compute's datadir is gone (a lost disk).
var errNoDatadir = errors.New("the compute's datadir does not exist")

// Backup ships everything a stopped compute holds and takes its snapshot
// now, for a restore that keeps the current data first. It fails if the
// compute is not suspended.
func (s *Service) Backup(ctx context.Context, c *store.Compute) (*Manifest, error) {
	if s.remote(c) {
		return s.backupRemote(ctx, c)
	}
	dir, ok := s.DataDir(c)
	if !ok {
		return nil, ErrNoData
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, errNoDatadir
	}
	st := s.stateOf(c)
	st.shipMu.Lock()
	defer st.shipMu.Unlock()
	st.snapMu.Lock()
	defer st.snapMu.Unlock()
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

// Recover ships, in the background, the binary logs that suspended
// computes hold and a daemon that stopped abruptly may not have shipped.
// The target is asked only about computes that hold any.
func (s *Service) Recover(st store.Store) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		shipped := 0
		page := store.Page{Limit: 200}
		for s.ctx.Err() == nil {
			cs, err := st.ListComputes(s.ctx, page)
			if err != nil {
				s.Log.Warn("listing computes to ship their binary logs failed", "component", "backup", "err", err)
				return
			}
			for i := range cs {
				shipped += s.recoverOne(&cs[i])
			}
			if len(cs) < page.Limit {
				break
			}
			page.After = cs[len(cs)-1].ID
		}
		if shipped > 0 {
			s.Log.Info("binary logs left unshipped by an earlier daemon shipped", "component", "backup", "files", shipped)
		}
	}()
}

// recoverOne ships a suspended compute's binary logs not shipped yet and
// returns how many it shipped.
func (s *Service) recoverOne(c *store.Compute) int {
	dir, ok := s.DataDir(c)
	if !ok || c.State != store.StateSuspended {
		return 0
	}
	names, err := IndexedBinlogs(dir)
	if err != nil || len(names) == 0 {
		return 0
	}
	st := s.stateOf(c)
	st.shipMu.Lock()
	defer st.shipMu.Unlock()
	_, err = s.loadShipped(s.ctx, st, c, dir)
	before := len(st.shipped)
	if err == nil {
		err = s.ship(s.ctx, st, c, names)
	}
	if err != nil {
		s.log(c).Warn("shipping the binary logs of a suspended compute failed; its next suspend ships them", "err", err)
		return 0
	}
	return len(st.shipped) - before
}
