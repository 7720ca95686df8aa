package backup

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// objectGrace is how old an object no manifest names must be before it is
// deleted: a snapshot in progress stores its objects before its manifest.
const objectGrace = time.Hour

// PruneStats say what a prune deleted.
type PruneStats struct {
	Snapshots, Binlogs, Objects int
}

// Prune deletes what no restore to a time after now-retention needs: for
// each compute, the snapshots older than the newest one taken before the
// cutoff (that one stays: a restore to the cutoff starts from it), the
// binary logs only those needed, and the objects no remaining manifest
// names. The restorable window never gets a gap: it only starts later.
func Prune(ctx context.Context, t Target, now time.Time, retention time.Duration) (PruneStats, error) {
	var st PruneStats
	cutoff := now.Add(-retention)
	if err := pruneDeleted(ctx, t, cutoff, &st); err != nil {
		return st, err
	}
	snapObjs, err := t.List(ctx, "snapshots/")
	if err != nil {
		return st, err
	}
	if err := prunePending(ctx, t, now); err != nil {
		return st, err
	}
	keep := map[string]bool{} // object sums still named
	for _, c := range computesOf(snapObjs) {
		if err := pruneCompute(ctx, t, c, cutoff, keep, &st); err != nil {
			return st, fmt.Errorf("prune the backups of compute %s: %w", c.ID, err)
		}
	}
	objs, err := t.List(ctx, "objects/")
	if err != nil {
		return st, err
	}
	for _, o := range objs {
		sum := strings.TrimSuffix(o.Key[strings.LastIndexByte(o.Key, '/')+1:], ".zst")
		if keep[sum] || now.Sub(o.ModTime) < objectGrace {
			continue
		}
		if err := t.Delete(ctx, o.Key); err != nil {
			return st, err
		}
		st.Objects++
	}
	return st, nil
}

// prunePending deletes the agents' manifests a daemon never committed (it
// stopped in between), once as old as an unnamed object may be.
func prunePending(ctx context.Context, t Target, now time.Time) error {
	objs, err := t.List(ctx, pendingPrefix)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if now.Sub(o.ModTime) < objectGrace {
			continue
		}
		if err := t.Delete(ctx, o.Key); err != nil {
			return err
		}
	}
	return nil
}

// pruneDeleted deletes every backup of the projects deleted before the
// cutoff (their tombstone was stored at the deletion), then the tombstone.
func pruneDeleted(ctx context.Context, t Target, cutoff time.Time, st *PruneStats) error {
	tombs, err := t.List(ctx, "deleted/")
	if err != nil {
		return err
	}
	for _, ts := range tombs {
		if !ts.ModTime.Before(cutoff) {
			continue
		}
		projectID := strings.TrimSuffix(strings.TrimPrefix(ts.Key, "deleted/"), ".json")
		for _, prefix := range []string{"snapshots/" + projectID + "/", "binlogs/" + projectID + "/"} {
			objs, err := t.List(ctx, prefix)
			if err != nil {
				return err
			}
			for _, o := range objs {
				if err := t.Delete(ctx, o.Key); err != nil {
					return err
				}
				if strings.HasPrefix(prefix, "snapshots/") {
					st.Snapshots++
				} else {
					st.Binlogs++
				}
			}
		}
		if err := t.Delete(ctx, ts.Key); err != nil {
			return err
		}
	}
	return nil
}

// computesOf lists the computes that have snapshots, from their keys
// (snapshots/<project>/<compute>/<time>.json).
func computesOf(objs []Object) []store.Compute {
	seen := map[string]bool{}
	var out []store.Compute
	for _, o := range objs {
		parts := strings.Split(o.Key, "/")
		if len(parts) != 4 || seen[parts[2]] {
			continue
		}
		seen[parts[2]] = true
		out = append(out, store.Compute{ProjectID: parts[1], ID: parts[2]})
	}
	return out
}

// pruneCompute prunes one compute's snapshots and binary logs, adding the
// objects its kept snapshots name to keep.
func pruneCompute(ctx context.Context, t Target, c store.Compute, cutoff time.Time, keep map[string]bool, st *PruneStats) error {
	snaps, err := ListSnapshots(ctx, t, &c)
	if err != nil {
		return err
	}
	// The first kept: the newest taken at or before the cutoff, if any.
	first := sort.Search(len(snaps), func(i int) bool { return snaps[i].TakenAt.After(cutoff) }) - 1
	first = max(first, 0)
	for _, s := range snaps[:first] {
		if err := t.Delete(ctx, s.Key); err != nil {
			return err
		}
		st.Snapshots++
	}
	needed := map[string]string{} // timeline -> the oldest binary log a kept snapshot needs
	for _, s := range snaps[first:] {
		m, err := LoadManifest(ctx, t, s.Key)
		if err != nil {
			return err
		}
		for _, f := range m.Files {
			if f.SHA256 != "" {
				keep[f.SHA256] = true
			}
		}
		if old, ok := needed[m.Timeline]; !ok || m.Binlog < old {
			needed[m.Timeline] = m.Binlog
		}
	}
	return pruneBinlogs(ctx, t, c, needed, cutoff, st)
}

// pruneBinlogs deletes the binary logs older than what the kept snapshots
// of their timeline need, and those of timelines no kept snapshot is on,
// once closed before the cutoff.
func pruneBinlogs(ctx context.Context, t Target, c store.Compute, needed map[string]string, cutoff time.Time, st *PruneStats) error {
	objs, err := t.List(ctx, fmt.Sprintf("binlogs/%s/%s/", c.ProjectID, c.ID))
	if err != nil {
		return err
	}
	for _, o := range objs {
		rest := strings.TrimPrefix(o.Key, fmt.Sprintf("binlogs/%s/%s/", c.ProjectID, c.ID))
		tl, _, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		b, ok := parseBinlogKey(BinlogPrefix(c.ProjectID, c.ID, tl), o)
		if !ok {
			continue
		}
		from, kept := needed[tl]
		if (kept && b.Name >= from) || (!kept && !b.ClosedAt.Before(cutoff)) {
			continue
		}
		if err := t.Delete(ctx, o.Key); err != nil {
			return err
		}
		st.Binlogs++
	}
	return nil
}
