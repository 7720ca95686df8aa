package backup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// Errors callers can match with errors.Is.
var (
	// ErrNoData means the compute's driver keeps no datadir on this node.
	ErrNoData = errors.New("the compute keeps no data on this node to back up")
	// ErrOutsideWindow means a restore asked for a time the backups do not
	// cover.
	ErrOutsideWindow = errors.New("the time is outside the restorable window")
)

// SnapshotRef is a snapshot as listed.
type SnapshotRef struct {
	Key     string    `json:"-"`
	TakenAt time.Time `json:"taken_at"`
}

// Catalog is what the target holds of one compute.
type Catalog struct {
	Snapshots []SnapshotRef `json:"snapshots"`
	// Earliest and Latest bound the times a restore can return to; zero
	// when there is no snapshot yet.
	Earliest time.Time `json:"earliest,omitzero"`
	Latest   time.Time `json:"latest,omitzero"`
	Binlogs  int       `json:"binlogs"` // files archived on the current timeline
}

func snapshotPrefix(projectID, computeID string) string {
	return fmt.Sprintf("snapshots/%s/%s/", projectID, computeID)
}

// ManifestKey is where a compute's snapshot taken at t is kept.
func ManifestKey(c *store.Compute, t time.Time) string {
	return snapshotPrefix(c.ProjectID, c.ID) + t.UTC().Format(keyTime) + ".json"
}

// saveSnapshot stores a snapshot's manifest, the last step of a snapshot:
// a snapshot is listed only once all its objects are stored.
func saveSnapshot(ctx context.Context, t Target, c *store.Compute, m *Manifest) error {
	if err := SaveManifest(ctx, t, ManifestKey(c, m.TakenAt), m); err != nil {
		return fmt.Errorf("save the snapshot's manifest: %w", err)
	}
	return nil
}

// ListSnapshots lists a compute's snapshots, oldest first.
func ListSnapshots(ctx context.Context, t Target, c *store.Compute) ([]SnapshotRef, error) {
	prefix := snapshotPrefix(c.ProjectID, c.ID)
	objs, err := t.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []SnapshotRef
	for _, o := range objs {
		at, err := time.Parse(keyTime, strings.TrimSuffix(strings.TrimPrefix(o.Key, prefix), ".json"))
		if err == nil {
			out = append(out, SnapshotRef{Key: o.Key, TakenAt: at})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TakenAt.Before(out[j].TakenAt) })
	return out, nil
}

// ListCatalog lists a compute's snapshots and restorable window; timeline
// is the compute's current one.
func ListCatalog(ctx context.Context, t Target, c *store.Compute, timeline string) (Catalog, error) {
	snaps, err := ListSnapshots(ctx, t, c)
	if err != nil || len(snaps) == 0 {
		return Catalog{Snapshots: snaps}, err
	}
	cat := Catalog{Snapshots: snaps, Earliest: snaps[0].TakenAt, Latest: snaps[len(snaps)-1].TakenAt}
	if timeline == "" {
		return cat, nil
	}
	logs, err := ListBinlogs(ctx, t, BinlogPrefix(c.ProjectID, c.ID, timeline))
	if err != nil {
		return cat, err
	}
	cat.Binlogs = len(logs)
	for _, b := range logs {
		if b.ClosedAt.After(cat.Latest) {
			cat.Latest = b.ClosedAt
		}
	}
	return cat, nil
}

// Plan is how to bring a compute's data to a time: a snapshot, then its
// timeline's binary logs replayed up to the time.
type Plan struct {
	To time.Time // zero: replay every binary log
	// StartPos is where the replay starts in the first binary log (a hot
	// backup's position); 0 is its beginning.
	StartPos uint64

	Snapshot *Manifest
	Binlogs  []Binlog
}

// PlanRestore finds the newest snapshot taken at or before to and the
// binary logs that follow it; a zero to is the latest time the backups
// reach (every binary log after the newest snapshot). It fails with
// ErrOutsideWindow when the backups stop before to, or start after it, or
// a binary log is missing.
func PlanRestore(ctx context.Context, t Target, c *store.Compute, to time.Time) (*Plan, error) {
	snaps, err := ListSnapshots(ctx, t, c)
	if err != nil {
		return nil, err
	}
	latest := to.IsZero()
	if latest {
		to = time.Now().Add(time.Hour) // after every snapshot
	}
	i := sort.Search(len(snaps), func(i int) bool { return snaps[i].TakenAt.After(to) }) - 1
	if i < 0 {
		return nil, fmt.Errorf("no snapshot of project %s was taken before %s: %w", c.ProjectID, to.Format(time.RFC3339), ErrOutsideWindow)
	}
	m, err := LoadManifest(ctx, t, snaps[i].Key)
	if err != nil {
		return nil, err
	}
	p := &Plan{Snapshot: m, StartPos: m.BinlogPos}
	if !latest {
		p.To = to
	}
	if !to.After(m.TakenAt) {
		return p, nil
	}
	logs, err := ListBinlogs(ctx, t, BinlogPrefix(c.ProjectID, c.ID, m.Timeline))
	if err != nil {
		return nil, err
	}
	covered := m.TakenAt
	for _, b := range logs {
		if b.Name < m.Binlog || (b.Name == m.Binlog && m.BinlogPos == 0) {
			continue
		}
		if err := follows(p.Binlogs, m, b); err != nil {
			return nil, fmt.Errorf("project %s: %w: %w", c.ProjectID, err, ErrOutsideWindow)
		}
		p.Binlogs = append(p.Binlogs, b)
		covered = b.ClosedAt
		if !covered.Before(to) {
			return p, nil
		}
	}
	if latest {
		return p, nil
	}
	// A later snapshot of the same timeline whose binary logs we have
	// proves that nothing happened between: the compute was suspended.
	if i+1 < len(snaps) {
		next, err := LoadManifest(ctx, t, snaps[i+1].Key)
		if err != nil {
			return nil, err
		}
		last := m.Binlog
		if n := len(p.Binlogs); n > 0 {
			last = p.Binlogs[n-1].Name
		}
		if next.Timeline == m.Timeline && next.Binlog <= last && (m.BinlogPos == 0 || len(p.Binlogs) > 0) {
			return p, nil
		}
	}
	return nil, fmt.Errorf("project %s can be restored up to %s, not to %s: %w",
		c.ProjectID, covered.Format(time.RFC3339), to.Format(time.RFC3339), errWindowEnd)
}

// errWindowEnd is ErrOutsideWindow past the last binary log shipped: the
// compute may hold the rest, which a restore ships first.
var errWindowEnd = fmt.Errorf("the backups end before that time: %w", ErrOutsideWindow)

// follows checks that b is the binary log after the last one of have (or
// the first the snapshot m needs), so that no file of the history is
// missing.
func follows(have []Binlog, m *Manifest, b Binlog) error {
	prev := m.Binlog
	if len(have) > 0 {
		prev = have[len(have)-1].Name
	} else if m.BinlogPos > 0 {
		if b.Name != m.Binlog {
			return fmt.Errorf("binary log %s, where the snapshot stops, is missing", m.Binlog)
		}
		return nil
	}
	if prev == "" {
		return nil
	}
	var a, n int
	fmt.Sscanf(strings.TrimPrefix(prev, "binlog."), "%d", &a)
	fmt.Sscanf(strings.TrimPrefix(b.Name, "binlog."), "%d", &n)
	if n != a+1 {
		return fmt.Errorf("binary logs after %s are missing (the next archived one is %s)", prev, b.Name)
	}
	return nil
}
