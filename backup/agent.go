package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// An agent is the backup work that needs a compute's volume, run where the
// volume is mounted instead of in the daemon: on Kubernetes, a Pod on the
// compute's PersistentVolumeClaim (serverlessd agent run). The daemon
// decides what to do and when; the agent reads and writes the volume and
// the target, and reports a Result.

// Kinds of Job.
const (
	// JobSuspended ships a stopped compute's binary logs and snapshots its
	// datadir when it changed, under a pending key the daemon commits once
	// it knows the compute did not wake meanwhile.
	JobSuspended = "suspended"
	// JobKeep ships a stopped compute's binary logs and saves its datadir
	// as its newest snapshot, changed or not (before its project is
	// deleted).
	JobKeep = "keep"
	// JobRestore keeps the current data as a snapshot, then replaces it by
	// the backups of the compute at a time (a point-in-time restore).
	JobRestore = "restore"
	// JobHot copies a running compute's datadir with mariadb-backup (the
	// agent's Pod is on the compute's node) and stores it as a snapshot.
	JobHot = "hot"
	// JobBranch fills a new compute's empty volume from the backups of
	// another compute (From) at a time.
	JobBranch = "branch"
)

// Job is what an agent is asked to do for one compute.
type Job struct {
	Kind      string `json:"kind"`
	ProjectID string `json:"project_id"`
	ComputeID string `json:"compute_id"`
	// To is a restore's time (zero: the latest the backups reach).
	To time.Time `json:"to,omitzero"`
	// Addr is a hot backup's server address ("ip:port"); the password of
	// the daemon's account on it is in the agent's environment.
	Addr string `json:"addr,omitempty"`
	// FromProjectID and FromComputeID name a branch's source.
	FromProjectID string `json:"from_project_id,omitempty"`
	FromComputeID string `json:"from_compute_id,omitempty"`
}

// Result is what an agent did, as it reports it to the daemon.
type Result struct {
	// Shipped is how many binary log files it stored.
	Shipped int `json:"shipped"`
	// Pending is the key of the snapshot manifest a JobSuspended saved
	// for the daemon to commit; empty when nothing changed.
	Pending string `json:"pending,omitempty"`
	// Timeline is the datadir's timeline after the job.
	Timeline string `json:"timeline,omitempty"`
	// Replayed is how many binary log files a restore replayed.
	Replayed int `json:"replayed,omitempty"`
}

// pendingPrefix holds agents' manifests until the daemon commits them.
const pendingPrefix = "pending/"

// RunJob does job on the compute whose datadir is dataDir, stopped, in the
// target t. It is what an agent runs.
func RunJob(ctx context.Context, t Target, dataDir string, job Job, admin compute.Credentials, log *slog.Logger) (Result, error) {
	c := &store.Compute{ID: job.ComputeID, ProjectID: job.ProjectID}
	if c.ID == "" || c.ProjectID == "" {
		return Result{}, errors.New("the job names no compute or project")
	}
	switch job.Kind {
	case JobSuspended, JobKeep:
		return backUpStopped(ctx, t, dataDir, c, job.Kind == JobSuspended)
	case JobRestore:
		return restoreInPlace(ctx, t, dataDir, c, job.To, log)
	case JobHot:
		return hotCopy(ctx, t, dataDir, c, job.Addr, admin)
	case JobBranch:
		from := &store.Compute{ID: job.FromComputeID, ProjectID: job.FromProjectID}
		if from.ID == "" || from.ProjectID == "" {
			return Result{}, errors.New("the branch job names no source compute")
		}
		return restoreFrom(ctx, t, dataDir, c, from, job.To, log)
	}
	return Result{}, fmt.Errorf("unknown job kind %q", job.Kind)
}

// backUpStopped ships the binary logs of a stopped compute's datadir that
// the target lacks and snapshots the datadir, incrementally from the
// timeline's newest snapshot. With pending, the manifest goes under a
// pending key and only when something changed; otherwise it is saved as
// the compute's newest snapshot, changed or not (the one a restore keeps).
func backUpStopped(ctx context.Context, t Target, dataDir string, c *store.Compute, pending bool) (Result, error) {
	if _, err := os.Stat(dataDir); errors.Is(err, fs.ErrNotExist) {
		return Result{}, errNoDatadir
	}
	tl, err := Timeline(dataDir)
	if err != nil {
		return Result{}, err
	}
	res := Result{Timeline: tl}
	if res.Shipped, err = shipIndexed(ctx, t, dataDir, BinlogPrefix(c.ProjectID, c.ID, tl)); err != nil {
		return res, err
	}
	prev, err := newestOnTimeline(ctx, t, c, tl)
	if err != nil {
		return res, err
	}
	m, stats, err := Snapshot(ctx, t, dataDir, prev)
	if err != nil {
		return res, err
	}
	m.Timeline = tl
	if !pending {
		return res, saveSnapshot(ctx, t, c, m)
	}
	if prev != nil && stats.Uploaded == 0 && sameFiles(prev, m) {
		return res, nil
	}
	res.Pending = pendingPrefix + c.ID + "/" + m.TakenAt.UTC().Format(keyTime) + ".json"
	return res, SaveManifest(ctx, t, res.Pending, m)
}

// hotCopy stores a snapshot of the running compute at addr, whose
// datadir is dataDir, copied by mariadb-backup into a temporary folder
// (not on the volume, which the copy would fill): it records the binary
// log position it matches, from which a restore replays.
func hotCopy(ctx context.Context, t Target, dataDir string, c *store.Compute, addr string, admin compute.Credentials) (Result, error) {
	tl, err := Timeline(dataDir)
	if err != nil {
		return Result{}, err
	}
	tmp, err := os.MkdirTemp("", "serverlessd-hot-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, "data")
	pos, err := HotBackup(ctx, dataDir, dst, addr, admin)
	if err != nil {
		return Result{}, fmt.Errorf("project %s: %w", c.ProjectID, err)
	}
	prev, err := newestOnTimeline(ctx, t, c, tl)
	if err != nil {
		return Result{}, err
	}
	m, _, err := Snapshot(ctx, t, dst, prev)
	if err != nil {
		return Result{}, err
	}
	m.Timeline, m.Binlog, m.BinlogPos = tl, pos.File, pos.Pos
	return Result{Timeline: tl}, saveSnapshot(ctx, t, c, m)
}

// shipIndexed stores the binary logs of dataDir's index that the target
// lacks under prefix, up to the first one still open, and returns how many
// it stored.
func shipIndexed(ctx context.Context, t Target, dataDir, prefix string) (n int, err error) {
	names, err := IndexedBinlogs(dataDir)
	if err != nil || len(names) == 0 {
		return 0, err
	}
	have, err := ListBinlogs(ctx, t, prefix)
	if err != nil {
		return 0, err
	}
	stored := map[string]bool{}
	for _, b := range have {
		stored[b.Name] = true
	}
	for _, name := range names {
		p := filepath.Join(dataDir, name)
		// A compute that woke meanwhile writes its newest file: that one
		// and any after it ship after its next suspend.
		if open, err := BinlogOpen(p); err != nil || open {
			return n, err
		}
		if !stored[name] {
			if _, err := ShipBinlog(ctx, t, prefix, p); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// newestOnTimeline returns c's newest snapshot if it is of timeline tl,
// else nil: a snapshot of another history shares no file times.
func newestOnTimeline(ctx context.Context, t Target, c *store.Compute, tl string) (*Manifest, error) {
	m, err := newestSnapshot(ctx, t, c)
	if err != nil || m == nil || m.Timeline != tl {
		return nil, err
	}
	return m, nil
}

// newestSnapshot returns c's newest snapshot's manifest; nil if it has none.
func newestSnapshot(ctx context.Context, t Target, c *store.Compute) (*Manifest, error) {
	snaps, err := ListSnapshots(ctx, t, c)
	if err != nil || len(snaps) == 0 {
		return nil, err
	}
	return LoadManifest(ctx, t, snaps[len(snaps)-1].Key)
}

// CommitPending makes the manifest an agent saved under key c's newest
// snapshot, and deletes the pending copy.
func CommitPending(ctx context.Context, t Target, c *store.Compute, key string) (*Manifest, error) {
	m, err := LoadManifest(ctx, t, key)
	if err != nil {
		return nil, err
	}
	if err := saveSnapshot(ctx, t, c, m); err != nil {
		return nil, err
	}
	return m, t.Delete(ctx, key)
}

// ReadJob parses a job as the daemon passes it to an agent.
func ReadJob(s string) (Job, error) {
	var j Job
	if err := json.Unmarshal([]byte(s), &j); err != nil {
		return Job{}, fmt.Errorf("read the agent's job: %w", err)
	}
	return j, nil
}
