package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// DefaultMaxDelay is how long a committed transaction may wait before its
// binary log is shipped, by default.
const DefaultMaxDelay = 60 * time.Second

// DefaultRetention is how far back restores reach, by default.
const DefaultRetention = 7 * 24 * time.Hour

// DefaultInterval is the longest a running compute goes without a
// snapshot, by default.
const DefaultInterval = 24 * time.Hour

// Computes is the compute manager, as the service uses it.
type Computes interface {
	Restore(ctx context.Context, computeID string, steps compute.RestoreSteps) (*store.Operation, error)
	// RunningComputes lists the computes that run: this daemon's (local),
	// or every daemon's, from the store (shared).
	RunningComputes(ctx context.Context) ([]compute.Running, error)
	// RotateBinlog closes the binary log unless nothing was written since
	// since, and returns the files on the compute (the newest, still
	// written, last) and the position now.
	RotateBinlog(ctx context.Context, computeID string, since compute.BinlogPos) ([]string, compute.BinlogPos, error)
	PurgeBinlogs(ctx context.Context, computeID, name string) error
	// AdminAccess returns a running compute's address and the daemon's
	// credentials on it.
	AdminAccess(ctx context.Context, computeID string) (string, compute.Credentials, error)
	// WhileStopped runs fn on the compute, suspended first if it runs.
	WhileStopped(ctx context.Context, computeID string, fn func(c *store.Compute) error) error
}

// Service keeps a node's computes backed up: each compute's binary log is
// shipped within MaxDelay while it runs and at every suspend, and its
// datadir is snapshotted after every clean suspend that changed it.
//
// A snapshot reads the datadir in place, not a copy: a wake during the
// upload makes it worthless (mariadbd writes the files being read), so it
// is abandoned and taken again at the next suspend. A copy at suspend would
// cost every suspend a full copy where reflinks are not available, and
// suspends are frequent; an abandoned upload costs nothing but the next
// one, and the binary logs cover the time in between.
type Service struct {
	Target Target
	// Store tells whether the compute woke during an upload.
	Store store.Store
	// DataDir is a compute's datadir, and false for computes whose driver
	// keeps none on this node.
	DataDir func(c *store.Compute) (string, bool)
	// Computes rotates running computes' binary logs and restores; nil
	// ships binary logs at suspends only, and cannot restore.
	Computes Computes
	// Staging returns an empty folder that the driver can move in as a
	// compute's datadir.
	Staging func(c *store.Compute) (string, error)
	// Leading, when set, reports whether this daemon leads the daemons
	// that share the computes: only the leader rotates and ships running
	// computes' binary logs, so that two never purge what the other ships.
	Leading func() bool
	// Agent, when set, backs up and restores the computes that keep no
	// datadir on this node, where their volumes are mounted: binary logs
	// and a snapshot after each suspend, and restores in place.
	Agent RunAgent
	// MaxDelay bounds how long a commit waits to be shipped (DefaultMaxDelay).
	MaxDelay time.Duration
	Log      *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics

	// Interval is the longest a running compute goes without a snapshot
	// (DefaultInterval): one that never suspends gets a hot backup.
	Interval time.Duration
	// Retention is how far back restores reach (DefaultRetention): older
	// backups are pruned every hour.
	Retention time.Duration

	mu       sync.Mutex
	computes map[string]*state // by compute id
	template *Manifest         // the last new compute's first snapshot
	hotBusy  bool              // a hot backup runs (one at a time)
	rotators chan struct{}     // one per rotation under way
	// running and listed: the computes that run, as last listed (by the
	// loop alone).
	running []compute.Running
	listed  time.Time
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

// state is what the service knows of one compute. shipMu serializes what
// ships and purges its binary logs (and guards shipped); snapMu what takes
// its snapshots (and guards prev). Two locks, so that a long snapshot
// upload never holds back the binary log of a compute that woke.
type state struct {
	shipMu, snapMu sync.Mutex
	c              store.Compute
	prev           *Manifest // last snapshot saved by this daemon
	// lastSnap is the newest snapshot's time, once snapsKnown.
	lastSnap   time.Time
	snapsKnown bool
	shipped    map[string]bool // binary logs stored, of timeline
	// timeline is the one shipped holds.
	timeline string
	pos      compute.BinlogPos // at the last rotation
	rotated  time.Time
	// pending: files to ship after a suspend; snapshot: one is due.
	pending  []string
	snapshot bool
	failures int
	retryAt  time.Time
	running  bool // a job is under way
	rotating bool // a rotation is under way
	gone     bool // the compute is being destroyed: no job touches it
}

// Start readies the service and starts shipping binary logs; Stop cancels
// its uploads (they are retried at the next start) and waits.
func (s *Service) Start() {
	if s.MaxDelay <= 0 {
		s.MaxDelay = DefaultMaxDelay
	}
	if s.Interval <= 0 {
		s.Interval = DefaultInterval
	}
	if s.Retention <= 0 {
		s.Retention = DefaultRetention
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.computes = map[string]*state{}
	s.rotators = make(chan struct{}, rotators)
	s.wg.Add(1)
	go s.loop()
}

// Drain waits for the jobs under way, at most until ctx ends.
func (s *Service) Drain(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		for {
			s.mu.Lock()
			busy := false
			for _, st := range s.computes {
				busy = busy || st.running
			}
			s.mu.Unlock()
			if !busy || ctx.Err() != nil {
				close(done)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	<-done
}

// Stop cancels the uploads in progress and waits for them.
func (s *Service) Stop() {
	s.cancel()
	s.wg.Wait()
}

func (s *Service) stateOf(c *store.Compute) *state {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.computes[c.ID]
	if !ok {
		st = &state{c: *c}
		s.computes[c.ID] = st
	}
	return st
}

func (s *Service) log(c *store.Compute) *slog.Logger {
	return s.Log.With("component", "backup", "compute", c.ID, "project", c.ProjectID)
}

// AfterSuspend is compute.Options.AfterSuspend: it notes the binary logs
// the stopped compute holds (all closed now) and queues their shipping and
// a snapshot (none at shutdown: Drain waits for the binary logs only). It
// returns at once: it runs under the compute's lock.
func (s *Service) AfterSuspend(c store.Compute, reason string) {
	dir, ok := s.DataDir(&c)
	if !ok {
		// A restore or a branch keeps the data itself, right after.
		if reason != compute.ReasonRestore && reason != compute.ReasonBranch {
			s.afterRemoteSuspend(c)
		}
		return
	}
	names, err := IndexedBinlogs(dir)
	if err != nil {
		s.log(&c).Warn("could not read the binary log index; its files are shipped at the next suspend", "err", err)
	}
	st := s.stateOf(&c)
	s.mu.Lock()
	st.c = c
	st.pending = append(st.pending, names...)
	st.snapshot = st.snapshot || reason != compute.ReasonShutdown
	st.failures, st.retryAt = 0, time.Time{}
	s.mu.Unlock()
	s.kick(st)
}

// kick runs st's due work in the background unless a job runs already;
// that job then runs again for what was queued meanwhile.
func (s *Service) kick(st *state) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.running || s.ctx.Err() != nil {
		return
	}
	st.running = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			err := s.catchUp(s.ctx, st)
			// A suspend that came during the job queued more: run again.
			s.mu.Lock()
			again := err == nil && s.ctx.Err() == nil && !st.gone && (len(st.pending) > 0 || st.snapshot)
			st.running = again
			s.mu.Unlock()
			if !again {
				s.settle(st, err)
				return
			}
		}
	}()
}

// settle records how a job ended: a failure is retried with backoff, and
// the service counts as behind until it succeeds.
func (s *Service) settle(st *state, err error) {
	s.mu.Lock()
	if err == nil {
		st.failures, st.retryAt = 0, time.Time{}
	} else {
		st.failures++
		st.retryAt = time.Now().Add(backoff(st.failures, s.MaxDelay))
	}
	behind := 0
	for _, x := range s.computes {
		if x.failures > 0 {
			behind++
		}
	}
	c, wait, gone := st.c, time.Until(st.retryAt), st.gone
	s.mu.Unlock()
	s.Metrics.setBehind(behind)
	if err != nil && s.ctx.Err() == nil && !gone {
		s.Metrics.failed()
		s.log(&c).Warn("backup upload failed: backups are behind; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
	}
}

// backoff doubles from a second up to max.
func backoff(failures int, max time.Duration) time.Duration {
	d := time.Second << min(failures-1, 16)
	return min(d, max)
}

// catchUp ships the binary logs a suspend left and takes the snapshot due.
func (s *Service) catchUp(ctx context.Context, st *state) error {
	s.mu.Lock()
	c, names, snap, gone := st.c, st.pending, st.snapshot, st.gone
	s.mu.Unlock()
	if gone {
		return nil
	}
	if s.remote(&c) {
		return s.catchUpRemote(ctx, st, &c)
	}
	st.shipMu.Lock()
	err := s.ship(ctx, st, &c, names)
	st.shipMu.Unlock()
	if err != nil {
		return err
	}
	s.mu.Lock()
	// Others may have changed the list meanwhile: drop just what shipped.
	st.pending = slices.DeleteFunc(slices.Clone(st.pending), func(n string) bool { return slices.Contains(names, n) })
	s.mu.Unlock()
	if !snap {
		return nil
	}
	st.snapMu.Lock()
	defer st.snapMu.Unlock()
	if err := s.snapshot(ctx, st, &c, true); err != nil {
		return err
	}
	s.mu.Lock()
	if st.c.Version == c.Version {
		st.snapshot = false
	}
	s.mu.Unlock()
	return nil
}

// ship stores the closed binary logs names of c's datadir that are not
// stored yet. The caller holds st.shipMu.
func (s *Service) ship(ctx context.Context, st *state, c *store.Compute, names []string) error {
	if len(names) == 0 {
		return nil
	}
	dir, _ := s.DataDir(c)
	prefix, err := s.loadShipped(ctx, st, c, dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		if st.shipped[name] {
			continue
		}
		b, err := ShipBinlog(ctx, s.Target, prefix, filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // purged after it was shipped by another path
		}
		if err != nil {
			return err
		}
		st.shipped[name] = true
		s.log(c).Debug("binary log shipped", "file", name, "stored_bytes", b.Stored)
	}
	return nil
}

// loadShipped lists what the target holds of c's timeline, once per
// timeline, and returns the timeline's prefix.
func (s *Service) loadShipped(ctx context.Context, st *state, c *store.Compute, dir string) (string, error) {
	tl, err := Timeline(dir)
	if err != nil {
		return "", err
	}
	prefix := BinlogPrefix(c.ProjectID, c.ID, tl)
	if st.shipped != nil && st.timeline == tl {
		return prefix, nil
	}
	have, err := ListBinlogs(ctx, s.Target, prefix)
	if err != nil {
		return "", err
	}
	st.shipped, st.timeline = map[string]bool{}, tl
	for _, b := range have {
		st.shipped[b.Name] = true
	}
	return prefix, nil
}

// snapshot uploads c's datadir and saves its manifest, unless nothing
// changed since the last one or c woke meanwhile. The caller holds st.snapMu.
func (s *Service) snapshot(ctx context.Context, st *state, c *store.Compute, background bool) error {
	log := s.log(c)
	dir, _ := s.DataDir(c)
	t0 := time.Now()
	m, stats, err := Snapshot(ctx, s.Target, dir, st.prev)
	if err != nil && background && s.woke(ctx, c) {
		log.Info("snapshot abandoned: the compute woke during the upload; it is taken again at the next suspend", "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	if m.Timeline, err = Timeline(dir); err != nil {
		return err
	}
	if st.prev != nil && stats.Uploaded == 0 && sameFiles(st.prev, m) && st.prev.Timeline == m.Timeline {
		log.Debug("nothing changed since the last snapshot")
		return nil
	}
	now, err := s.Store.GetCompute(ctx, c.ID)
	if err != nil {
		return err
	}
	if now.State != store.StateSuspended || now.Version != c.Version {
		if background {
			log.Info("snapshot abandoned: the compute woke during the upload; it is taken again at the next suspend")
			return nil
		}
		return fmt.Errorf("snapshot of compute %s: it woke during the upload", c.ID)
	}
	if err := s.save(ctx, st, c, m); err != nil {
		return err
	}
	log.Info("snapshot taken", "files", stats.Files, "read_bytes", stats.BytesRead, "stored_bytes", stats.BytesStored,
		"uploaded", stats.Uploaded, "duration", time.Since(t0))
	return nil
}

// woke reports whether c has changed since it was suspended.
func (s *Service) woke(ctx context.Context, c *store.Compute) bool {
	now, err := s.Store.GetCompute(ctx, c.ID)
	return err == nil && (now.State != store.StateSuspended || now.Version != c.Version)
}

// save stores a snapshot's manifest and makes it c's newest. The caller
// holds st.snapMu.
func (s *Service) save(ctx context.Context, st *state, c *store.Compute, m *Manifest) error {
	if err := saveSnapshot(ctx, s.Target, c, m); err != nil {
		return err
	}
	st.prev = m
	s.mu.Lock()
	st.lastSnap, st.snapsKnown = m.TakenAt, true
	s.mu.Unlock()
	return nil
}

// sameFiles reports whether two manifests list the same files, unchanged.
func sameFiles(a, b *Manifest) bool {
	if len(a.Files) != len(b.Files) {
		return false
	}
	for i := range a.Files {
		x, y := a.Files[i], b.Files[i]
		if x.Path != y.Path || x.SHA256 != y.SHA256 || x.Mode != y.Mode || !x.ModTime.Equal(y.ModTime) {
			return false
		}
	}
	return true
}

// Timeline returns the datadir's timeline, written next to it on first
// use. A restore gives the compute a new one.
func Timeline(dataDir string) (string, error) {
	p := timelineFile(dataDir)
	b, err := os.ReadFile(p)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	return NewTimeline(dataDir)
}

// NewTimeline starts a new timeline for the datadir and returns it.
func NewTimeline(dataDir string) (string, error) {
	raw := make([]byte, 4)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	tl := time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(raw)
	if err := os.WriteFile(timelineFile(dataDir), []byte(tl+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write the backup timeline: %w", err)
	}
	return tl, nil
}

// timelineFile sits beside the datadir, out of reach of the compute.
func timelineFile(dataDir string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(dataDir)), "backup.timeline")
}
