package compute_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/backup/s3test"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/sqlite"
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

// newBackupEnv is newEnv with the binary log on and a backup service
// shipping to t every maxDelay, and taking hot backups every interval.
func newBackupEnv(t *testing.T, tgt backup.Target, maxDelay, interval time.Duration) (*env, *backup.Service) {
	t.Helper()
	return withBackups(t, func(drv *local.Driver) *backup.Service {
		return &backup.Service{Target: tgt, MaxDelay: maxDelay, Interval: interval,
			DataDir: func(c *store.Compute) (string, bool) { return drv.DataDir(c), true }, Staging: drv.Staging}
	})
}

// withBackups starts a manager on a local driver with the binary log on,
// and the backup service svc makes for its driver, started.
func withBackups(t *testing.T, svc func(*local.Driver) *backup.Service) (*env, *backup.Service) {
	t.Helper()
	dir := localtest.Dir(t)
	st, err := sqlite.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	drv, err := local.New(local.Options{Dir: filepath.Join(dir, "computes"), StopTimeout: 30 * time.Second,
		Binlog: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s := svc(drv)
	s.Store, s.Log = st, testLogger(t)
	mgr := compute.New(compute.Options{Store: st, Driver: drv, Node: "test", Logger: testLogger(t),
		AfterSuspend: s.AfterSuspend, AfterProvision: s.AfterProvision})
	s.Computes = mgr
	s.Start()
	t.Cleanup(s.Stop)
	return &env{dir: dir, st: st, drv: drv, mgr: mgr}, s
}

// noteThenDrop returns a time a whole second clear of the writes before
// and after it (the binary log's times are in seconds), then drops table
// t.
func noteThenDrop(t *testing.T, db *sql.DB) time.Time {
	t.Helper()
	time.Sleep(1100 * time.Millisecond)
	noted := time.Now()
	time.Sleep(1100 * time.Millisecond)
	mustExecAll(t, db, "DROP TABLE t")
	return noted
}

func drain(t *testing.T, svc *backup.Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	svc.Drain(ctx)
}

// TestSnapshotsAfterSuspend: a clean suspend leaves a snapshot; an upload
// during which the compute wakes is abandoned, so no snapshot is ever one
// mariadbd wrote into.
func TestSnapshotsAfterSuspend(t *testing.T) {
	ctx := context.Background()
	tgt := &gatedTarget{Dir: backup.Dir{Root: t.TempDir()}}
	e, svc := newBackupEnv(t, tgt, time.Hour, time.Hour)
	_, c, pw := e.project(t, "snap")
	mustExecAll(t, rootDB(t, c.Address, pw), "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t SELECT seq FROM seq_1_to_100")
	suspend(t, e, c)
	drain(t, svc)
	if snaps := listSnapshots(t, tgt, c); len(snaps) != 2 {
		t.Fatalf("%d snapshots after a clean suspend, want 2 (the first, at creation, and the suspend's)", len(snaps))
	}

	// More rows; the next upload is held until the compute has woken.
	if _, err := e.mgr.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	mustExecAll(t, rootDB(t, c.Address, pw), "INSERT INTO t SELECT seq FROM seq_101_to_200")
	tgt.arm()
	suspend(t, e, c)
	select {
	case <-tgt.waiting:
	case <-time.After(30 * time.Second):
		t.Fatal("no upload began after a suspend with new rows")
	}
	if _, err := e.mgr.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	close(tgt.open)
	drain(t, svc)
	if snaps := listSnapshots(t, tgt, c); len(snaps) != 2 {
		t.Fatalf("%d snapshots after an upload during which the compute woke, want still 2", len(snaps))
	}

	// A suspend that comes while an upload runs is snapshotted after it.
	c = getCompute(t, e, c.ID)
	mustExecAll(t, rootDB(t, c.Address, pw), "INSERT INTO t SELECT seq FROM seq_201_to_300")
	tgt.arm()
	suspend(t, e, c)
	<-tgt.waiting
	if _, err := e.mgr.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	c = getCompute(t, e, c.ID)
	mustExecAll(t, rootDB(t, c.Address, pw), "INSERT INTO t SELECT seq FROM seq_301_to_400")
	suspend(t, e, c)
	close(tgt.open)
	drain(t, svc)
	if snaps := listSnapshots(t, tgt, c); len(snaps) != 3 {
		t.Fatalf("%d snapshots after a suspend during an upload, want 3 (its own after the abandoned one)", len(snaps))
	}
}

// TestPointInTimeRestore: rows inserted, the time noted, the table
// dropped; a restore to the noted time brings the table and its rows back,
// from a snapshot and the binary logs shipped after it. The restore
// itself is undone by restoring to a time after the drop.
func TestPointInTimeRestore(t *testing.T) {
	ctx := context.Background()
	tgt := backup.Dir{Root: t.TempDir()}
	e, svc := newBackupEnv(t, tgt, time.Second, time.Hour)
	_, c, pw := e.project(t, "pitr")
	mustExecAll(t, rootDB(t, c.Address, pw), "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t SELECT seq FROM seq_1_to_100")
	suspend(t, e, c) // the snapshot
	drain(t, svc)
	if _, err := e.mgr.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	c = getCompute(t, e, c.ID)
	db := rootDB(t, c.Address, pw)
	mustExecAll(t, db, "INSERT INTO t SELECT seq FROM seq_101_to_250")
	noted := noteThenDrop(t, db)
	time.Sleep(1100 * time.Millisecond)
	afterDrop := time.Now()
	db.Close()

	op, err := svc.RestoreTo(ctx, c, noted)
	if err != nil {
		t.Fatal(err)
	}
	if op.Action != store.ActionRestore || op.Status != store.OpSucceeded {
		t.Fatalf("restore operation %+v", op)
	}
	c = getCompute(t, e, c.ID)
	if c.State != store.StateActive {
		t.Fatalf("compute is %s after the restore, want active", c.State)
	}
	if n := countRows(t, rootDB(t, c.Address, pw)); n != 250 {
		t.Fatalf("%d rows after the restore to before the drop, want 250", n)
	}

	// Undo: back to after the drop, on the timeline the restore left.
	if _, err := svc.RestoreTo(ctx, c, afterDrop); err != nil {
		t.Fatal(err)
	}
	c = getCompute(t, e, c.ID)
	var n int
	err = rootDB(t, c.Address, pw).QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'app' AND table_name = 't'").Scan(&n)
	if err != nil || n != 0 {
		t.Fatalf("table t exists (%d, %v) after undoing the restore; it was dropped then", n, err)
	}

	// And forward again on the restored timeline: the first restore's
	// result is itself restorable.
	if _, err := svc.RestoreTo(ctx, c, noted); err != nil {
		t.Fatal(err)
	}
	c = getCompute(t, e, c.ID)
	if n := countRows(t, rootDB(t, c.Address, pw)); n != 250 {
		t.Fatalf("%d rows after restoring to before the drop again, want 250", n)
	}
	cat, err := svc.Catalog(ctx, c)
	if err != nil || len(cat.Snapshots) < 3 || cat.Earliest.IsZero() || cat.Latest.Before(cat.Earliest) {
		t.Fatalf("catalog %+v, %v", cat, err)
	}
}

// TestHotBackupRestore: a compute that never suspends gets hot backups
// (mariadb-backup) every interval, and a point-in-time restore starts from
// the newest one, replaying its binary log from the position it stopped at.
func TestHotBackupRestore(t *testing.T) {
	ctx := context.Background()
	tgt := backup.Dir{Root: t.TempDir()}
	e, svc := newBackupEnv(t, tgt, time.Second, 2*time.Second)
	_, c, pw := e.project(t, "hot")
	db := rootDB(t, c.Address, pw)
	mustExecAll(t, db, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t SELECT seq FROM seq_1_to_100")
	first := len(listSnapshots(t, tgt, c))
	deadline := time.Now().Add(60 * time.Second)
	for len(listSnapshots(t, tgt, c)) == first {
		if time.Now().After(deadline) {
			t.Fatal("no hot backup of a running compute within 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustExecAll(t, db, "INSERT INTO t SELECT seq FROM seq_101_to_150")
	noted := noteThenDrop(t, db)
	db.Close()
	if c = getCompute(t, e, c.ID); c.State != store.StateActive {
		t.Fatalf("compute is %s; the test needs it never suspended", c.State)
	}
	if _, err := svc.RestoreTo(ctx, c, noted); err != nil {
		t.Fatal(err)
	}
	c = getCompute(t, e, c.ID)
	if n := countRows(t, rootDB(t, c.Address, pw)); n != 150 {
		t.Fatalf("%d rows after the restore, want 150", n)
	}
	plan, err := backup.PlanRestore(ctx, tgt, c, noted)
	if err != nil || plan.StartPos == 0 || plan.Snapshot.BinlogPos == 0 {
		t.Fatalf("the restore to %s did not start from a hot backup: %+v, %v", noted, plan, err)
	}
}

// TestRestoreRefusals: a time before the first snapshot and a corrupted
// object each fail with a clear error, and the compute keeps its data.
func TestRestoreRefusals(t *testing.T) {
	ctx := context.Background()
	tgt := backup.Dir{Root: t.TempDir()}
	e, svc := newBackupEnv(t, tgt, time.Hour, time.Hour)
	before := time.Now().Add(-time.Hour)
	_, c, pw := e.project(t, "refuse")
	mustExecAll(t, rootDB(t, c.Address, pw), "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t SELECT seq FROM seq_1_to_10")
	suspend(t, e, c)
	drain(t, svc)
	if _, err := svc.RestoreTo(ctx, c, before); !errors.Is(err, backup.ErrOutsideWindow) {
		t.Fatalf("restore to before the first snapshot: %v, want ErrOutsideWindow", err)
	}
	// Damage every stored object: the restore must notice.
	objs, err := tgt.List(ctx, "objects/")
	if err != nil || len(objs) == 0 {
		t.Fatalf("objects: %d, %v", len(objs), err)
	}
	for _, o := range objs {
		p := filepath.Join(tgt.Root, filepath.FromSlash(o.Key))
		if err := os.WriteFile(p, []byte("not zstd"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err = svc.RestoreTo(ctx, c, time.Now())
	if !errors.Is(err, backup.ErrCorrupt) {
		t.Fatalf("restore from corrupted objects: %v, want ErrCorrupt", err)
	}
	res, err := e.mgr.Wake(ctx, c.ProjectID)
	if err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, rootDB(t, res.Address, pw)); n != 10 {
		t.Fatalf("%d rows after a failed restore, want the 10 it had", n)
	}
}

func suspend(t *testing.T, e *env, c *store.Compute) {
	t.Helper()
	if _, _, err := e.mgr.Suspend(context.Background(), c.ID, compute.ReasonAPI); err != nil {
		t.Fatal(err)
	}
}

func getCompute(t *testing.T, e *env, id string) *store.Compute {
	t.Helper()
	c, err := e.st.GetCompute(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func listSnapshots(t *testing.T, tgt backup.Target, c *store.Compute) []backup.SnapshotRef {
	t.Helper()
	snaps, err := backup.ListSnapshots(context.Background(), tgt, c)
	if err != nil {
		t.Fatal(err)
	}
	return snaps
}

func mustExecAll(t testing.TB, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestObjectStoreOutage stops a real S3 server (versitygw) while a
// compute suspends and wakes: the suspends and wakes go on, the service
// reports itself behind, and once the server is back every binary log of
// the outage is uploaded, so a restore reaches a time inside it.
func TestObjectStoreOutage(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	tgt, err := backup.NewS3(ctx, srv.Options("outage"))
	if err != nil {
		t.Fatal(err)
	}
	e, svc := newBackupEnv(t, tgt, time.Second, time.Hour)
	met := backup.NewMetrics()
	svc.Metrics = met
	_, c, pw := e.project(t, "outage")
	mustExecAll(t, rootDB(t, c.Address, pw), "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t SELECT seq FROM seq_1_to_100")
	suspend(t, e, c)
	drain(t, svc)

	srv.Stop()
	for i := range 3 {
		if _, err := e.mgr.Resume(ctx, c.ID); err != nil {
			t.Fatalf("resume during the outage: %v", err)
		}
		c = getCompute(t, e, c.ID)
		mustExecAll(t, rootDB(t, c.Address, pw), fmt.Sprintf("INSERT INTO t VALUES (%d)", 1000+i))
		suspend(t, e, c)
	}
	waitGauge(t, met, "serverlessd_backup_behind_computes", 1)
	time.Sleep(1100 * time.Millisecond)
	noted := time.Now() // after every row of the outage
	time.Sleep(1100 * time.Millisecond)

	srv.Restart()
	waitGauge(t, met, "serverlessd_backup_behind_computes", 0)
	drain(t, svc)
	if _, err := e.mgr.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	c = getCompute(t, e, c.ID)
	mustExecAll(t, rootDB(t, c.Address, pw), "DROP TABLE t")
	if _, err := svc.RestoreTo(ctx, c, noted); err != nil {
		t.Fatal(err)
	}
	c = getCompute(t, e, c.ID)
	if n := countRows(t, rootDB(t, c.Address, pw)); n != 103 {
		t.Fatalf("%d rows after restoring to the end of the outage, want 103", n)
	}
}

// waitGauge waits up to a minute for a gauge of met to read want.
func waitGauge(t *testing.T, met *backup.Metrics, name string, want float64) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(met.Collectors()...)
	deadline := time.Now().Add(time.Minute)
	for {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == name && f.GetMetric()[0].GetGauge().GetValue() == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never read %v", name, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRecoverShipsLeftBinlogs: a daemon that stopped before shipping a
// suspended compute's binary logs leaves them to the next one, whose
// Recover ships them.
func TestRecoverShipsLeftBinlogs(t *testing.T) {
	ctx := context.Background()
	tgt := backup.Dir{Root: t.TempDir()}
	e, svc := newBackupEnv(t, tgt, time.Hour, time.Hour)
	_, c, pw := e.project(t, "left")
	mustExecAll(t, rootDB(t, c.Address, pw), "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t SELECT seq FROM seq_1_to_10")
	svc.Stop() // the daemon dies: nothing ships the suspend's binary log
	suspend(t, e, c)
	if logs, _ := tgt.List(ctx, "binlogs/"); len(logs) != 0 {
		t.Fatalf("%d binary logs shipped by a stopped service", len(logs))
	}
	next := &backup.Service{Target: tgt, Store: e.st, Log: testLogger(t), Staging: e.drv.Staging,
		DataDir: func(c *store.Compute) (string, bool) { return e.drv.DataDir(c), true }}
	next.Start()
	next.Recover(e.st)
	deadline := time.Now().Add(30 * time.Second)
	for {
		logs, _ := tgt.List(ctx, "binlogs/")
		if len(logs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Recover shipped no binary log of the suspended compute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	next.Stop()
}
