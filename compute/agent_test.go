package compute_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/store"
)

// newAgentEnv is a backup service that keeps no datadir of its own and
// backs computes up through an agent, as it does on Kubernetes. The agent
// runs backup.RunJob in this process, on the local driver's datadir: the
// Pod around it is what the kubernetes driver's tests prove.
func newAgentEnv(t *testing.T, tgt backup.Target) (*env, *backup.Service, *atomic.Int32) {
	return newGatedAgentEnv(t, tgt, nil)
}

// newGatedAgentEnv is newAgentEnv whose agent, when gate is set, calls it
// with each job's kind before the job.
func newGatedAgentEnv(t *testing.T, tgt backup.Target, gate func(kind string)) (*env, *backup.Service, *atomic.Int32) {
	t.Helper()
	runs := &atomic.Int32{}
	e, svc := withBackups(t, func(drv *local.Driver) *backup.Service {
		agent := func(ctx context.Context, c *store.Compute, _ string, job []byte) ([]byte, error) {
			runs.Add(1)
			j, err := backup.ReadJob(string(job))
			if err != nil {
				return nil, err
			}
			if gate != nil {
				gate(j.Kind)
			}
			admin, err := drv.Admin(ctx, c)
			if err != nil {
				return nil, err
			}
			res, err := backup.RunJob(ctx, tgt, drv.DataDir(c), j, admin, testLogger(t))
			if err != nil {
				return nil, err
			}
			return json.Marshal(res)
		}
		return &backup.Service{Target: tgt, MaxDelay: time.Hour, Interval: time.Hour,
			DataDir: func(*store.Compute) (string, bool) { return "", false }, Agent: agent}
	})
	return e, svc, runs
}

// TestAgentPointInTimeRestore: through the agent, each suspend ships the
// binary logs and leaves a snapshot, and a restore to a noted time, run on
// the compute's own folder by the agent's private mariadbd, brings a
// dropped table back; the restore is itself undone.
func TestAgentPointInTimeRestore(t *testing.T) {
	ctx := context.Background()
	tgt := backup.Dir{Root: t.TempDir()}
	e, svc, runs := newAgentEnv(t, tgt)
	_, c, pw := e.project(t, "agent")
	mustExecAll(t, rootDB(t, c.Address, pw), "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t SELECT seq FROM seq_1_to_100")
	suspend(t, e, c)
	drain(t, svc)
	if n := len(listSnapshots(t, tgt, c)); n != 1 || runs.Load() != 1 {
		t.Fatalf("%d snapshots after %d agent runs; want 1 after the first suspend's", n, runs.Load())
	}
	if _, err := e.mgr.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	c = getCompute(t, e, c.ID)
	checkOpenBinlogs(t, e.drv.DataDir(c))
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
	if op.Status != store.OpSucceeded {
		t.Fatalf("restore operation %+v", op)
	}
	c = getCompute(t, e, c.ID)
	if n := countRows(t, rootDB(t, c.Address, pw)); n != 250 {
		t.Fatalf("%d rows after the restore to before the drop, want 250", n)
	}
	cat, err := svc.Catalog(ctx, c)
	if err != nil || len(cat.Snapshots) < 3 || cat.Earliest.IsZero() {
		t.Fatalf("catalog %+v, %v: want the suspend's, the kept and the restored base snapshots", cat, err)
	}

	// Undo, from the snapshot the restore kept of the data it replaced.
	if _, err := svc.RestoreTo(ctx, c, afterDrop); err != nil {
		t.Fatal(err)
	}
	c = getCompute(t, e, c.ID)
	var n int
	err = rootDB(t, c.Address, pw).QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'app' AND table_name = 't'").Scan(&n)
	if err != nil || n != 0 {
		t.Fatalf("table t exists (%d, %v) after undoing the restore; it was dropped then", n, err)
	}
}

// checkOpenBinlogs: of a running compute's binary logs, the newest alone
// is open, so that an agent that runs while a compute wakes ships only
// closed ones.
func checkOpenBinlogs(t *testing.T, dataDir string) {
	t.Helper()
	names, err := backup.IndexedBinlogs(dataDir)
	if err != nil || len(names) < 2 {
		t.Fatalf("binary logs %v, %v: want at least the suspended one and the new one", names, err)
	}
	for i, name := range names {
		open, err := backup.BinlogOpen(filepath.Join(dataDir, name))
		if err != nil || open != (i == len(names)-1) {
			t.Fatalf("%s open: %v, %v; want only the newest of %v open", name, open, err, names)
		}
	}
}

// TestAgentShipsRunningBinlogs: a compute backed up through the agent
// that keeps running still has its binary log shipped within the delay:
// the daemon rotates it and copies the closed files over the replication
// protocol. The copy is a binary log that mariadb-binlog reads, with the
// rows written.
func TestAgentShipsRunningBinlogs(t *testing.T) {
	ctx := context.Background()
	tgt := backup.Dir{Root: t.TempDir()}
	e, svc, _ := newAgentEnv(t, tgt)
	svc.Stop()
	svc.MaxDelay = 2 * time.Second
	svc.Start()
	_, c, pw := e.project(t, "running")
	suspend(t, e, c) // the first snapshot: the timeline shipped files go to
	drain(t, svc)
	if _, err := e.mgr.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	c = getCompute(t, e, c.ID)
	mustExecAll(t, rootDB(t, c.Address, pw), "CREATE TABLE shipped_while_running (id INT PRIMARY KEY)",
		"INSERT INTO shipped_while_running SELECT seq FROM seq_1_to_10")
	written := time.Now().Truncate(time.Second)
	m, err := backup.PlanRestore(ctx, tgt, c, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	prefix := backup.BinlogPrefix(c.ProjectID, c.ID, m.Snapshot.Timeline)
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		logs, err := backup.ListBinlogs(ctx, tgt, prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range logs {
			if seen[b.Name] || b.ClosedAt.Before(written) {
				continue
			}
			seen[b.Name] = true
			if shippedRows(t, tgt, b) {
				if st := getCompute(t, e, c.ID).State; st != store.StateActive {
					t.Fatalf("compute is %s: the file must have shipped while it ran", st)
				}
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no shipped binary log has the rows 30 s after they were written (shipped: %v)", seen)
}

// shippedRows reports whether the shipped binary log b, read by
// mariadb-binlog, has the rows of shipped_while_running.
func shippedRows(t *testing.T, tgt backup.Target, b backup.Binlog) bool {
	t.Helper()
	path := filepath.Join(t.TempDir(), b.Name)
	if err := backup.FetchBinlog(context.Background(), tgt, b, path); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mariadb-binlog", "--base64-output=decode-rows", "-v", path).CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-binlog cannot read the shipped %s: %v\n%s", b.Name, err, out)
	}
	return strings.Contains(string(out), "shipped_while_running")
}

// TestAgentHotBackup: a compute backed up through the agent that never
// suspends gets hot backups (mariadb-backup, run by the agent while the
// compute runs), its binary logs are shipped onto them, and a
// point-in-time restore starts from one.
func TestAgentHotBackup(t *testing.T) {
	ctx := context.Background()
	tgt := backup.Dir{Root: t.TempDir()}
	e, svc, _ := newAgentEnv(t, tgt)
	svc.Stop()
	svc.MaxDelay, svc.Interval = 2*time.Second, time.Hour
	svc.Start()
	_, c, pw := e.project(t, "hot")
	db := rootDB(t, c.Address, pw)
	mustExecAll(t, db, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t SELECT seq FROM seq_1_to_100")
	// With no snapshot yet, the first rotation takes a hot backup.
	deadline := time.Now().Add(60 * time.Second)
	for len(listSnapshots(t, tgt, c)) == 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(listSnapshots(t, tgt, c)); n != 1 {
		t.Fatalf("%d snapshots of a running compute after a minute, want its hot backup", n)
	}
	if st := getCompute(t, e, c.ID).State; st != store.StateActive {
		t.Fatalf("compute is %s, want active all along", st)
	}
	mustExecAll(t, db, "INSERT INTO t SELECT seq FROM seq_101_to_150")
	noted := noteThenDrop(t, db)
	db.Close()
	plan, err := backup.PlanRestore(ctx, tgt, c, noted)
	if err != nil && !errors.Is(err, backup.ErrOutsideWindow) {
		t.Fatal(err)
	}
	if _, err := svc.RestoreTo(ctx, c, noted); err != nil {
		t.Fatal(err)
	}
	c = getCompute(t, e, c.ID)
	if n := countRows(t, rootDB(t, c.Address, pw)); n != 150 {
		t.Fatalf("%d rows after the restore, want 150", n)
	}
	if plan, err = backup.PlanRestore(ctx, tgt, c, noted); err != nil || plan.Snapshot.BinlogPos == 0 {
		t.Fatalf("the restore's plan %+v, %v: want the hot backup's, at a binary log position", plan, err)
	}
}

// TestAgentWakeDuringBackup: a compute that wakes while the agent backs it
// up after a suspend gets no snapshot of that run (the agent read files
// mariadbd was writing), and the agent is not run again until the next
// suspend.
func TestAgentWakeDuringBackup(t *testing.T) {
	ctx := context.Background()
	tgt := backup.Dir{Root: t.TempDir()}
	started, release := make(chan struct{}, 10), make(chan struct{})
	var suspended atomic.Int32
	e, svc, _ := newGatedAgentEnv(t, tgt, func(kind string) {
		if kind == backup.JobSuspended {
			suspended.Add(1)
			started <- struct{}{}
			<-release
		}
	})
	_, c, pw := e.project(t, "woke")
	mustExecAll(t, rootDB(t, c.Address, pw), "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t SELECT seq FROM seq_1_to_100")
	suspend(t, e, c)
	<-started
	if _, err := e.mgr.Resume(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	close(release)
	drain(t, svc)
	time.Sleep(500 * time.Millisecond) // a job queued again would start now
	drain(t, svc)
	for _, snap := range listSnapshots(t, tgt, c) {
		m, err := backup.LoadManifest(ctx, tgt, snap.Key)
		if err != nil || m.BinlogPos == 0 {
			t.Fatalf("snapshot %+v (%v) is not the running compute's hot backup: the backup during which it woke must leave none", m, err)
		}
	}
	if n := suspended.Load(); n != 1 {
		t.Fatalf("the agent backed the suspend up %d times, want once", n)
	}
	c = getCompute(t, e, c.ID)
	if n := countRows(t, rootDB(t, c.Address, pw)); n != 100 {
		t.Fatalf("%d rows after the wake, want 100", n)
	}
}

// TestDumpBinlogIsTheFile: a closed binary log copied over the replication
// protocol is the server's file byte for byte, Annotate_rows events
// included (a hot backup's position is an offset into it).
func TestDumpBinlogIsTheFile(t *testing.T) {
	ctx := context.Background()
	e, _, _ := newAgentEnv(t, backup.Dir{Root: t.TempDir()})
	_, c, pw := e.project(t, "dump")
	mustExecAll(t, rootDB(t, c.Address, pw), "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)",
		"INSERT INTO t SELECT seq, REPEAT('x', seq) FROM seq_1_to_500", "UPDATE t SET v = 'y' WHERE id < 100")
	names, _, err := e.mgr.RotateBinlog(ctx, c.ID, compute.BinlogPos{})
	if err != nil || len(names) < 2 {
		t.Fatalf("rotate: %v, %v", names, err)
	}
	addr, admin, err := e.mgr.AdminAccess(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names[:len(names)-1] {
		copied := filepath.Join(t.TempDir(), name)
		if err := backup.DumpBinlog(ctx, addr, admin, name, copied); err != nil {
			t.Fatal(err)
		}
		if got, want := fileSHA256(t, copied), fileSHA256(t, filepath.Join(e.drv.DataDir(c), name)); got != want {
			t.Fatalf("the copy of %s has SHA-256 %s, the server's file %s", name, got, want)
		}
	}
}

// fileSHA256 is the hex SHA-256 of the file at p.
func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
