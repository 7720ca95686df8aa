//go:build linux && realnode

package realnode

import (
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/serverlessd/serverlessd/backup/s3test"
	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// TestRealNodeBackups runs backups of a compute on the real node: backup
// agent Pods (the Dockerfile's image for the binary, the compute's image
// to run it) ship its binary logs and snapshots to a real S3 server
// (versitygw, reached by the Pods through the node's address) after a
// suspend, restore it to a time before a DROP TABLE, and fill a branch's
// new claim. It ends with the figures in one block.
func TestRealNodeBackups(t *testing.T) {
	e := startEnv(t)
	ctx := t.Context()
	cs := e.cluster.client
	var figures []string
	fig := func(format string, args ...any) { figures = append(figures, fmt.Sprintf(format, args...)) }
	defer func() {
		t.Logf("REALNODE BACKUP FIGURES (%s, %d cores):\n%s", time.Now().Format("2006-01-02"), runtime.NumCPU(),
			strings.Join(figures, "\n"))
	}()
	e.importDaemonImage(t) // the backup agents' binary
	kubeconfig := e.daemonKubeconfig(t)

	s3 := s3test.Start(t)
	o := s3.Options("realnode")
	u, err := url.Parse(o.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = forward(t, e.node.ip, u.Host) // Pods reach the node's address, not its loopback
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "serverlessd-backup", Namespace: daemonNS},
		StringData: map[string]string{"AWS_ACCESS_KEY_ID": o.AccessKeyID, "AWS_SECRET_ACCESS_KEY": o.SecretAccessKey}}
	if _, err := cs.CoreV1().Secrets(daemonNS).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Secrets(daemonNS).Delete(t.Context(), secret.Name, metav1.DeleteOptions{}) })
	d := e.startDaemon(t, kubeconfig, func(c *kubetest.DaemonConfig) {
		c.AgentImage = daemonImage
		c.More += fmt.Sprintf("backup:\n  enabled: true\n  binlog_max_delay: 2s\n  target: s3\n  s3:\n    endpoint: %s\n    bucket: %s\n"+
			"    prefix: %s\n    access_key_id: %s\n    secret_access_key: %s\n",
			u.String(), o.Bucket, o.Prefix, o.AccessKeyID, o.SecretAccessKey)
	})

	pw := d.CreateProject(`{"name":"books"}`)
	var c struct {
		Compute struct{ ID string } `json:"compute"`
	}
	d.Call("POST", "/api/v1/projects/books/compute", `{}`, 201, &c)
	cid := c.Compute.ID
	db := d.open("books", "root", pw)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)",
		"INSERT INTO app.t SELECT seq FROM app.seq_1_to_1000")
	db.Close()
	d.Call("POST", "/api/v1/projects/books/compute/"+cid+"/suspend", "", 200, nil)
	t0 := time.Now()
	d.WaitSnapshots("books", 1, 3*time.Minute)
	fig("suspend to snapshot listed (an agent Pod: binary logs and datadir to S3): %s", ms(time.Since(t0)))

	db = d.open("books", "root", pw)
	kubetest.MustExec(t, db, "INSERT INTO app.t SELECT seq FROM app.seq_1001_to_2000")
	time.Sleep(1100 * time.Millisecond) // the binary log's times are in seconds
	noted := time.Now().UTC()
	time.Sleep(1100 * time.Millisecond)
	kubetest.MustExec(t, db, "DROP TABLE app.t")
	db.Close()
	// binlog_max_delay is 2 s: the running compute's closed binary logs
	// are copied over the replication protocol, from the Pod's IP.
	if err := kubetest.WaitFor(30*time.Second, 100*time.Millisecond, "a binary log shipped while running", func() (bool, error) {
		return d.logCount("binary log shipped") > 0, nil
	}); err != nil {
		t.Fatalf("%v; daemon log:\n%s", err, d.tail())
	}
	t0 = time.Now()
	d.Call("POST", "/api/v1/projects/books/restore", `{"to":"`+noted.Format(time.RFC3339Nano)+`"}`, 200, nil)
	fig("point-in-time restore (an agent Pod keeps the data, restores the snapshot, replays with its own mariadbd), until the compute runs: %s",
		ms(time.Since(t0)))
	if n := countRows(t, d, "books", "root", pw); n != 2000 {
		t.Fatalf("%d rows after the restore to before the drop, want 2000", n)
	}

	var br struct {
		Roles []struct{ Password string } `json:"roles"`
	}
	t0 = time.Now()
	d.Call("POST", "/api/v1/projects/books/branches", `{"name":"books-dev","at":"now"}`, 201, &br)
	fig("branch now (source suspended and kept by one agent, the branch's claim filled by another): %s", ms(time.Since(t0)))
	if n := countRows(t, d, "books-dev", "root", br.Roles[0].Password); n != 2000 {
		t.Fatalf("branch has %d rows, want 2000", n)
	}
	agents, err := cs.CoreV1().Pods(daemonNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=serverlessd-backup"})
	if err != nil || len(agents.Items) != 0 {
		t.Fatalf("backup agents' pods left: %d, %v", len(agents.Items), err)
	}
	for _, p := range []string{"books-dev", "books"} {
		d.Call("DELETE", "/api/v1/projects/"+p, "", 200, nil)
	}
	hotBackup(t, d, fig)
	if n := d.logCount("backup upload failed") + d.logCount("hot backup failed"); n != 0 {
		t.Errorf("%d backup jobs failed; daemon log:\n%s", n, d.tail())
	}
}

// hotBackup: a compute that never suspends gets a hot backup from an agent
// on its node (mariadb-backup, from the compute's image, logged in at its
// Pod's IP), and a point-in-time restore starts from it.
func hotBackup(t *testing.T, d *daemon, fig func(string, ...any)) {
	pw := d.CreateProject(`{"name":"hot"}`)
	d.Call("POST", "/api/v1/projects/hot/compute", `{}`, 201, nil)
	db := d.open("hot", "root", pw)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)",
		"INSERT INTO app.t SELECT seq FROM app.seq_1_to_1000")
	t0 := time.Now()
	d.WaitSnapshots("hot", 1, 3*time.Minute)
	fig("hot backup of a running compute (its first: an agent Pod beside it runs mariadb-backup), listed %s after the first write", ms(time.Since(t0)))
	kubetest.MustExec(t, db, "INSERT INTO app.t SELECT seq FROM app.seq_1001_to_1500")
	time.Sleep(1100 * time.Millisecond)
	noted := time.Now().UTC()
	time.Sleep(1100 * time.Millisecond)
	kubetest.MustExec(t, db, "DROP TABLE app.t")
	db.Close()
	t0 = time.Now()
	d.Call("POST", "/api/v1/projects/hot/restore", `{"to":"`+noted.Format(time.RFC3339Nano)+`"}`, 200, nil)
	fig("point-in-time restore from the hot backup: %s", ms(time.Since(t0)))
	if n := countRows(t, d, "hot", "root", pw); n != 1500 {
		t.Fatalf("%d rows after the restore from the hot backup, want 1500", n)
	}
	d.Call("DELETE", "/api/v1/projects/hot", "", 200, nil)
}

// importDaemonImage builds the Dockerfile's image into the node's
// containerd, and returns how long the build and the import took.
func (e *env) importDaemonImage(t *testing.T) (built, imported time.Duration) {
	cache, err := kubetest.CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	archive, err := buildDaemonImage(cache, filepath.Join(e.dir, "daemon-image"), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	built = time.Since(t0)
	if _, err := kubetest.Output("ctr", "--address", e.node.sock, "-n", "k8s.io", "images", "import", archive); err != nil {
		t.Fatal(err)
	}
	return built, time.Since(t0) - built
}

// countRows counts app.t's rows through the proxy.
func countRows(t *testing.T, d *daemon, project, user, pw string) int {
	t.Helper()
	db := d.open(project, user, pw)
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM app.t").Scan(&n); err != nil {
		t.Fatalf("count rows of %s: %v", project, err)
	}
	return n
}
