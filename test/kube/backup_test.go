package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/serverlessd/serverlessd/backup/s3test"
	"github.com/serverlessd/serverlessd/store/postgres/pgtest"
	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// agentSelector finds backup agents' Pods.
const agentSelector = "app.kubernetes.io/managed-by=serverlessd-backup"

// TestBackupAgent drives backups of a Kubernetes compute on the harness,
// against a real S3 server (versitygw): each suspend runs a backup agent
// Pod on the compute's claim, which ships the binary logs and stores a
// snapshot; a point-in-time restore through the API runs another, which
// brings a dropped table back. The agents' Pods are gone once they end.
func TestBackupAgent(t *testing.T) {
	ctx := ctxFor(t, 6*time.Minute)
	d := startBackupDaemon(t, ctx)
	pw := d.CreateProject(`{"name":"books"}`)
	var c computeOut
	d.Call("POST", "/api/v1/projects/books/compute", `{}`, 201, &c)
	cid := c.Compute.ID
	name := "serverlessd-" + strings.ReplaceAll(cid, "_", "-")
	checkBinlogArgs(t, ctx, name)
	db := d.open("books", "root", pw)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)",
		"INSERT INTO app.t SELECT seq FROM app.seq_1_to_100")
	db.Close()
	d.Call("POST", "/api/v1/projects/books/compute/"+cid+"/suspend", "", 200, nil)
	t0 := time.Now()
	d.WaitSnapshots("books", 1, 2*time.Minute)
	t.Logf("suspend to snapshot listed: %s", time.Since(t0).Round(time.Millisecond))
	waitNoAgents(t, ctx)

	db = d.open("books", "root", pw)
	kubetest.MustExec(t, db, "INSERT INTO app.t SELECT seq FROM app.seq_101_to_250")
	time.Sleep(1100 * time.Millisecond) // the binary log's times are in seconds
	noted := time.Now().UTC()
	time.Sleep(1100 * time.Millisecond)
	kubetest.MustExec(t, db, "DROP TABLE app.t")
	db.Close()
	// binlog_max_delay is 2 s: the daemon rotates the running compute's
	// binary log and copies the closed files over the replication protocol.
	waitLog(t, d, `msg="binary log shipped"`)

	t0 = time.Now()
	var out struct {
		Compute struct{ State string } `json:"compute"`
	}
	d.Call("POST", "/api/v1/projects/books/restore", `{"to":"`+noted.Format(time.RFC3339Nano)+`"}`, 200, &out)
	t.Logf("restore through an agent: %s", time.Since(t0).Round(time.Millisecond))
	if out.Compute.State != "active" {
		t.Fatalf("compute is %s after the restore, want active", out.Compute.State)
	}
	db = d.open("books", "root", pw)
	if n := count(t, db, "SELECT COUNT(*) FROM app.t"); n != 250 {
		t.Fatalf("%d rows after the restore to before the drop, want 250", n)
	}
	db.Close()
	checkBranches(t, d, pw, noted)
	waitNoAgents(t, ctx)

	// Deleted, then undeleted: the data comes back from the backups.
	var p struct {
		Project struct{ ID string } `json:"project"`
	}
	d.Call("GET", "/api/v1/projects/books", "", 200, &p)
	d.Call("DELETE", "/api/v1/projects/books", "", 200, nil)
	d.Call("POST", "/api/v1/projects/"+p.Project.ID+"/undelete", "", 200, nil)
	if n := count(t, d.open("books", "root", pw), "SELECT COUNT(*) FROM app.t"); n != 250 {
		t.Fatalf("%d rows after undelete, want 250", n)
	}
	waitNoAgents(t, ctx)
	checkNoBackupFailed(t, d)
}

// checkBranches branches project books now and at a past time, through
// backup agents that fill the branches' new claims: each branch has its
// source's rows of that time, and writes to one are not seen by another.
func checkBranches(t *testing.T, d *daemon, pw string, past time.Time) {
	t.Helper()
	type branchOut struct {
		Roles []struct {
			Name     string `json:"name"`
			Password string `json:"password"`
		} `json:"roles"`
	}
	var now, then branchOut
	t0 := time.Now()
	d.Call("POST", "/api/v1/projects/books/branches", `{"name":"books-now","at":"now"}`, 201, &now)
	t.Logf("branch now through agents: %s", time.Since(t0).Round(time.Millisecond))
	d.Call("POST", "/api/v1/projects/books/branches", `{"name":"books-then","at":"`+past.Format(time.RFC3339Nano)+`"}`, 201, &then)
	src := d.open("books", "root", pw)
	kubetest.MustExec(t, src, "INSERT INTO app.t VALUES (1000)")
	for _, b := range []struct {
		name string
		out  branchOut
	}{{"books-now", now}, {"books-then", then}} {
		if len(b.out.Roles) != 1 || b.out.Roles[0].Name != "root" {
			t.Fatalf("branch %s roles %+v, want root's", b.name, b.out.Roles)
		}
		db := d.open(b.name, "root", b.out.Roles[0].Password)
		if n := count(t, db, "SELECT COUNT(*) FROM app.t"); n != 250 {
			t.Fatalf("branch %s has %d rows, want its source's 250", b.name, n)
		}
		kubetest.MustExec(t, db, "INSERT INTO app.t VALUES (2000)")
		db.Close()
	}
	if n := count(t, src, "SELECT COUNT(*) FROM app.t WHERE id = 2000"); n != 0 {
		t.Fatalf("a branch's row is in its source")
	}
	kubetest.MustExec(t, src, "DELETE FROM app.t WHERE id = 1000")
	src.Close()
	for _, name := range []string{"books-now", "books-then"} {
		d.Call("DELETE", "/api/v1/projects/"+name, "", 200, nil)
	}
}

// TestBackupAgentHot: a Kubernetes compute that never suspends gets a hot
// backup from an agent beside it (mariadb-backup while it runs), its
// binary logs are shipped onto it, and a point-in-time restore starts
// from it.
func TestBackupAgentHot(t *testing.T) {
	ctx := ctxFor(t, 6*time.Minute)
	d := startBackupDaemon(t, ctx)
	pw := d.CreateProject(`{"name":"hot"}`)
	var c computeOut
	d.Call("POST", "/api/v1/projects/hot/compute", `{}`, 201, &c)
	db := d.open("hot", "root", pw)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)",
		"INSERT INTO app.t SELECT seq FROM app.seq_1_to_100")
	t0 := time.Now()
	d.WaitSnapshots("hot", 1, 2*time.Minute) // no snapshot yet: the first rotation takes a hot backup
	t.Logf("hot backup listed %s after the first write", time.Since(t0).Round(time.Millisecond))
	if st := d.compute("hot").Compute.State; st != "active" {
		t.Fatalf("compute is %s, want active all along", st)
	}
	kubetest.MustExec(t, db, "INSERT INTO app.t SELECT seq FROM app.seq_101_to_150")
	time.Sleep(1100 * time.Millisecond)
	noted := time.Now().UTC()
	time.Sleep(1100 * time.Millisecond)
	kubetest.MustExec(t, db, "DROP TABLE app.t")
	db.Close()
	d.Call("POST", "/api/v1/projects/hot/restore", `{"to":"`+noted.Format(time.RFC3339Nano)+`"}`, 200, nil)
	if n := count(t, d.open("hot", "root", pw), "SELECT COUNT(*) FROM app.t"); n != 150 {
		t.Fatalf("%d rows after the restore to before the drop, want 150", n)
	}
	waitNoAgents(t, ctx)
	checkNoBackupFailed(t, d)
}

// TestBackupTwoReplicas: of two daemons on one store, the leader alone
// rotates and ships running computes' binary logs and takes their hot
// backups, also of a compute only the follower started and serves.
func TestBackupTwoReplicas(t *testing.T) {
	ctx := ctxFor(t, 6*time.Minute)
	cfg := backupConfig(t, ctx, fmt.Sprintf("store:\n  driver: postgres\n  dsn: %q\n", pgtest.Start(t)))
	a := startDaemonConfig(t, cfg(t))
	waitLog(t, a, "leading: this daemon suspends idle computes")
	b := startDaemonConfig(t, cfg(t))
	pw := b.CreateProject(`{"name":"duo"}`)
	b.Call("POST", "/api/v1/projects/duo/compute", `{}`, 201, nil)
	db := b.open("duo", "root", pw)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)")
	waitLog(t, a, "hot backup taken by the backup agent")
	kubetest.MustExec(t, db, "INSERT INTO app.t SELECT seq FROM app.seq_1_to_100")
	waitLog(t, a, `msg="binary log shipped"`)
	db.Close()
	for _, msg := range []string{"hot backup taken", "binary log shipped"} {
		if strings.Contains(b.log.String(), msg) {
			t.Errorf("the follower logged %q: only the leader backs running computes up", msg)
		}
	}
}

// checkNoBackupFailed fails the test on any failed backup job the daemon
// logged.
func checkNoBackupFailed(t *testing.T, d *daemon) {
	t.Helper()
	for _, line := range strings.Split(d.log.String(), "\n") {
		if strings.Contains(line, "backup failed") || strings.Contains(line, "backup upload failed") {
			t.Errorf("a backup job failed: %s", line)
		}
	}
}

// startBackupDaemon starts a daemon with backups on (backupConfig), its
// store in SQLite.
func startBackupDaemon(t *testing.T, ctx context.Context) *daemon {
	return startDaemonConfig(t, backupConfig(t, ctx, "store:\n  driver: sqlite\n")(t))
}

// backupConfig returns the config of a daemon with the store in storeYAML
// and backups on, to a versitygw of the test's, with binlog_max_delay 2 s;
// each call of the returned func is for a daemon of its own.
func backupConfig(t *testing.T, ctx context.Context, storeYAML string) func(*testing.T) kubetest.DaemonConfig {
	s3 := s3test.Start(t)
	o := s3.Options("harness-" + strings.ToLower(t.Name()))
	credentials(t, ctx, o.AccessKeyID, o.SecretAccessKey)
	more := storeYAML + fmt.Sprintf("scheduler:\n  interval: 1s\nbackup:\n  enabled: true\n  binlog_max_delay: 2s\n  target: s3\n"+
		"  s3:\n    endpoint: %s\n    bucket: %s\n    prefix: %s\n    access_key_id: %s\n    secret_access_key: %s\n",
		o.Endpoint, o.Bucket, o.Prefix, o.AccessKeyID, o.SecretAccessKey)
	daemonBinary(t) // the node runs agents with it
	return func(t *testing.T) kubetest.DaemonConfig {
		return kubetest.DaemonConfig{DataDir: t.TempDir(), API: freeAddr(t), Proxy: freeAddr(t),
			Kubeconfig: kubeconfig, Namespace: namespace, Image: "mariadb:10.11.10", CPU: "250m",
			AgentImage: "serverlessd:harness", More: more}
	}
}

// credentials makes the Secret whose keys the agents get as environment.
func credentials(t *testing.T, ctx context.Context, id, secret string) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "serverlessd-backup", Namespace: namespace},
		StringData: map[string]string{"AWS_ACCESS_KEY_ID": id, "AWS_SECRET_ACCESS_KEY": secret}}
	secrets := kube.client.CoreV1().Secrets(namespace)
	if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = secrets.Delete(context.Background(), s.Name, metav1.DeleteOptions{}) })
}

// checkBinlogArgs checks that the compute's mariadbd keeps a binary log.
func checkBinlogArgs(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	pod, err := kube.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if args := pod.Spec.Containers[0].Args; !slices.Contains(args, "--log-bin=binlog") {
		t.Fatalf("compute's mariadbd args %q have no binary log", args)
	}
}

// waitNoAgents waits until no backup agent's Pod is left.
func waitNoAgents(t *testing.T, ctx context.Context) {
	t.Helper()
	err := kubetest.WaitFor(30*time.Second, 100*time.Millisecond, "no backup agent pod", func() (bool, error) {
		pods, err := kube.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: agentSelector})
		return err == nil && len(pods.Items) == 0, err
	})
	if err != nil {
		t.Fatalf("backup agents' pods left: %v", err)
	}
}
