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

// planFixture stores manifests and binary logs of one compute whose
// history is described by the test, with times relative to base.
type planFixture struct {
	t    *testing.T
	tgt  Dir
	c    *store.Compute
	base time.Time
}

func newPlanFixture(t *testing.T) *planFixture {
	return &planFixture{t: t, tgt: Dir{Root: t.TempDir()}, c: &store.Compute{ID: "cmp_p", ProjectID: "prj_p"},
		base: time.Now().UTC().Add(-time.Hour).Truncate(time.Second)}
}

func (f *planFixture) at(min int) time.Time { return f.base.Add(time.Duration(min) * time.Minute) }

func (f *planFixture) snapshot(min int, timeline, binlog string, pos uint64) {
	f.t.Helper()
	m := &Manifest{TakenAt: f.at(min), Timeline: timeline, Binlog: binlog, BinlogPos: pos}
	if err := saveSnapshot(context.Background(), f.tgt, f.c, m); err != nil {
		f.t.Fatal(err)
	}
}

func (f *planFixture) binlog(timeline string, n, closedMin int) {
	f.t.Helper()
	p := filepath.Join(f.t.TempDir(), fmt.Sprintf("binlog.%06d", n))
	if err := os.WriteFile(p, []byte(fmt.Sprint(timeline, n)), 0o600); err != nil {
		f.t.Fatal(err)
	}
	at := f.at(closedMin)
	if err := os.Chtimes(p, at, at); err != nil {
		f.t.Fatal(err)
	}
	if _, err := ShipBinlog(context.Background(), f.tgt, BinlogPrefix(f.c.ProjectID, f.c.ID, timeline), p); err != nil {
		f.t.Fatal(err)
	}
}

func (f *planFixture) plan(min int) (*Plan, error) {
	return PlanRestore(context.Background(), f.tgt, f.c, f.at(min))
}

func names(p *Plan) []string {
	var out []string
	for _, b := range p.Binlogs {
		out = append(out, b.Name)
	}
	return out
}

// TestPlanRestore picks the newest snapshot at or before the time and the
// binary logs of its timeline after it, across a restore's fork, and
// refuses times the backups do not cover or a history with a hole.
func TestPlanRestore(t *testing.T) {
	f := newPlanFixture(t)
	f.snapshot(0, "A", "binlog.000002", 0)
	f.binlog("A", 3, 10)
	f.binlog("A", 4, 20)
	f.snapshot(25, "A", "", 0) // a hot backup inside binlog.000005
	f.snapshot(26, "A", "binlog.000005", 777)
	f.binlog("A", 5, 30)
	// A restore at minute 35 forks timeline B from the minute-0 snapshot.
	f.snapshot(36, "B", "binlog.000002", 0)
	f.binlog("B", 3, 40)

	cases := []struct {
		min      int
		snapshot time.Time
		binlogs  []string
		start    uint64
	}{
		{5, f.at(0), []string{"binlog.000003"}, 0},
		{15, f.at(0), []string{"binlog.000003", "binlog.000004"}, 0},
		{28, f.at(26), []string{"binlog.000005"}, 777},
		{38, f.at(36), []string{"binlog.000003"}, 0},
	}
	for _, tc := range cases {
		p, err := f.plan(tc.min)
		if err != nil {
			t.Fatalf("minute %d: %v", tc.min, err)
		}
		if !p.Snapshot.TakenAt.Equal(tc.snapshot) || fmt.Sprint(names(p)) != fmt.Sprint(tc.binlogs) || p.StartPos != tc.start {
			t.Errorf("minute %d: snapshot %s, binlogs %v from %d; want %s, %v from %d",
				tc.min, p.Snapshot.TakenAt, names(p), p.StartPos, tc.snapshot, tc.binlogs, tc.start)
		}
	}
	for _, min := range []int{-5, 45} {
		if _, err := f.plan(min); !errors.Is(err, ErrOutsideWindow) {
			t.Errorf("minute %d: %v, want ErrOutsideWindow", min, err)
		}
	}
	// Latest: every binary log after the newest snapshot.
	p, err := PlanRestore(context.Background(), f.tgt, f.c, time.Time{})
	if err != nil || !p.To.IsZero() || fmt.Sprint(names(p)) != "[binlog.000003]" || p.Snapshot.Timeline != "B" {
		t.Fatalf("latest: %+v %v", p, err)
	}

	// A missing file is a hole: no plan crosses it.
	g := newPlanFixture(t)
	g.snapshot(0, "A", "binlog.000001", 0)
	g.binlog("A", 2, 10)
	g.binlog("A", 4, 20)
	if _, err := g.plan(15); err == nil || !errors.Is(err, ErrOutsideWindow) {
		t.Fatalf("a restore across a missing binary log: %v", err)
	}
	if _, err := g.plan(5); err != nil {
		t.Fatalf("a restore before the hole: %v", err)
	}
}

// TestCatalogWritesNothing: listing the backups of a compute whose folder
// is not on this node answers, and creates nothing.
func TestCatalogWritesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "elsewhere", "data")
	s := &Service{Target: Dir{Root: t.TempDir()}, DataDir: func(*store.Compute) (string, bool) { return dir, true }}
	cat, err := s.Catalog(context.Background(), &store.Compute{ID: "cmp_x", ProjectID: "prj_x"})
	if err != nil || len(cat.Snapshots) != 0 || !cat.Latest.IsZero() {
		t.Fatalf("catalog %+v, %v", cat, err)
	}
	if _, err := os.Stat(filepath.Dir(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("listing created %s (%v)", filepath.Dir(dir), err)
	}
}
