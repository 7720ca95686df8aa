package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// RestoreSteps returns the steps of a point-in-time restore of c to to,
// for compute.Manager.Restore: keep the current data as a snapshot, build
// the datadir from the newest snapshot before to, and once the compute
// runs on it, replay the binary logs up to to. The restored data starts a
// new timeline, so a restore can itself be undone by restoring to a time
// before it.
func (s *Service) RestoreSteps(c *store.Compute, to time.Time) compute.RestoreSteps {
	return s.steps(c, to, true)
}

// BranchSteps returns the steps that build a new compute, for
// compute.Manager.CreateFrom, from the backups of from at the time at.
func (s *Service) BranchSteps(from *store.Compute, at time.Time) compute.RestoreSteps {
	if s.remote(from) {
		return s.branchRemote(from, at, false)
	}
	return s.steps(from, at, false)
}

// CopySteps returns the steps that build a new compute from from's data
// as it is now, when from's driver keeps its data where only an agent
// reaches it; false otherwise (the driver copies the datadir itself).
func (s *Service) CopySteps(from *store.Compute) (compute.RestoreSteps, bool) {
	if !s.remote(from) {
		return compute.RestoreSteps{}, false
	}
	return s.branchRemote(from, time.Time{}, true), true
}

// steps builds a compute's data from from's backups at to; keep first
// keeps the compute's current data as a snapshot (a restore in place).
func (s *Service) steps(from *store.Compute, to time.Time, keep bool) compute.RestoreSteps {
	var plan *Plan
	var dir string // the staging folder: the datadir, and the plan's binary logs
	return compute.RestoreSteps{
		Prepare: func(ctx context.Context, c *store.Compute) (string, error) {
			var err error
			if keep {
				if err = s.keep(ctx, c); err != nil {
					return "", err
				}
			}
			if plan, dir, err = s.prepare(ctx, from, c, to); err != nil {
				return "", err
			}
			if keep {
				dataDir, _ := s.DataDir(c)
				if _, err := NewTimeline(dataDir); err != nil {
					os.RemoveAll(dir)
					return "", err
				}
			}
			return filepath.Join(dir, "data"), nil
		},
		Replay: func(ctx context.Context, c *store.Compute, addr string, admin compute.Credentials) error {
			defer os.RemoveAll(dir)
			files := make([]string, len(plan.Binlogs))
			for i, b := range plan.Binlogs {
				files[i] = filepath.Join(dir, b.Name)
			}
			t0 := time.Now()
			if err := Replay(ctx, files, plan.StartPos, plan.To, addr, admin.User, admin.Password); err != nil {
				return fmt.Errorf("project %s: %w", c.ProjectID, err)
			}
			s.log(c).Info("binary logs replayed", "files", len(files), "to", plan.To, "duration", time.Since(t0))
			return s.saveBase(ctx, c, plan.Snapshot)
		},
	}
}

// keep saves c's current data as a snapshot before a restore replaces it.
func (s *Service) keep(ctx context.Context, c *store.Compute) error {
	t0 := time.Now()
	switch _, err := s.Backup(ctx, c); {
	case errors.Is(err, errNoDatadir):
		s.log(c).Warn("the compute has no datadir left to keep; restoring from the backups alone")
	case err != nil:
		return fmt.Errorf("keep the current data of project %s before the restore: %w", c.ProjectID, err)
	default:
		s.log(c).Info("current data kept as a snapshot before the restore", "duration", time.Since(t0))
	}
	return nil
}

// prepare restores the snapshot of from's plan to to into a new staging
// folder for c (its "data" folder), with the plan's binary logs beside it.
func (s *Service) prepare(ctx context.Context, from, c *store.Compute, to time.Time) (*Plan, string, error) {
	plan, err := PlanRestore(ctx, s.Target, from, to)
	if err != nil {
		return nil, "", err
	}
	dir, err := s.Staging(c)
	if err != nil {
		return nil, "", err
	}
	t0 := time.Now()
	if err := Restore(ctx, s.Target, plan.Snapshot, filepath.Join(dir, "data")); err != nil {
		os.RemoveAll(dir)
		return nil, "", fmt.Errorf("project %s: %w", from.ProjectID, err)
	}
	for _, b := range plan.Binlogs {
		if err := FetchBinlog(ctx, s.Target, b, filepath.Join(dir, b.Name)); err != nil {
			os.RemoveAll(dir)
			return nil, "", fmt.Errorf("project %s: %w", from.ProjectID, err)
		}
	}
	s.log(c).Info("snapshot restored", "from_project", from.ProjectID, "taken_at", plan.Snapshot.TakenAt,
		"binlogs", len(plan.Binlogs), "to", plan.To, "duration", time.Since(t0))
	return plan, dir, nil
}

// saveBase records the restored snapshot as the new timeline's first:
// the new timeline's binary logs, from the snapshot's next one, hold the
// replay and everything after it.
func (s *Service) saveBase(ctx context.Context, c *store.Compute, from *Manifest) error {
	dataDir, _ := s.DataDir(c)
	tl, err := Timeline(dataDir)
	if err != nil {
		return err
	}
	base := *from
	// The replay and all after it are in the new timeline's binary logs,
	// from the one after those the snapshot holds (a hot backup holds none).
	base.TakenAt, base.Timeline = time.Now().UTC(), tl
	base.Binlog, base.BinlogPos = newestBinlog(base.Files), 0
	if err := saveSnapshot(ctx, s.Target, c, &base); err != nil {
		return err
	}
	st := s.stateOf(c)
	st.snapMu.Lock()
	st.prev = &base
	st.snapMu.Unlock()
	st.shipMu.Lock()
	st.shipped = nil // a new timeline: listed again at the next ship
	st.shipMu.Unlock()
	s.mu.Lock()
	st.lastSnap, st.snapsKnown = base.TakenAt, true
	s.mu.Unlock()
	return nil
}

// Catalog lists a compute's snapshots and its restorable window.
func (s *Service) Catalog(ctx context.Context, c *store.Compute) (Catalog, error) {
	dir, ok := s.DataDir(c)
	if s.remote(c) {
		return s.catalogRemote(ctx, c)
	}
	if !ok {
		return Catalog{}, ErrNoData
	}
	// Read, never made: a listing writes nothing (the folder may not be
	// on this node). Without one, no binlog was shipped yet.
	b, err := os.ReadFile(timelineFile(dir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Catalog{}, err
	}
	return ListCatalog(ctx, s.Target, c, strings.TrimSpace(string(b)))
}

// RestoreTo brings a compute's data back to the time to (zero: the latest
// the backups reach) and returns the restore's operation; the compute runs
// on the restored data after it.
func (s *Service) RestoreTo(ctx context.Context, c *store.Compute, to time.Time) (*store.Operation, error) {
	_, local := s.DataDir(c)
	if (!local && !s.remote(c)) || s.Computes == nil {
		return nil, ErrNoData
	}
	// Fail fast, before stopping anything, when the backups cannot reach
	// to; the plan is made again once everything is shipped.
	if _, err := PlanRestore(ctx, s.Target, c, to); err != nil && !errors.Is(err, errWindowEnd) {
		return nil, err
	}
	if !local {
		return s.restoreRemote(ctx, c, to)
	}
	return s.Computes.Restore(ctx, c.ID, s.RestoreSteps(c, to))
}
