package backup

import (
	"context"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// AfterProvision is compute.Options.AfterProvision: it saves a new
// compute's first snapshot, its datadir as provisioned, so that its binary
// logs, from the first, restore it to any time of its life. Every new
// datadir is a copy of one template that keeps the template's file times,
// so after the first compute this reads no file and stores nothing but a
// manifest. A failure is logged, and the compute is snapshotted at its
// first suspend or hot backup instead.
func (s *Service) AfterProvision(ctx context.Context, c store.Compute) {
	dir, ok := s.DataDir(&c)
	if !ok {
		return
	}
	st := s.stateOf(&c)
	st.snapMu.Lock()
	defer st.snapMu.Unlock()
	s.mu.Lock()
	tpl := s.template
	s.mu.Unlock()
	t0 := time.Now()
	m, stats, err := Snapshot(ctx, s.Target, dir, tpl)
	if err == nil {
		m.Timeline, err = Timeline(dir)
	}
	if err == nil {
		err = saveSnapshot(ctx, s.Target, &c, m)
	}
	if err != nil {
		s.Metrics.failed()
		s.log(&c).Warn("no first snapshot of the new compute; it is taken at its first suspend or hot backup", "err", err)
		return
	}
	s.mu.Lock()
	s.template, st.prev, st.lastSnap, st.snapsKnown = m, m, m.TakenAt, true
	s.mu.Unlock()
	s.log(&c).Info("first snapshot taken", "files", stats.Files, "read_bytes", stats.BytesRead,
		"stored_bytes", stats.BytesStored, "duration", time.Since(t0))
}
