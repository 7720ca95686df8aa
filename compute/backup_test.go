package compute_test

import (
	"context"
	"database/sql"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// gatedTarget holds every Put until open is closed, once armed.
type gatedTarget struct {
	backup.Dir
	mu      sync.Mutex
	armed   bool
	waiting chan struct{} // closed at the first held Put
	open    chan struct{}
}

func (g *gatedTarget) arm() {
	g.mu.Lock()
	g.armed, g.waiting, g.open = true, make(chan struct{}), make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedTarget) Put(ctx context.Context, key string, r io.Reader) error {
	g.mu.Lock()
	armed, waiting, open := g.armed, g.waiting, g.open
	if armed {
		g.armed = false
		close(waiting)
	}
	g.mu.Unlock()
	if armed {
		<-open
	}
	return g.Dir.Put(ctx, key, r)
}

// TestSnapshotsAfterSuspend: a clean suspend leaves a snapshot that
// restores the compute's rows; an upload during which the compute wakes is
// abandoned, so the newest snapshot is never one mariadbd wrote into.
func TestSnapshotsAfterSuspend(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "")
	tgt := &gatedTarget{Dir: backup.Dir{Root: t.TempDir()}}
	snap := &backup.Snapshotter{Target: tgt, Store: e.st, Log: testLogger(t),
		Folder: func(c *store.Compute) (string, bool) { return e.drv.Folder(c), true }}
	snap.Start()
	t.Cleanup(snap.Stop)
	e.mgr = compute.New(compute.Options{Store: e.st, Driver: e.drv, Node: "test", Logger: testLogger(t), AfterSuspend: snap.AfterSuspend})
	_, c, pw := e.project(t, "snap")
	db := rootDB(t, c.Address, pw)
	mustExecAll(t, db, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t SELECT seq FROM seq_1_to_100")

	if _, _, err := e.mgr.Suspend(ctx, c.ID, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	snap.Wait()
	first, err := backup.LoadManifest(ctx, tgt, backup.LatestKey(c))
	if err != nil {
		t.Fatalf("no snapshot after a clean suspend: %v", err)
	}

	// More rows; the next upload is held until the compute has woken.
	if _, err := e.mgr.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	mustExecAll(t, rootDB(t, c.Address, pw), "INSERT INTO t SELECT seq FROM seq_101_to_200")
	tgt.arm()
	if _, _, err := e.mgr.Suspend(ctx, c.ID, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tgt.waiting:
	case <-time.After(30 * time.Second):
		t.Fatal("no upload began after a suspend with new rows")
	}
	if _, err := e.mgr.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	close(tgt.open)
	snap.Wait()
	latest, err := backup.LoadManifest(ctx, tgt, backup.LatestKey(c))
	if err != nil || !latest.TakenAt.Equal(first.TakenAt) {
		t.Fatalf("after an upload during which the compute woke, the newest snapshot is %v (%v); want the first one, %v", latest.TakenAt, err, first.TakenAt)
	}

	// The first snapshot restores the first 100 rows.
	if _, _, err := e.mgr.Suspend(ctx, c.ID, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
	snap.Wait()
	folder := e.drv.Folder(c)
	if err := os.RemoveAll(folder); err != nil {
		t.Fatal(err)
	}
	if err := backup.Restore(ctx, tgt, first, folder); err != nil {
		t.Fatal(err)
	}
	res, err := e.mgr.Wake(ctx, c.ProjectID)
	if err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, rootDB(t, res.Address, pw)); n != 100 {
		t.Fatalf("restored compute has %d rows, want the snapshot's 100", n)
	}
}

func mustExecAll(t testing.TB, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
