package compute

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// openInterval records that c became active now. An interval already open
// (an adopted compute's) is kept: nothing is counted twice.
func (m *Manager) openInterval(ctx context.Context, c *store.Compute) {
	iv := &store.UsageInterval{ProjectID: c.ProjectID, TenantID: c.TenantID, ComputeID: c.ID, Start: store.Now(), MemoryBytes: MemoryOf(c.Spec)}
	if err := m.st.StartInterval(ctx, iv); err != nil && !errors.Is(err, store.ErrAlreadyExists) {
		m.log.Error("could not record usage interval start", "compute", c.ID, "project", c.ProjectID, "err", err)
	}
}

// closeInterval ends c's open interval at end, if one is open.
func (m *Manager) closeInterval(ctx context.Context, c *store.Compute, end time.Time) {
	if err := m.st.EndInterval(ctx, c.ID, end); err != nil && !errors.Is(err, store.ErrNotFound) {
		m.log.Error("could not record usage interval end", "compute", c.ID, "project", c.ProjectID, "err", err)
	}
}

// Sample records c's storage size, measured now, and the bytes proxied
// since the last sample. The manager calls it at every suspend.
func (m *Manager) Sample(ctx context.Context, c *store.Compute) error {
	return m.sample(ctx, c, true)
}

// SampleActive is Sample for the scheduler's tick over the active
// computes. It measures the storage again only when clients sent
// something since the last measure (its own or a storage-limit check's),
// or that is older than remeasureAfter; otherwise it records the size
// last measured. A walk of every active
// compute's folder at every tick was most of the tick's CPU.
func (m *Manager) SampleActive(ctx context.Context, c *store.Compute) error {
	return m.sample(ctx, c, false)
}

// remeasureAfter bounds how stale a sample's storage may be: a statement
// can write for long without a byte from its client, and the server
// writes files of its own (binary logs).
const remeasureAfter = 30 * time.Second

func (m *Manager) sample(ctx context.Context, c *store.Compute, force bool) error {
	a := m.Activity(c.ID)
	size := a.StorageBytes()
	if force || a.measureDue(time.Now()) {
		var err error
		if size, err = a.measure(func() (int64, error) { return m.drv.StorageBytes(ctx, c) }); err != nil {
			return fmt.Errorf("measure storage of compute %s: %w", c.ID, err)
		}
	}
	in, out := a.TakeDelta()
	s := &store.UsageSample{ProjectID: c.ProjectID, TenantID: c.TenantID, ComputeID: c.ID, StorageBytes: size, BytesIn: in, BytesOut: out}
	if err := m.st.AddUsageSample(ctx, s); err != nil {
		return fmt.Errorf("record usage sample of compute %s: %w", c.ID, err)
	}
	return nil
}

// Heartbeat advances the open intervals of the computes this daemon runs,
// so that after a crash they are closed when the compute was last seen.
func (m *Manager) Heartbeat(ctx context.Context, now time.Time) error {
	active := m.ActiveComputes()
	if len(active) == 0 {
		return nil
	}
	ids := make([]string, len(active))
	for i, w := range active {
		ids[i] = w.ComputeID
	}
	return m.st.TouchIntervals(ctx, ids, now.UTC())
}

// closeOrphanIntervals ends, at their last heartbeat, the open intervals of
// computes that do not run (left open by a daemon killed with -9). Adopted
// computes keep theirs.
func (m *Manager) closeOrphanIntervals(ctx context.Context, running map[string]Instance) error {
	open, err := m.st.OpenIntervals(ctx)
	if err != nil {
		return err
	}
	for _, iv := range open {
		if _, ok := running[iv.ComputeID]; ok {
			continue
		}
		c := &store.Compute{ID: iv.ComputeID, ProjectID: iv.ProjectID}
		if cur, err := m.st.GetCompute(ctx, iv.ComputeID); err == nil && (m.checkNode(cur) != nil || m.isWarm(cur)) {
			continue // another node's compute, or one this daemon started since
		}
		m.closeInterval(ctx, c, iv.LastSeen)
		m.log.Info("closed usage interval left open", "compute", iv.ComputeID, "project", iv.ProjectID,
			"start", iv.Start, "last_seen", iv.LastSeen)
	}
	return nil
}
