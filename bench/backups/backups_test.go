// Package backups_test measures what backups cost and how fast they bring
// data back: a branch of a 1 GiB suspended project (with reflinks on an
// XFS loop mount, and a plain copy), a restore of a 1 GiB project with
// 100 MiB of binary log to replay, and what the binary log costs
// sysbench's read_write. Each needs root (the loop mount, computes run as
// their own uids) and runs one iteration per setup.
package backups_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/bench"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

const (
	mib      = 1 << 20
	rowBytes = 1024 // RANDOM_BYTES' largest: incompressible rows
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// xfsMount makes a sparse XFS image with reflinks, mounts it and returns
// the mount point; it is unmounted when b ends.
func xfsMount(b *testing.B) string {
	b.Helper()
	dir := localtest.Dir(b)
	img, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	for _, cmd := range [][]string{
		{"truncate", "-s", "8G", img},
		{"mkfs.xfs", "-q", "-m", "reflink=1", img},
		{"mkdir", "-p", mnt},
		{"mount", "-o", "loop", img, mnt},
	} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v: %s (the benchmark needs root and xfsprogs: make bench installs it)", strings.Join(cmd, " "), err, out)
		}
	}
	// Computes run as their own uids: they must walk down to their folders.
	if err := os.Chmod(mnt, 0o711); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if exec.Command("umount", mnt).Run() != nil {
			_ = exec.Command("umount", "-l", mnt).Run()
		}
	})
	return mnt
}

// adminDB opens the daemon's account on a running local compute.
func adminDB(b *testing.B, d *local.Driver, c *store.Compute, addr string) *sql.DB {
	b.Helper()
	cred, err := d.Admin(context.Background(), c)
	if err != nil {
		b.Fatal(err)
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = cred.User, cred.Password, "unix", strings.TrimPrefix(addr, "unix:")
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return sql.OpenDB(conn)
}

// fill writes rows incompressible rows of 1 KiB into table app.name.
func fill(b *testing.B, db *sql.DB, name string, rows int) {
	b.Helper()
	stmts := []string{"CREATE DATABASE IF NOT EXISTS app",
		"CREATE TABLE IF NOT EXISTS app." + name + " (id INT PRIMARY KEY, v VARBINARY(1024))"}
	const chunk = 65536
	for from := 1; from <= rows; from += chunk {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO app.%s SELECT seq, RANDOM_BYTES(%d) FROM app.seq_%d_to_%d",
			name, rowBytes, from, min(from+chunk-1, rows)))
	}
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
}

func spec1Gi() store.ComputeSpec {
	return store.ComputeSpec{Resources: store.Resources{Memory: "1Gi"}}
}

// BenchmarkBranch1GiB branches a suspended compute with 1 GiB of rows:
// copy its datadir, provision the new compute from it, start it and read
// a row. On XFS the copy is reflinks; on the machine's own filesystem
// (ext4 here) it is a plain copy.
func BenchmarkBranch1GiB(b *testing.B) {
	for _, fs := range []string{"reflink", "copy"} {
		b.Run(fs, func(b *testing.B) {
			dir := localtest.Dir(b)
			if fs == "reflink" {
				dir = xfsMount(b)
			}
			branchBench(b, dir)
		})
	}
}

func branchBench(b *testing.B, dir string) {
	ctx := context.Background()
	d, err := local.New(local.Options{Dir: filepath.Join(dir, "computes"), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	src := &store.Compute{ID: "cmp_source", Spec: spec1Gi()}
	if err := d.Provision(ctx, src); err != nil {
		b.Fatal(err)
	}
	addr, err := d.Start(ctx, src)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Stop(context.Background(), src) })
	db := adminDB(b, d, src, addr)
	fill(b, db, "t", 1<<20)
	db.Close()
	if err := d.Stop(ctx, src); err != nil {
		b.Fatal(err)
	}
	size, _ := d.StorageBytes(ctx, src)
	var copyTotal, startTotal time.Duration
	b.ResetTimer()
	for i := range b.N {
		br := &store.Compute{ID: fmt.Sprintf("cmp_branch%d", i), Spec: spec1Gi()}
		t0 := time.Now()
		staged, err := d.CloneData(ctx, src)
		if err == nil {
			err = d.ProvisionFrom(ctx, br, staged)
		}
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		addr, err := d.Start(ctx, br)
		if err != nil {
			b.Fatal(err)
		}
		db := adminDB(b, d, br, addr)
		var v []byte
		if err := db.QueryRow("SELECT v FROM app.t WHERE id = 4242").Scan(&v); err != nil || len(v) != rowBytes {
			b.Fatalf("the branch's row: %d bytes, %v", len(v), err)
		}
		t2 := time.Now()
		copyTotal, startTotal = copyTotal+t1.Sub(t0), startTotal+t2.Sub(t1)
		b.StopTimer()
		db.Close()
		if err := d.Destroy(ctx, br); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	branchIsolated(b, d, src)
	b.ReportMetric(float64(copyTotal.Milliseconds())/float64(b.N), "copy-ms")
	b.ReportMetric(float64(startTotal.Milliseconds())/float64(b.N), "start-ms")
	b.ReportMetric(float64(size)/mib, "datadir-MiB")
}

// branchIsolated makes one more branch of src, runs both, and checks
// that a row written to either is not in the other.
func branchIsolated(b *testing.B, d *local.Driver, src *store.Compute) {
	ctx := context.Background()
	br := &store.Compute{ID: "cmp_branch_isolated", Spec: spec1Gi()}
	staged, err := d.CloneData(ctx, src)
	if err == nil {
		err = d.ProvisionFrom(ctx, br, staged)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = d.Destroy(context.Background(), br) }()
	dbs := map[*store.Compute]*sql.DB{}
	for _, c := range []*store.Compute{src, br} {
		addr, err := d.Start(ctx, c)
		if err != nil {
			b.Fatal(err)
		}
		dbs[c] = adminDB(b, d, c, addr)
		defer dbs[c].Close()
	}
	for c, id := range map[*store.Compute]int{src: -1, br: -2} {
		if _, err := dbs[c].Exec("INSERT INTO app.t VALUES (?, 'mine')", id); err != nil {
			b.Fatal(err)
		}
	}
	for c, want := range map[*store.Compute]string{src: "-1", br: "-2"} {
		var ids string
		if err := dbs[c].QueryRow("SELECT GROUP_CONCAT(id) FROM app.t WHERE id < 0").Scan(&ids); err != nil || ids != want {
			b.Fatalf("%s sees rows %q written below 0, want only its own (%s): %v", c.ID, ids, want, err)
		}
	}
}

// BenchmarkRestore1GiB restores a compute with 1 GiB of rows to the
// latest time its backups reach: its snapshot, then 100 MiB of binary log
// written after it replayed. The restore first keeps the current data as
// a snapshot, as every restore does; that is in the time.
func BenchmarkRestore1GiB(b *testing.B) {
	ctx := context.Background()
	for i := range b.N {
		b.StopTimer()
		mgr, svc, c, binlogMiB := restoreSetup(b, i)
		b.StartTimer()
		op, err := svc.RestoreTo(ctx, c, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(binlogMiB, "binlog-MiB")
		b.ReportMetric(op.DurationMS/1000, "restore-op-s")
		_, _ = mgr.Destroy(ctx, c.ID, compute.ReasonAPI)
		svc.Stop()
		b.StartTimer()
	}
}

// restoreSetup makes a compute with 1 GiB of rows, a snapshot of it, and
// 100 MiB of binary log after the snapshot, all shipped.
func restoreSetup(b *testing.B, i int) (*compute.Manager, *backup.Service, *store.Compute, float64) {
	ctx := context.Background()
	dir := localtest.Dir(b)
	st, err := sqlite.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	d, err := local.New(local.Options{Dir: filepath.Join(dir, "computes"), Binlog: true, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	tgt := backup.Dir{Root: filepath.Join(dir, "backups")}
	svc := &backup.Service{Target: tgt, Store: st, Log: quiet, MaxDelay: time.Second, Staging: d.Staging,
		DataDir: func(c *store.Compute) (string, bool) { return d.DataDir(c), true }}
	mgr := compute.New(compute.Options{Store: st, Driver: d, Node: "bench", Logger: quiet,
		AfterSuspend: svc.AfterSuspend, AfterProvision: svc.AfterProvision})
	svc.Computes = mgr
	svc.Start()
	p := &store.Project{ID: store.NewID("prj"), Name: fmt.Sprintf("restore%d", i), CreatedAt: store.Now(), UpdatedAt: store.Now()}
	if err := st.CreateProject(ctx, p); err != nil {
		b.Fatal(err)
	}
	c, _, err := mgr.Create(ctx, p.ID, spec1Gi())
	if err != nil {
		b.Fatal(err)
	}
	db := adminDB(b, d, c, c.Address)
	fill(b, db, "t", 1<<20)
	db.Close()
	if _, _, err := mgr.Suspend(ctx, c.ID, compute.ReasonAPI); err != nil {
		b.Fatal(err)
	}
	drainCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	svc.Drain(drainCtx)
	cancel()
	if _, err := mgr.Resume(ctx, c.ID); err != nil {
		b.Fatal(err)
	}
	c, _ = st.GetCompute(ctx, c.ID)
	db = adminDB(b, d, c, c.Address)
	fill(b, db, "u", 100*1024) // ~100 MiB of row events
	db.Close()
	time.Sleep(3 * time.Second) // a rotation ships it
	c, _ = st.GetCompute(ctx, c.ID)
	plan, err := backup.PlanRestore(ctx, tgt, c, time.Time{})
	if err != nil {
		b.Fatal(err)
	}
	var replay int64 // stored compressed; random rows do not compress
	for _, l := range plan.Binlogs {
		replay += l.Stored
	}
	return mgr, svc, c, float64(replay) / mib
}

// BenchmarkBinlogCost runs sysbench's oltp_read_write against two
// computes side by side, with the binary log (ROW, sync_binlog=1) and
// without, alternating 10-second runs, and reports each one's median
// transactions per second and their ratio.
func BenchmarkBinlogCost(b *testing.B) {
	ctx := context.Background()
	targets := map[bool]bench.Target{}
	for _, on := range []bool{false, true} {
		dir := localtest.Dir(b)
		d, err := local.New(local.Options{Dir: filepath.Join(dir, "computes"), Binlog: on, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		c := &store.Compute{ID: fmt.Sprintf("cmp_binlog_%v", on), Spec: spec1Gi()}
		if err := d.Provision(ctx, c); err != nil {
			b.Fatal(err)
		}
		addr, err := d.Start(ctx, c)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = d.Stop(context.Background(), c) })
		db := adminDB(b, d, c, addr)
		if _, err := db.Exec("CREATE DATABASE " + bench.SysbenchDB); err != nil {
			b.Fatal(err)
		}
		db.Close()
		cred, _ := d.Admin(ctx, c)
		t := bench.Target{Name: fmt.Sprintf("binlog=%v", on), Socket: strings.TrimPrefix(addr, "unix:"), User: cred.User, Pass: cred.Password}
		if err := bench.SysbenchPrepare(ctx, t); err != nil {
			b.Fatal(err)
		}
		targets[on] = t
	}
	for _, threads := range []int{1, 4} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			tps := map[bool][]float64{}
			for range 3 {
				for _, on := range []bool{false, true} {
					r, err := bench.SysbenchRun(ctx, targets[on], "oltp_read_write", threads, 10*time.Second)
					if err != nil {
						b.Fatal(err)
					}
					tps[on] = append(tps[on], r.TPS)
				}
			}
			off, on := bench.Median(tps[false]), bench.Median(tps[true])
			b.ReportMetric(off, "tps-binlog-off")
			b.ReportMetric(on, "tps-binlog-on")
			b.ReportMetric(on/off, "on/off")
		})
	}
}
