package compute_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

// newAgentEnv is a backup service that keeps no datadir of its own and
// backs computes up through an agent, as it does on Kubernetes. The agent
// runs backup.RunJob in this process, on the local driver's datadir: the
// Pod around it is what the kubernetes driver's tests prove.
func newAgentEnv(t *testing.T, tgt backup.Target) (*env, *backup.Service, *atomic.Int32) {
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
	runs := &atomic.Int32{}
	agent := func(ctx context.Context, c *store.Compute, job []byte) ([]byte, error) {
		runs.Add(1)
		j, err := backup.ReadJob(string(job))
		if err != nil {
			return nil, err
		}
		res, err := backup.RunJob(ctx, tgt, drv.DataDir(c), j, testLogger(t))
		if err != nil {
			return nil, err
		}
		return json.Marshal(res)
	}
	svc := &backup.Service{Target: tgt, Store: st, Log: testLogger(t), MaxDelay: time.Hour, Interval: time.Hour,
		DataDir: func(*store.Compute) (string, bool) { return "", false }, Agent: agent}
	mgr := compute.New(compute.Options{Store: st, Driver: drv, Node: "test", Logger: testLogger(t),
		AfterSuspend: svc.AfterSuspend, AfterProvision: svc.AfterProvision})
	svc.Computes = mgr
	svc.Start()
	t.Cleanup(svc.Stop)
	return &env{dir: dir, st: st, drv: drv, mgr: mgr}, svc, runs
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
	time.Sleep(1100 * time.Millisecond) // the binary log's times are in seconds
	noted := time.Now()
	time.Sleep(1100 * time.Millisecond)
	mustExecAll(t, db, "DROP TABLE t")
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
	var got backup.Binlog
	deadline := time.Now().Add(30 * time.Second)
	for got.Name == "" && time.Now().Before(deadline) {
		logs, err := backup.ListBinlogs(ctx, tgt, prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range logs {
			if !b.ClosedAt.Before(written) {
				got = b
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got.Name == "" {
		t.Fatal("no binary log with the rows shipped within 30 s while the compute ran")
	}
	if st := getCompute(t, e, c.ID).State; st != store.StateActive {
		t.Fatalf("compute is %s: the files must have shipped while it ran", st)
	}
	path := filepath.Join(t.TempDir(), got.Name)
	if err := backup.FetchBinlog(ctx, tgt, got, path); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mariadb-binlog", "--base64-output=decode-rows", "-v", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "shipped_while_running") {
		t.Fatalf("mariadb-binlog of the shipped copy: %v\n%s", err, out)
	}
}
