package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/backup/s3test"
)

// backupEnv turns backups on, with binary logs shipped every second.
var backupEnv = []string{"SERVERLESSD_BACKUP_ENABLED=true", "SERVERLESSD_BACKUP_BINLOG_MAX_DELAY=1s"}

// backupsOut is GET /projects/{id}/backups.
type backupsOut struct {
	Backups struct {
		Snapshots []struct {
			TakenAt time.Time `json:"taken_at"`
		} `json:"snapshots"`
		Earliest time.Time `json:"earliest"`
		Latest   time.Time `json:"latest"`
	} `json:"backups"`
}

// newBackupProject creates a project with a 128Mi compute on a daemon
// with backups on.
func newBackupProject(t *testing.T, d *daemon, name string) (projectOut, computeOut) {
	t.Helper()
	return newBackupProjectMem(t, d, name, "128Mi")
}

// newBackupProjectMem is newBackupProject with a compute of memory mem.
func newBackupProjectMem(t *testing.T, d *daemon, name, mem string) (projectOut, computeOut) {
	t.Helper()
	var p projectOut
	if st := d.postJSON(t, "/api/v1/projects", `{"name":"`+name+`"}`, &p); st != 201 {
		t.Fatalf("create project: %d", st)
	}
	var c computeOut
	if st := d.postJSON(t, "/api/v1/projects/"+name+"/compute", `{"config":{"resources":{"memory":"`+mem+`"}}}`, &c); st != 201 {
		t.Fatalf("create compute: %d", st)
	}
	return p, c
}

// waitSnapshots waits until the project has n snapshots.
func waitSnapshots(t *testing.T, d *daemon, project string, n int) backupsOut {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var b backupsOut
		if st := d.getJSON("/api/v1/projects/"+project+"/backups", &b); st != 200 {
			t.Fatalf("list backups: %d", st)
		}
		if len(b.Backups.Snapshots) >= n {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d snapshots of %s after 60 s, want %d; daemon log:\n%s", len(b.Backups.Snapshots), project, n, d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLatest waits until the project's backups reach the time at (an RFC
// 3339 string): its binary logs up to then are shipped.
func waitLatest(t *testing.T, d *daemon, project, at string) {
	t.Helper()
	want, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var b backupsOut
		d.getJSON("/api/v1/projects/"+project+"/backups", &b)
		if !b.Backups.Latest.Before(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backups of %s reach %s, not %s, 2 minutes on; log:\n%s", project, b.Backups.Latest, want, d.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPointInTimeRestoreCLI: rows written with the mariadb client, the
// time noted, the table dropped; `serverlessd backup restore --to` the
// noted time brings every row back, and `backup list` shows the window.
func TestPointInTimeRestoreCLI(t *testing.T) {
	d := startDaemon(t, "", backupEnv...)
	p, c := newBackupProject(t, d, "pitr")
	sqlRun := func(q string) string {
		t.Helper()
		out, err := d.mariadb(t, p.Role.MySQLUser, p.Role.Password, "-e", q)
		if err != nil {
			t.Fatalf("%s: %v %s", q, err, out)
		}
		return out
	}
	sqlRun("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t SELECT seq FROM shop.seq_1_to_500")
	if st := d.postJSON(t, "/api/v1/projects/pitr/compute/"+c.Compute.ID+"/suspend", "", &c); st != 200 {
		t.Fatalf("suspend: %d", st)
	}
	waitSnapshots(t, d, "pitr", 1)
	sqlRun("INSERT INTO shop.t SELECT seq FROM shop.seq_501_to_800") // wakes it
	time.Sleep(1100 * time.Millisecond)                              // the binary log counts whole seconds
	noted := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(1100 * time.Millisecond)
	sqlRun("DROP TABLE shop.t")

	out := d.mustCLI("backup", "restore", "pitr", "--to", noted)
	if !strings.Contains(out, "restore succeeded") || !strings.Contains(out, "active") {
		t.Fatalf("backup restore printed:\n%s", out)
	}
	if n := sqlRun("SELECT COUNT(*) FROM shop.t"); n != "800" {
		t.Fatalf("%s rows after the restore, want 800", n)
	}
	list := d.mustCLI("backup", "list", "pitr")
	if !strings.Contains(list, "restorable from:") || strings.Count(list, "\n20") < 2 {
		t.Fatalf("backup list printed:\n%s", list)
	}
	if out, err := d.cli("backup", "restore", "pitr", "--to", "2001-01-01T00:00:00Z"); err == nil || !strings.Contains(out, "no snapshot") {
		t.Fatalf("restore before the first snapshot: %v\n%s", err, out)
	}
}

// TestDisasterRestore writes rows through the proxy in a loop, across
// suspends and resumes, then kills mariadbd and deletes its datadir: a
// restore to the latest backup brings back every transaction committed
// more than binlog_max_delay before the loss. It prints the RPO.
func TestDisasterRestore(t *testing.T) {
	t.Run("dir", func(t *testing.T) { disasterRestore(t, backupEnv) })
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		d := disasterRestore(t, append([]string{"SERVERLESSD_BACKUP_TARGET=s3",
			"SERVERLESSD_BACKUP_S3_ENDPOINT=" + srv.Endpoint, "SERVERLESSD_BACKUP_S3_BUCKET=" + srv.Bucket,
			"SERVERLESSD_BACKUP_S3_PREFIX=e2e", "SERVERLESSD_BACKUP_S3_ACCESS_KEY_ID=" + srv.AccessKey,
			"SERVERLESSD_BACKUP_S3_SECRET_ACCESS_KEY=" + srv.SecretKey}, backupEnv...))
		if strings.Contains(d.log.String(), srv.SecretKey) {
			t.Fatal("the daemon logged the S3 secret key")
		}
	})
}

func disasterRestore(t *testing.T, env []string) *daemon {
	d := startDaemon(t, "", env...)
	p, c := newBackupProject(t, d, "disaster")
	db := d.openDB(t, p.Role.MySQLUser, p.Role.Password, "")
	db.SetMaxOpenConns(1)
	for _, q := range []string{"CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY, at DATETIME(6))"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	// The first snapshot, taken while nobody writes.
	if st := d.postJSON(t, "/api/v1/projects/disaster/compute/"+c.Compute.ID+"/suspend", "", &c); st != 200 {
		t.Fatalf("suspend: %d", st)
	}
	waitSnapshots(t, d, "disaster", 1)
	w := startWriter(db)
	for range 3 {
		time.Sleep(700 * time.Millisecond)
		if st := d.postJSON(t, "/api/v1/projects/disaster/compute/"+c.Compute.ID+"/suspend", "", &c); st != 200 {
			t.Fatalf("suspend: %d", st)
		}
	}
	time.Sleep(3 * time.Second)
	committed := w.stop(t)

	// The loss: mariadbd killed, its datadir deleted.
	lost := time.Now()
	dataDir := filepath.Join(d.dataDir, "computes", c.Compute.ID, "data")
	for _, pid := range mariadbdPIDs(t, filepath.Join(d.dataDir, "computes", c.Compute.ID)) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	var r struct {
		Operation struct {
			Status     string  `json:"status"`
			DurationMS float64 `json:"duration_ms"`
		} `json:"operation"`
	}
	if st := d.postJSON(t, "/api/v1/projects/disaster/restore", `{"to":"latest"}`, &r); st != 200 || r.Operation.Status != "succeeded" {
		t.Fatalf("restore: %d %+v; daemon log:\n%s", st, r, d.log)
	}
	have := map[int]bool{}
	rows, err := db.Query("SELECT id FROM shop.t")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		have[id] = true
	}
	rows.Close()
	var rpo time.Duration
	missing := 0
	for _, row := range committed {
		if have[row.id] {
			continue
		}
		missing++
		rpo = max(rpo, lost.Sub(row.at))
		if lost.Sub(row.at) > time.Second { // binlog_max_delay
			t.Errorf("row %d, committed %s before the loss, is missing", row.id, lost.Sub(row.at).Round(time.Millisecond))
		}
	}
	t.Logf("disaster: %d rows committed over %d suspends; %d of them lost; RPO %s (binlog_max_delay 1s); restore took %.0f ms",
		len(committed), 3, missing, rpo.Round(time.Millisecond), r.Operation.DurationMS)
	return d
}

// writer inserts rows one at a time and records each commit.
type writer struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	rows   []committedRow
	err    error
}

type committedRow struct {
	id int
	at time.Time
}

func startWriter(db *sql.DB) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{cancel: cancel}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for id := 1; ctx.Err() == nil; id++ {
			if _, err := db.ExecContext(ctx, "INSERT INTO shop.t VALUES (?, NOW(6))", id); err != nil {
				if ctx.Err() == nil {
					w.mu.Lock()
					w.err = err
					w.mu.Unlock()
				}
				return
			}
			w.mu.Lock()
			w.rows = append(w.rows, committedRow{id, time.Now()})
			w.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return w
}

// stop ends the writes and returns the committed rows; a failed write
// (the client saw an error across a suspend) fails the test.
func (w *writer) stop(t *testing.T) []committedRow {
	t.Helper()
	w.cancel()
	w.wg.Wait()
	if w.err != nil {
		t.Fatalf("a write failed: %v", w.err)
	}
	sort.Slice(w.rows, func(i, j int) bool { return w.rows[i].id < w.rows[j].id })
	return w.rows
}

// branchOut is POST /projects/{id}/branches.
type branchOut struct {
	Project struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"project"`
	Roles []struct {
		Name      string `json:"name"`
		Password  string `json:"password"`
		MySQLUser string `json:"mysql_user"`
	} `json:"roles"`
}

func (b branchOut) role(t *testing.T, name string) (user, pw string) {
	t.Helper()
	for _, r := range b.Roles {
		if r.Name == name {
			return r.MySQLUser, r.Password
		}
	}
	t.Fatalf("branch %s has no role %s: %+v", b.Project.Name, name, b.Roles)
	return "", ""
}

// TestBranches: a branch now and a branch at a past time answer with the
// source's rows of that moment; writes to either are invisible to the
// others; roles come along with new passwords.
func TestBranches(t *testing.T) {
	d := startDaemon(t, "", backupEnv...)
	p, c := newBackupProjectMem(t, d, "shop", "512Mi")
	q := func(user, pw, sql string) string {
		t.Helper()
		out, err := d.mariadb(t, user, pw, "-e", sql)
		if err != nil {
			t.Fatalf("%s as %s: %v %s", sql, user, err, out)
		}
		return out
	}
	root, rootPW := p.Role.MySQLUser, p.Role.Password
	q(root, rootPW, "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t SELECT seq FROM app.seq_1_to_100")
	// 128 MiB of incompressible rows, so that the branches copy a real
	// datadir (BenchmarkBranch1GiB branches 1 GiB; here the disk is shared
	// with the other packages' tests, some of them timed).
	q(root, rootPW, "CREATE TABLE app.big (id INT PRIMARY KEY, v VARBINARY(1024))")
	// In statements of 16 MiB: a restore replays each statement's row
	// events in one piece, which must fit in a session's memory.
	for from := 1; from <= 1<<17; from += 1 << 14 {
		q(root, rootPW, fmt.Sprintf("INSERT INTO app.big SELECT seq, RANDOM_BYTES(1024) FROM app.seq_%d_to_%d", from, from+1<<14-1))
	}
	var app struct {
		Credentials struct {
			MySQLUser string `json:"mysql_user"`
			Password  string `json:"password"`
		} `json:"credentials"`
	}
	if st := d.postJSON(t, "/api/v1/projects/shop/roles", `{"name":"app"}`, &app); st != 201 {
		t.Fatalf("create role: %d", st)
	}
	if st := d.postJSON(t, "/api/v1/projects/shop/compute/"+c.Compute.ID+"/suspend", "", &c); st != 200 {
		t.Fatalf("suspend: %d", st)
	}
	waitSnapshots(t, d, "shop", 1)
	q(root, rootPW, "INSERT INTO app.t SELECT seq FROM app.seq_101_to_150")
	time.Sleep(1100 * time.Millisecond)
	noted := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(1100 * time.Millisecond)
	q(root, rootPW, "INSERT INTO app.t SELECT seq FROM app.seq_151_to_200")
	waitLatest(t, d, "shop", noted)

	var now, then branchOut
	if st := d.postJSON(t, "/api/v1/projects/shop/branches", `{"name":"shop-dev","at":"now"}`, &now); st != 201 {
		t.Fatalf("branch now: %d; log:\n%s", st, d.log)
	}
	if st := d.postJSON(t, "/api/v1/projects/shop/branches", `{"name":"shop-then","at":"`+noted+`"}`, &then); st != 201 {
		t.Fatalf("branch at %s: %d; log:\n%s", noted, st, d.log)
	}
	devRoot, devPW := now.role(t, "root")
	thenRoot, thenPW := then.role(t, "root")
	if n := q(devRoot, devPW, "SELECT COUNT(*) FROM app.t"); n != "200" {
		t.Fatalf("branch now has %s rows, want 200", n)
	}
	if n := q(thenRoot, thenPW, "SELECT COUNT(*) FROM app.t"); n != "150" {
		t.Fatalf("branch at the noted time has %s rows, want 150", n)
	}
	sum := "SELECT COUNT(*), SUM(CRC32(v)) FROM app.big"
	if src, dev := q(root, rootPW, sum), q(devRoot, devPW, sum); src != dev || !strings.HasPrefix(src, "131072") {
		t.Fatalf("the 128 MiB table: source %q, branch %q", src, dev)
	}
	q(devRoot, devPW, "INSERT INTO app.t VALUES (1000)")
	q(root, rootPW, "INSERT INTO app.t VALUES (2000)")
	for _, x := range []struct{ user, pw, want string }{{root, rootPW, "201"}, {devRoot, devPW, "201"}, {thenRoot, thenPW, "150"}} {
		if n := q(x.user, x.pw, "SELECT COUNT(*) FROM app.t WHERE id < 1000 OR id = 2000 OR id = 1000"); n != x.want {
			t.Fatalf("%s sees %s rows, want %s", x.user, n, x.want)
		}
	}
	if n := q(devRoot, devPW, "SELECT COUNT(*) FROM app.t WHERE id = 2000"); n != "0" {
		t.Fatal("a write to the source shows in the branch")
	}
	// The app role came along with a new password; the source's fails.
	devApp, devAppPW := now.role(t, "app")
	if devAppPW == app.Credentials.Password {
		t.Fatal("the branch's app role has the source's password")
	}
	q(devApp, devAppPW, "SELECT 1")
	if out, err := d.mariadb(t, devApp, app.Credentials.Password, "-e", "SELECT 1"); err == nil {
		t.Fatalf("the source's password logs in to the branch: %s", out)
	}
	// The CLI, and the errors.
	if out := d.mustCLI("branch", "create", "shop", "shop-cli"); !strings.Contains(out, "shop-cli") || !strings.Contains(out, "(shown once)") {
		t.Fatalf("branch create printed:\n%s", out)
	}
	for body, want := range map[string]int{
		`{"name":"shop-dev"}`:                      409,
		`{"name":"Bad Name"}`:                      400,
		`{"name":"x","at":"2001-01-01T00:00:00Z"}`: 400,
		`{"name":"x","at":"tomorrow"}`:             400,
		`{"name":"x","at":"2999-01-01T00:00:00Z"}`: 400,
		`{"name":"x","from":"y"}`:                  400,
	} {
		if st := d.postJSON(t, "/api/v1/projects/shop/branches", body, &struct{}{}); st != want {
			t.Errorf("branch %s: %d, want %d", body, st, want)
		}
	}
	var list struct {
		Projects []struct{ Name string } `json:"projects"`
	}
	d.getJSON("/api/v1/projects", &list)
	if len(list.Projects) != 4 {
		t.Fatalf("projects after the refused branches: %+v, want shop and its 3 branches", list.Projects)
	}
}

// TestUndelete deletes a project and brings it back with its data, its id
// and name, and its roles' passwords.
func TestUndelete(t *testing.T) {
	d := startDaemon(t, "", backupEnv...)
	p, _ := newBackupProject(t, d, "gone")
	root, pw := p.Role.MySQLUser, p.Role.Password
	if out, err := d.mariadb(t, root, pw, "-e", "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t SELECT seq FROM app.seq_1_to_321"); err != nil {
		t.Fatalf("write: %v %s", err, out)
	}
	if st := d.sendJSON(t, "DELETE", "/api/v1/projects/gone", "", &struct{}{}); st != 200 {
		t.Fatalf("delete: %d; log:\n%s", st, d.log)
	}
	if out, err := d.mariadb(t, root, pw, "-e", "SELECT 1"); err == nil {
		t.Fatalf("a deleted project's login works: %s", out)
	}
	out := d.mustCLI("backup", "undelete", p.Project.ID)
	if !strings.Contains(out, p.Project.ID) || !strings.Contains(out, "active") {
		t.Fatalf("backup undelete printed:\n%s", out)
	}
	if n, err := d.mariadb(t, root, pw, "-e", "SELECT COUNT(*) FROM app.t"); err != nil || n != "321" {
		t.Fatalf("after the undelete: %v %s, want 321 rows", err, n)
	}
	for path, want := range map[string]int{
		"/api/v1/projects/" + p.Project.ID + "/undelete": 404, // its tombstone is gone
		"/api/v1/projects/prj_never/undelete":            404,
	} {
		if st := d.postJSON(t, path, "", &struct{}{}); st != want {
			t.Errorf("POST %s: %d, want %d", path, st, want)
		}
	}
}
