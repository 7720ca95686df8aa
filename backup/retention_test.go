package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// TestPrune keeps what a restore to any time in the retention window
// needs, and deletes the rest: older snapshots, the binary logs only they
// needed, a timeline nothing reaches any more, and unnamed objects.
func TestPrune(t *testing.T) {
	ctx := context.Background()
	tgt := Dir{Root: t.TempDir()}
	c := &store.Compute{ID: "cmp_a", ProjectID: "prj_a"}
	now := time.Now().UTC()
	day := 24 * time.Hour
	snap := func(content, binlog string, age time.Duration) {
		t.Helper()
		dir := t.TempDir()
		write(t, filepath.Join(dir, "ibdata1"), content, 0o600)
		m, _, err := Snapshot(ctx, tgt, dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		m.TakenAt, m.Timeline, m.Binlog = now.Add(-age), "T1", binlog
		if err := saveSnapshot(ctx, tgt, c, m); err != nil {
			t.Fatal(err)
		}
	}
	ship := func(timeline string, n int, age time.Duration) {
		t.Helper()
		p := filepath.Join(t.TempDir(), fmt.Sprintf("binlog.%06d", n))
		write(t, p, fmt.Sprintf("events %s %d", timeline, n), 0o600)
		at := now.Add(-age)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
		if _, err := ShipBinlog(ctx, tgt, BinlogPrefix(c.ProjectID, c.ID, timeline), p); err != nil {
			t.Fatal(err)
		}
	}
	snap("ten days", "binlog.000001", 10*day)
	snap("eight days", "binlog.000003", 8*day)
	snap("one day", "binlog.000005", day)
	for n := 2; n <= 6; n++ {
		ship("T1", n, time.Duration(11-n)*day)
	}
	ship("T0", 9, 9*day) // a timeline a restore left, nine days ago
	// Every object is old enough to be deleted if nothing names it.
	objs, _ := tgt.List(ctx, "objects/")
	for _, o := range objs {
		old := now.Add(-2 * objectGrace)
		_ = os.Chtimes(filepath.Join(tgt.Root, o.Key), old, old)
	}

	st, err := Prune(ctx, tgt, now, 7*day)
	if err != nil {
		t.Fatal(err)
	}
	if st.Snapshots != 1 || st.Binlogs != 2 || st.Objects != 1 {
		t.Fatalf("pruned %+v, want the ten-day snapshot, binlog.000002 and T0's, and the ten-day content", st)
	}
	snaps, _ := ListSnapshots(ctx, tgt, c)
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots kept, want 2", len(snaps))
	}
	logs, _ := ListBinlogs(ctx, tgt, BinlogPrefix(c.ProjectID, c.ID, "T1"))
	if len(logs) != 4 || logs[0].Name != "binlog.000003" {
		t.Fatalf("binary logs kept: %+v, want binlog.000003 to 000006", logs)
	}
	// The window's start still restores: its snapshot and binary logs are there.
	if _, err := PlanRestore(ctx, tgt, c, now.Add(-7*day)); err != nil {
		t.Fatalf("restore to the window's start: %v", err)
	}
	if _, err := PlanRestore(ctx, tgt, c, now.Add(-9*day)); !errors.Is(err, ErrOutsideWindow) {
		t.Fatalf("restore to before the window: %v, want ErrOutsideWindow", err)
	}
	// A second prune has nothing to do.
	if st, err := Prune(ctx, tgt, now, 7*day); err != nil || st != (PruneStats{}) {
		t.Fatalf("second prune: %+v, %v", st, err)
	}
}

// TestPrunePending deletes an agent's manifest that no daemon committed
// (it stopped in between) once it is as old as an unnamed object may be,
// and keeps a fresh one, which a daemon may be committing.
func TestPrunePending(t *testing.T) {
	ctx := context.Background()
	tgt := Dir{Root: t.TempDir()}
	for _, key := range []string{pendingPrefix + "cmp_a/old.json", pendingPrefix + "cmp_a/new.json"} {
		if err := SaveManifest(ctx, tgt, key, &Manifest{TakenAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * objectGrace)
	if err := os.Chtimes(filepath.Join(tgt.Root, pendingPrefix+"cmp_a/old.json"), old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := Prune(ctx, tgt, time.Now(), 7*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	left, err := tgt.List(ctx, pendingPrefix)
	if err != nil || len(left) != 1 || left[0].Key != pendingPrefix+"cmp_a/new.json" {
		t.Fatalf("pending manifests left: %+v, %v; want only the fresh one", left, err)
	}
}
