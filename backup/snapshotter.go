package backup

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// Snapshotter takes a snapshot of each compute after a clean suspend, in
// the background, so that no wake waits for it. Its folder is read in
// place, not copied first: a wake during the upload makes the snapshot
// worthless (mariadbd writes the files being read), so it is abandoned
// and taken again at the next suspend. A copy at suspend would cost every
// suspend a full copy where reflinks are not available, and suspends are
// frequent; an abandoned upload costs nothing but the next one.
type Snapshotter struct {
	Target Target
	// Store tells whether the compute woke during an upload.
	Store store.Store
	// Folder is a compute's folder, and false for computes whose driver
	// keeps none on this node.
	Folder func(c *store.Compute) (string, bool)
	Log    *slog.Logger

	mu      sync.Mutex
	prev    map[string]*Manifest     // last snapshot saved, by compute
	running map[string]bool          // an upload under way, by compute
	again   map[string]store.Compute // a suspend that came during it
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

// Start readies the snapshotter; Stop cancels its uploads and waits.
func (s *Snapshotter) Start() {
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.prev, s.running, s.again = map[string]*Manifest{}, map[string]bool{}, map[string]store.Compute{}
}

// Stop cancels uploads in progress (they are abandoned) and waits for them.
func (s *Snapshotter) Stop() {
	s.cancel()
	s.wg.Wait()
}

// Wait waits for the uploads in progress.
func (s *Snapshotter) Wait() { s.wg.Wait() }

// AfterSuspend is compute.Options.AfterSuspend: it starts a snapshot of c,
// or queues one after the upload under way for it.
func (s *Snapshotter) AfterSuspend(c store.Compute) {
	if _, ok := s.Folder(&c); !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[c.ID] {
		s.again[c.ID] = c
		return
	}
	s.running[c.ID] = true
	s.wg.Add(1)
	go s.run(c)
}

func (s *Snapshotter) run(c store.Compute) {
	defer s.wg.Done()
	for {
		s.snapshot(c)
		s.mu.Lock()
		next, ok := s.again[c.ID]
		delete(s.again, c.ID)
		if !ok || s.ctx.Err() != nil {
			delete(s.running, c.ID)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		c = next
	}
}

// ManifestKey is where a compute's snapshot taken at t is kept, and
// LatestKey its newest.
func ManifestKey(c *store.Compute, t time.Time) string {
	return fmt.Sprintf("snapshots/%s/%s/%s.json", c.ProjectID, c.ID, t.UTC().Format("20060102T150405.000000000Z"))
}

// LatestKey names a compute's newest snapshot's manifest.
func LatestKey(c *store.Compute) string {
	return fmt.Sprintf("snapshots/%s/%s/latest.json", c.ProjectID, c.ID)
}

// snapshot uploads c's folder and saves its manifest, unless nothing
// changed since the last one or c woke meanwhile.
func (s *Snapshotter) snapshot(c store.Compute) {
	log := s.Log.With("component", "backup", "compute", c.ID, "project", c.ProjectID)
	folder, _ := s.Folder(&c)
	s.mu.Lock()
	prev := s.prev[c.ID]
	s.mu.Unlock()
	t0 := time.Now()
	m, st, err := Snapshot(s.ctx, s.Target, folder, prev)
	if err != nil {
		log.Warn("snapshot failed; it is taken again at the next suspend", "err", err)
		return
	}
	if prev != nil && st.Uploaded == 0 && sameFiles(prev, m) {
		log.Debug("nothing changed since the last snapshot")
		return
	}
	now, err := s.Store.GetCompute(s.ctx, c.ID)
	if err != nil || now.State != store.StateSuspended || now.Version != c.Version {
		log.Info("snapshot abandoned: the compute woke during the upload; it is taken again at the next suspend", "err", err)
		return
	}
	for _, key := range []string{ManifestKey(&c, m.TakenAt), LatestKey(&c)} {
		if err := SaveManifest(s.ctx, s.Target, key, m); err != nil {
			log.Warn("saving the snapshot's manifest failed; it is taken again at the next suspend", "err", err)
			return
		}
	}
	s.mu.Lock()
	s.prev[c.ID] = m
	s.mu.Unlock()
	log.Info("snapshot taken", "files", st.Files, "read_bytes", st.BytesRead, "stored_bytes", st.BytesStored,
		"uploaded", st.Uploaded, "duration", time.Since(t0))
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
