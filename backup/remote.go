package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// RunAgent runs a job of a kind (Job.Kind), as JSON, where the compute's
// volume is mounted and returns the agent's report (a Result, as JSON): on
// Kubernetes, a Pod on the compute's claim. The compute is stopped, or
// may wake meanwhile (JobSuspended), or runs (JobHot).
type RunAgent func(ctx context.Context, c *store.Compute, kind string, job []byte) ([]byte, error)

// remote reports whether c's data is backed up through the agent: its
// driver keeps no datadir on this node.
func (s *Service) remote(c *store.Compute) bool {
	_, local := s.DataDir(c)
	return !local && s.Agent != nil
}

// afterRemoteSuspend queues, for a compute backed up through the agent,
// the shipping of its binary logs and its snapshot.
func (s *Service) afterRemoteSuspend(c store.Compute) {
	if s.Agent == nil {
		return
	}
	st := s.stateOf(&c)
	s.mu.Lock()
	st.c, st.snapshot = c, true
	st.failures, st.retryAt = 0, time.Time{}
	s.mu.Unlock()
	s.kick(st)
}

// runJob runs job for c through the agent. A job that writes the volume,
// or keeps its data for a restore, runs to its end even if the request
// that asked for it ends first: its agent is not cut off half-way.
func (s *Service) runJob(ctx context.Context, c *store.Compute, job Job) (Result, error) {
	job.ProjectID, job.ComputeID = c.ProjectID, c.ID
	if job.Kind != JobSuspended && job.Kind != JobHot {
		ctx = context.WithoutCancel(ctx)
	}
	b, err := json.Marshal(job)
	if err != nil {
		return Result{}, err
	}
	out, err := s.Agent(ctx, c, job.Kind, b)
	if err != nil {
		return Result{}, fmt.Errorf("backup agent of project %s: %w", c.ProjectID, err)
	}
	var res Result
	if err := json.Unmarshal(out, &res); err != nil {
		return Result{}, fmt.Errorf("backup agent of project %s: unreadable report %q: %w", c.ProjectID, tail(string(out), 200), err)
	}
	return res, nil
}

// catchUpRemote ships a suspended compute's binary logs and takes its
// snapshot through the agent. The agent reads the volume in place; if the
// compute woke meanwhile, its snapshot is dropped, as catchUp's would be.
// The caller holds no lock of st.
func (s *Service) catchUpRemote(ctx context.Context, st *state, c *store.Compute) error {
	st.snapMu.Lock()
	defer st.snapMu.Unlock()
	s.mu.Lock()
	skip := st.gone || !st.snapshot // destroyed, or a Backup did it meanwhile
	s.mu.Unlock()
	if skip {
		return nil
	}
	log := s.log(c)
	t0 := time.Now()
	// Done, or abandoned: the next suspend queues another. A failure
	// keeps it due, for a retry.
	done := func() {
		s.mu.Lock()
		if st.c.Version == c.Version {
			st.snapshot = false
		}
		s.mu.Unlock()
	}
	res, err := s.runJob(ctx, c, Job{Kind: JobSuspended})
	if err != nil && s.woke(ctx, c) {
		log.Info("backup abandoned: the compute woke during it; it is taken again at the next suspend", "err", err)
		done()
		return nil
	}
	if err != nil {
		return err
	}
	// The agent shipped files the daemon's list lacks: list again at the
	// next rotation. (A rotation under way ships some twice, which the
	// target's listing counts once.)
	if st.shipMu.TryLock() {
		st.shipped = nil
		st.shipMu.Unlock()
	}
	if res.Pending == "" {
		log.Debug("binary logs shipped; nothing changed since the last snapshot", "files", res.Shipped)
		done()
		return nil
	}
	if s.woke(ctx, c) {
		log.Info("snapshot abandoned: the compute woke during the upload; it is taken again at the next suspend")
		done()
		return s.Target.Delete(ctx, res.Pending)
	}
	m, err := CommitPending(ctx, s.Target, c, res.Pending)
	if err != nil {
		return err // still due: the retry runs the agent again
	}
	done()
	st.prev = m
	s.mu.Lock()
	st.lastSnap, st.snapsKnown = m.TakenAt, true
	s.mu.Unlock()
	log.Info("snapshot taken by the backup agent", "binlogs_shipped", res.Shipped, "duration", time.Since(t0))
	return nil
}

// backupRemote is Backup through the agent.
func (s *Service) backupRemote(ctx context.Context, c *store.Compute) (*Manifest, error) {
	st := s.stateOf(c)
	st.shipMu.Lock()
	defer st.shipMu.Unlock()
	st.snapMu.Lock()
	defer st.snapMu.Unlock()
	res, err := s.runJob(ctx, c, Job{Kind: JobKeep})
	if err != nil {
		return nil, err
	}
	m, err := newestOnTimeline(ctx, s.Target, c, res.Timeline)
	if err != nil {
		return nil, err
	}
	st.prev = m
	s.mu.Lock()
	st.snapshot = false
	if m != nil {
		st.lastSnap, st.snapsKnown = m.TakenAt, true
	}
	s.mu.Unlock()
	return m, nil
}

// restoreRemote is RestoreTo through the agent: it keeps the current data,
// restores and replays on the compute's volume, and the compute starts on
// the result.
func (s *Service) restoreRemote(ctx context.Context, c *store.Compute, to time.Time) (*store.Operation, error) {
	steps := compute.RestoreSteps{InPlace: true, Prepare: func(ctx context.Context, c *store.Compute) (string, error) {
		st := s.stateOf(c)
		st.shipMu.Lock()
		defer st.shipMu.Unlock()
		st.snapMu.Lock()
		defer st.snapMu.Unlock()
		res, err := s.runJob(ctx, c, Job{Kind: JobRestore, To: to})
		if err != nil {
			return "", err
		}
		// A new timeline, whose base the agent saved.
		st.prev, st.shipped = nil, nil
		s.mu.Lock()
		st.lastSnap, st.snapsKnown = time.Now(), true
		s.mu.Unlock()
		s.log(c).Info("restored by the backup agent", "timeline", res.Timeline, "binlogs_replayed", res.Replayed)
		return "", nil
	}}
	return s.Computes.Restore(ctx, c.ID, steps)
}

// branchRemote returns the steps that fill a new compute's volume, through
// the agent, from from's backups at at (zero: the latest). With now, from
// is first stopped and its data kept as a snapshot: the branch is of its
// data as it is now.
func (s *Service) branchRemote(from *store.Compute, at time.Time, now bool) compute.RestoreSteps {
	return compute.RestoreSteps{InPlace: true, Prepare: func(ctx context.Context, c *store.Compute) (string, error) {
		if now {
			err := s.Computes.WhileStopped(ctx, from.ID, func(src *store.Compute) error {
				_, err := s.backupRemote(ctx, src)
				return err
			})
			if err != nil {
				return "", fmt.Errorf("keep the data of project %s for the branch: %w", from.ProjectID, err)
			}
		}
		res, err := s.runJob(ctx, c, Job{Kind: JobBranch, FromProjectID: from.ProjectID, FromComputeID: from.ID, To: at})
		if err != nil {
			return "", err
		}
		s.log(c).Info("branch filled by the backup agent", "from_project", from.ProjectID, "timeline", res.Timeline,
			"binlogs_replayed", res.Replayed)
		return "", nil
	}}
}

// hotRemote is hotSnapshot through an agent on the compute's node, which
// reads its datadir with mariadb-backup while it runs.
func (s *Service) hotRemote(ctx context.Context, st *state, c *store.Compute, addr string) error {
	t0 := time.Now()
	st.snapMu.Lock()
	defer st.snapMu.Unlock()
	if _, err := s.runJob(ctx, c, Job{Kind: JobHot, Addr: addr}); err != nil {
		return err
	}
	st.prev = nil // the agent's snapshot: read again when needed
	s.mu.Lock()
	st.lastSnap, st.snapsKnown = time.Now(), true
	s.mu.Unlock()
	s.log(c).Info("hot backup taken by the backup agent", "duration", time.Since(t0))
	return nil
}

// catalogRemote lists c's backups on the timeline of its newest snapshot:
// the daemon cannot read the timeline on the volume.
func (s *Service) catalogRemote(ctx context.Context, c *store.Compute) (Catalog, error) {
	m, err := newestSnapshot(ctx, s.Target, c)
	if err != nil || m == nil {
		return Catalog{Snapshots: []SnapshotRef{}}, err
	}
	return ListCatalog(ctx, s.Target, c, m.Timeline)
}

// errNoBase means a compute has no snapshot to ship binary logs onto yet.
var errNoBase = errors.New("no snapshot of the compute yet")

// shipRemote ships the closed binary logs names of a running compute whose
// volume the daemon does not mount: each is dumped over the replication
// protocol into a temporary file, then stored as a local one is. They go
// to the timeline of the compute's newest snapshot (a restore saves its
// new timeline's first); with no snapshot yet (its first hot backup is
// under way) it fails with errNoBase, and they stay on the compute. The
// caller holds st.shipMu.
func (s *Service) shipRemote(ctx context.Context, st *state, c *store.Compute, names []string) error {
	m, err := newestSnapshot(ctx, s.Target, c)
	if err != nil {
		return err
	}
	if m == nil {
		return errNoBase
	}
	prefix := BinlogPrefix(c.ProjectID, c.ID, m.Timeline)
	if st.shipped == nil || st.timeline != m.Timeline {
		have, err := ListBinlogs(ctx, s.Target, prefix)
		if err != nil {
			return err
		}
		st.shipped, st.timeline = map[string]bool{}, m.Timeline
		for _, b := range have {
			st.shipped[b.Name] = true
		}
	}
	addr, cred, err := s.Computes.AdminAccess(ctx, c.ID)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "serverlessd-binlog-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, name := range names {
		if st.shipped[name] {
			continue
		}
		p := filepath.Join(tmp, name)
		if err := DumpBinlog(ctx, addr, cred, name, p); err != nil {
			return fmt.Errorf("project %s: %w", c.ProjectID, err)
		}
		b, err := ShipBinlog(ctx, s.Target, prefix, p)
		if err != nil {
			return err
		}
		st.shipped[name] = true
		s.log(c).Debug("binary log shipped", "file", name, "stored_bytes", b.Stored)
	}
	return nil
}
