//go:build linux && realnode

package realnode

import (
	"crypto/rand"
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/serverlessd/serverlessd/store/postgres/pgtest"
	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

const clusterProject = "incluster"

// TestRealNodeInCluster runs the daemon as shipped: the Dockerfile built
// here, deploy/kubernetes applied with kustomize (two replicas, their
// Service, Role and NetworkPolicy), a PostgreSQL store. Through the
// Service it creates a compute, then counts failed logins while a replica
// is killed and during a rolling update, suspends and wakes the compute,
// and checks that the NetworkPolicy, enforced by kube-router, keeps every
// other Pod from the compute and the compute from reaching out. The
// figures end the log ("REALNODE CLUSTER FIGURES").
func TestRealNodeInCluster(t *testing.T) {
	e := startEnv(t)
	ctx := t.Context()
	cs := e.cluster.client
	var figures []string
	fig := func(format string, args ...any) { figures = append(figures, fmt.Sprintf(format, args...)) }
	defer func() {
		t.Logf("REALNODE CLUSTER FIGURES (%s, %d cores, containerd+runc, cgroup v1):\n%s",
			time.Now().Format("2006-01-02"), runtime.NumCPU(), strings.Join(figures, "\n"))
	}()

	// 1. The Dockerfile, as it is, and its image in the node's containerd.
	built, imported := e.importDaemonImage(t)
	fig("daemon image: Dockerfile built (buildah bud --pull=never, vfs; includes making the base stand-ins if the cache lacks them) in %s, imported into containerd in %s",
		ms(built), ms(imported))

	// 2. The store, reachable from Pods; 3. deploy/kubernetes.
	dsn := forwardPostgres(t, pgtest.Start(t))
	token := "realnode-" + rand.Text()
	objs, err := kustomizeDeploy(filepath.Join(e.dir, "overlay"), dsn, token)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind()+"/"+o.GetName())
	}
	t.Logf("kustomize: %s", strings.Join(kinds, ", "))
	t.Cleanup(func() { e.undeploy(t, objs) })
	t0 := time.Now()
	if err := e.applyAll(ctx, objs); err != nil {
		t.Fatal(err)
	}
	if err := e.waitRolledOut(ctx, 3*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, e.daemonLogs())
	}
	fig("deploy/kubernetes applied (kustomize, %d objects): both replicas Ready in %s", len(objs), ms(time.Since(t0)))
	pods, err := e.daemonPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var holder string
	if err := kubetest.WaitFor(30*time.Second, 100*time.Millisecond, "a leader", func() (bool, error) {
		holder, err = e.leaseHolder(ctx)
		return holderPod(holder, pods) != "", fmt.Errorf("holder %q: %v", holder, err)
	}); err != nil {
		t.Fatalf("%v\n%s", err, e.daemonLogs())
	}
	fig("leader: %s holds the Lease %s (one of %d replicas)", holderPod(holder, pods), leaderLease, len(pods))

	// 4. A project and its compute, through the Service's ClusterIP.
	svc, err := cs.CoreV1().Services(daemonNS).Get(ctx, daemonDeployment, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := svc.Spec.ClusterIP
	api := &kubetest.API{T: t, Base: "http://" + net.JoinHostPort(ip, "8080"), Token: token, Logs: e.daemonLogs}
	if err := waitService(api.Base, time.Minute); err != nil {
		t.Fatal(err)
	}
	fig("the Service %s answers through kube-proxy %s after the apply", ip, ms(time.Since(t0)))
	pw := api.CreateProject(`{"name":"` + clusterProject + `"}`)
	var c struct {
		Compute struct{ ID, State string } `json:"compute"`
	}
	t0 = time.Now()
	api.Call("POST", "/api/v1/projects/"+clusterProject+"/compute", `{}`, 201, &c)
	fig("compute created through the Service in %s", ms(time.Since(t0)))
	cid, computePod := c.Compute.ID, "serverlessd-"+strings.ReplaceAll(c.Compute.ID, "_", "-")
	cfg := mysqlConfig(net.JoinHostPort(ip, "3306"), clusterProject, "root", pw)
	db := openDB(t, cfg)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v TEXT)",
		"INSERT INTO app.t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
	db.Close()

	// 4a. A replica killed (the leader: its successor must take over too),
	// its Pod deleted with grace period 0, then a replica's process
	// SIGKILLed in its Pod.
	fig("%s", e.killReplica(t, cfg))
	checkRows(t, cfg, 3)
	fig("%s", e.crashReplica(t, cfg))
	checkRows(t, cfg, 3)
	// 4b. A rolling update.
	fig("%s", e.rollingUpdate(t, cfg))
	checkRows(t, cfg, 3)
	// 4c. Suspend through the API, wake by a login through the Service.
	api.Call("POST", "/api/v1/projects/"+clusterProject+"/compute/"+cid+"/suspend", "", 200, nil)
	if _, err := cs.CoreV1().Pods(daemonNS).Get(ctx, computePod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("compute pod after suspend: %v, want not found", err)
	}
	t0 = time.Now()
	checkRows(t, cfg, 3)
	fig("suspend (API) then wake by a login through the Service: login + SELECT COUNT(*) in %s, rows intact", ms(time.Since(t0)))

	// 5. The NetworkPolicy, enforced.
	figures = append(figures, e.checkPolicy(t, cfg, computePod, dsn, api, cid)...)

	api.Call("DELETE", "/api/v1/projects/"+clusterProject+"/compute/"+cid, "", 200, nil)
}

func openDB(t *testing.T, cfg *mysql.Config) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// checkRows counts the rows through a new connection.
func checkRows(t *testing.T, cfg *mysql.Config, want int) {
	t.Helper()
	db := openDB(t, cfg)
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM app.t").Scan(&n); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	if n != want {
		t.Fatalf("%d rows, want %d", n, want)
	}
}

// killReplica runs the login loop while the leader's Pod is deleted with
// grace period 0, until its replacement is Ready and another replica
// leads. The Pod object goes at once (its endpoint with it), but the
// kubelet still gives a container 2 s (its minimum grace period) between
// SIGTERM and SIGKILL: the daemon fails readiness, hands the Lease over
// and keeps accepting for those 2 s. crashReplica is the kill with none.
func (e *env) killReplica(t *testing.T, cfg *mysql.Config) string {
	ctx := t.Context()
	pods, err := e.daemonPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	holder, _ := e.leaseHolder(ctx)
	victim := holderPod(holder, pods)
	loop := startLoginLoop(t, cfg)
	other := startSurvivor(t, cfg, pods, victim)
	time.Sleep(3 * time.Second)
	killAt := time.Now()
	if err := e.cluster.client.CoreV1().Pods(daemonNS).Delete(ctx, victim,
		metav1.DeleteOptions{GracePeriodSeconds: ptrTo[int64](0)}); err != nil {
		t.Fatal(err)
	}
	var newLeader string
	var leaderAfter time.Duration
	err = kubetest.WaitFor(2*time.Minute, 100*time.Millisecond, "new leader", func() (bool, error) {
		h, err := e.leaseHolder(ctx)
		if h != "" && !strings.HasPrefix(h, victim) {
			newLeader, leaderAfter = h, time.Since(killAt)
			return true, nil
		}
		return false, fmt.Errorf("holder %q: %v", h, err)
	})
	if err != nil {
		t.Errorf("%v", err)
	}
	if err := e.waitRolledOut(ctx, 2*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, e.daemonLogs())
	}
	replaced := time.Since(killAt)
	time.Sleep(3 * time.Second)
	ok, fails, maxLogin := loop.finish()
	for _, f := range describeFails(fails, killAt) {
		t.Logf("failed login after the kill: %s", f)
	}
	return fmt.Sprintf("Pod delete with grace period 0 (the leader %s; kubelet: SIGTERM, SIGKILL 2 s later) under a login loop: %d logins, %d failed%s; "+
		"slowest login %s; new leader %s after %s; replacement Ready after %s; %s",
		victim, ok+len(fails), len(fails), failList(fails, killAt), ms(maxLogin), newLeader, ms(leaderAfter), ms(replaced), other.finish(t, killAt))
}

// rollingUpdate changes the Pod template (as a new image would) with the
// login loop running, and waits until the old replicas are gone.
func (e *env) rollingUpdate(t *testing.T, cfg *mysql.Config) string {
	ctx := t.Context()
	loop := startLoginLoop(t, cfg)
	time.Sleep(2 * time.Second)
	t0 := time.Now()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"realnode/rollout":%q}}}}}`, t0.Format(time.RFC3339Nano))
	if _, err := e.cluster.client.AppsV1().Deployments(daemonNS).Patch(ctx, daemonDeployment,
		types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// Let the Deployment controller see the new generation first.
	time.Sleep(time.Second)
	if err := e.waitRolledOut(ctx, 4*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, e.daemonLogs())
	}
	took := time.Since(t0)
	time.Sleep(2 * time.Second)
	ok, fails, maxLogin := loop.finish()
	for _, f := range describeFails(fails, t0) {
		t.Logf("failed login during the rolling update: %s", f)
	}
	if len(fails) > 0 {
		t.Errorf("%d logins failed during the rolling update", len(fails))
	}
	return fmt.Sprintf("rolling update (template annotation) under a login loop: %d logins, %d failed%s; slowest login %s; "+
		"rolled out (old replicas gone) in %s", ok+len(fails), len(fails), failList(fails, t0), ms(maxLogin), ms(took))
}

// failList is the first failures, for a figure.
func failList(fails []loginFail, from time.Time) string {
	if len(fails) == 0 {
		return ""
	}
	d := describeFails(fails, from)
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("and %d more", len(d)-5))
	}
	return " (" + strings.Join(d, "; ") + ")"
}

// crashReplica SIGKILLs the leader's serverlessd process from the host, a
// crash the Pod survives: the kubelet restarts the container in place,
// and the Pod stays an endpoint of the Service until its readiness probe
// fails (5 s period, 3 failures), so new logins that kube-proxy sends to
// it meet a closed port until the new process listens. No readiness or
// drain can cover this: a client must retry.
func (e *env) crashReplica(t *testing.T, cfg *mysql.Config) string {
	ctx := t.Context()
	cs := e.cluster.client
	holder, _ := e.leaseHolder(ctx)
	pods, err := e.daemonPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victim := holderPod(holder, pods)
	pid := 0
	for _, p := range podProcesses("serverlessd") {
		if procEnv(p.pid, "SERVERLESSD_NODE_NAME") == victim {
			pid = p.pid
		}
	}
	if pid == 0 {
		t.Fatalf("no serverlessd process of %s", victim)
	}
	before, err := cs.CoreV1().Pods(daemonNS).Get(ctx, victim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	loop := startLoginLoop(t, cfg)
	other := startSurvivor(t, cfg, pods, victim)
	time.Sleep(3 * time.Second)
	killAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var back time.Duration
	if err := kubetest.WaitFor(2*time.Minute, 100*time.Millisecond, "restarted and Ready", func() (bool, error) {
		p, err := cs.CoreV1().Pods(daemonNS).Get(ctx, victim, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		ready := slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
			return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
		})
		back = time.Since(killAt)
		return restarts(p) > restarts(before) && ready, fmt.Errorf("restarts %d, ready %v", restarts(p), ready)
	}); err != nil {
		t.Fatalf("%v\n%s", err, e.daemonLogs())
	}
	var newLeader string
	var leaderAfter time.Duration
	_ = kubetest.WaitFor(time.Minute, 100*time.Millisecond, "new leader", func() (bool, error) {
		h, _ := e.leaseHolder(ctx)
		newLeader, leaderAfter = h, time.Since(killAt)
		return h != "" && h != holder, nil
	})
	time.Sleep(3 * time.Second)
	ok, fails, maxLogin := loop.finish()
	for _, f := range describeFails(fails, killAt) {
		t.Logf("failed login after the SIGKILL: %s", f)
	}
	return fmt.Sprintf("SIGKILL of the leader's serverlessd process (%s; the Pod stays, kubelet restarts it) under a login loop: "+
		"%d logins, %d failed%s; slowest login %s; restarted and Ready after %s; lease holder %s after %s; %s",
		victim, ok+len(fails), len(fails), failList(fails, killAt), ms(maxLogin), ms(back), newLeader, ms(leaderAfter), other.finish(t, killAt))
}

// procEnv returns an environment variable of a process.
func procEnv(pid int, name string) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	for _, kv := range strings.Split(string(data), "\x00") {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}
