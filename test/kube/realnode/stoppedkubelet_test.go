//go:build linux && realnode

package realnode

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/serverlessd/serverlessd/test/kube/kubetest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRealNodeStoppedKubelet stops the kubelet of the node a project's
// compute runs on, as when a node is cut off: its containers run on, its
// heartbeats stop. While the node is Unknown the daemon restarts and
// serves at once; the project's next login force-deletes the Pod the dead
// kubelet will never stop, and fails with a clear error, because the
// volume is bound to that node (hostPath) and no other node exists. Once
// the kubelet is back the same login wakes the project with its rows.
func TestRealNodeStoppedKubelet(t *testing.T) {
	const project = "cutoff"
	e := startEnv(t)
	ctx := t.Context()
	cs := e.cluster.client
	d := e.startDaemon(t, e.daemonKubeconfig(t))
	var figures []string
	fig := func(format string, args ...any) { figures = append(figures, fmt.Sprintf(format, args...)) }

	pw := d.CreateProject(`{"name":"` + project + `"}`)
	var c struct {
		Compute struct{ ID, State string } `json:"compute"`
	}
	d.Call("POST", "/api/v1/projects/"+project+"/compute", `{}`, 201, &c)
	cid, name := c.Compute.ID, "serverlessd-"+strings.ReplaceAll(c.Compute.ID, "_", "-")
	db := d.open(project, "root", pw)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)", "INSERT INTO app.t VALUES (1), (2), (3)")
	db.Close()
	before, err := cs.CoreV1().Pods(daemonNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The compute's mariadbd, which will outlive its kubelet.
	orphans := podProcesses("mariadbd")
	if len(orphans) != 1 || orphans[0].uid != mysqlUID {
		t.Fatalf("mariadbd processes %+v, want one of uid %d", orphans, mysqlUID)
	}

	// 1. The kubelet stops; the node controller marks the node Unknown.
	killAt := time.Now()
	e.node.killKubelet()
	t.Cleanup(func() {
		// t.Context() is done by now.
		if e.node.kubelet == nil || e.node.kubelet.exited() {
			if err := e.node.restartKubelet(context.Background(), e.cluster); err != nil {
				t.Errorf("kubelet restart: %v", err)
			}
		}
	})
	if err := kubetest.WaitFor(2*time.Minute, 200*time.Millisecond, "node not Ready", func() (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return nodeReady(n) != corev1.ConditionTrue, nil
	}); err != nil {
		t.Fatal(err)
	}
	fig("kubelet SIGKILLed: node %s not Ready after %s (node monitor grace period 15 s)", nodeName, ms(time.Since(killAt)))

	// 2. The daemon restarts while the node is lost, and serves at once.
	d.stop()
	t0 := time.Now()
	if err := d.run(); err != nil {
		t.Fatalf("daemon restart with the node lost: %v; its log:\n%s", err, d.tail())
	}
	ready := time.Since(t0)
	d.Call("GET", "/api/v1/projects", "", 200, nil)
	fig("daemon restarted while the node is not Ready: /readyz 200 after %s, the API answering after %s", ms(ready), ms(time.Since(t0)))

	// 3. A login: the Pod on the lost node is force-deleted, and the new
	// one cannot be scheduled: a clear error, not a hang.
	forced := d.logCount("force-deleting a pod on a lost node")
	t0 = time.Now()
	err = loginErr(d, project, pw)
	took := time.Since(t0)
	if err == nil {
		t.Fatalf("login with the only node lost succeeded, want an error")
	}
	cause := d.causeOf(err)
	if !strings.Contains(cause, "no node can run pod") {
		t.Fatalf("login with the node lost: %v; its logged cause %q does not say no node can run the pod; daemon log:\n%s", err, cause, d.tail())
	}
	fig("login with the compute's node lost: refused in %s with %q; logged cause: %s", ms(took), err.Error(), clipText(cause, 400))
	if p, err := cs.CoreV1().Pods(daemonNS).Get(ctx, name, metav1.GetOptions{}); err == nil && p.UID == before.UID {
		t.Fatalf("the Pod on the lost node is still there (deleting %v)", p.DeletionTimestamp != nil)
	} else if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if d.logCount("force-deleting a pod on a lost node") == forced {
		t.Fatalf("the daemon did not log a force-deletion; its log:\n%s", d.tail())
	}
	var got struct {
		Compute struct{ State string } `json:"compute"`
	}
	d.Call("GET", "/api/v1/projects/"+project+"/compute", "", 200, &got)
	fig("the old Pod force-deleted; the compute is %s", got.Compute.State)

	// 4. The kubelet comes back, stops the force-deleted Pod's containers,
	// and the next login wakes the project with its rows.
	t0 = time.Now()
	if err := e.node.restartKubelet(ctx, e.cluster); err != nil {
		t.Fatal(err)
	}
	if err := kubetest.WaitFor(time.Minute, 100*time.Millisecond, "the orphaned mariadbd stopped", func() (bool, error) {
		return syscall.Kill(orphans[0].pid, 0) != nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	back := time.Since(t0)
	t0 = time.Now()
	db = d.open(project, "root", pw)
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM app.t").Scan(&n); err != nil || n != 3 {
		t.Fatalf("after the kubelet's return: %d rows, %v; want 3; daemon log:\n%s", n, err, d.tail())
	}
	db.Close()
	fig("kubelet back: node Ready and the orphaned mariadbd stopped after %s; then login + SELECT COUNT(*) in %s, rows intact",
		ms(back), ms(time.Since(t0)))

	d.Call("DELETE", "/api/v1/projects/"+project+"/compute/"+cid, "", 200, nil)
	t.Logf("REALNODE NODE LOSS FIGURES (%s):\n%s", time.Now().Format("2006-01-02"), strings.Join(figures, "\n"))
}

// loginErr logs in once through the daemon's proxy and runs a query.
func loginErr(d *daemon, project, pw string) error {
	db := d.open(project, "root", pw)
	defer db.Close()
	_, err := db.Exec("SELECT 1")
	return err
}

var referenceRE = regexp.MustCompile(`\(reference ([0-9a-f]+)\)`)

// causeOf returns the daemon's log line of a refused login: the client's
// message carries a reference, the log the cause under the same one.
func (d *daemon) causeOf(err error) string {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return ""
	}
	m := referenceRE.FindStringSubmatch(me.Message)
	if m == nil {
		return ""
	}
	for _, line := range strings.Split(d.tail(), "\n") {
		if strings.Contains(line, m[1]) && strings.Contains(line, "err=") {
			return line
		}
	}
	return ""
}

func clipText(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
