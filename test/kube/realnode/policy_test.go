//go:build linux && realnode

package realnode

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// checkPolicy starts kube-router and checks deploy/kubernetes's
// NetworkPolicy in force: a Pod of the namespace that is not a daemon's
// reaches the compute's port before and not after; the compute reaches
// the host (the store's forwarder on the bridge) and the API server's
// Service before and not after; the daemon's logins, and a wake that
// makes a new compute Pod, keep working.
func (e *env) checkPolicy(t *testing.T, cfg *mysql.Config, computePod, dsn string, api *kubetest.API, cid string) []string {
	ctx := t.Context()
	cs := e.cluster.client
	var figs []string
	probe := e.startProbePod(t)
	target := func() string {
		p, err := cs.CoreV1().Pods(daemonNS).Get(ctx, computePod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return net.JoinHostPort(p.Status.PodIP, "3306")
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	mariadbd := func() int {
		procs := podProcesses("mariadbd")
		if len(procs) != 1 {
			t.Fatalf("mariadbd processes: %+v, want 1", procs)
		}
		return procs[0].pid
	}
	egress := []string{u.Host, net.JoinHostPort(apiServiceIP, "443")}
	// Without a controller, the policy is stored and ignored: all connect.
	if r := dialFrom(probe, target(), 3*time.Second); r != "" {
		t.Fatalf("before kube-router: the probe Pod cannot reach the compute: %s", r)
	}
	for _, a := range egress {
		if r := dialFrom(mariadbd(), a, 3*time.Second); r != "" {
			t.Fatalf("before kube-router: the compute cannot reach %s: %s", a, r)
		}
	}

	cache, err := kubetest.CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := kubeRouterBinary(cache, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	kr, err := e.startKubeRouter(bin)
	if err != nil {
		t.Fatal(err)
	}
	// Gone at the test's end: the run's later tests expect the node as it
	// was, enforcing no policy (TestRealNodeDaemon reaches computes from
	// the host).
	t.Cleanup(func() {
		if err := e.stopKubeRouter(kr); err != nil {
			t.Errorf("stop kube-router: %v", err)
		}
	})
	var reason string
	if err := kubetest.WaitFor(2*time.Minute, 200*time.Millisecond, "the policy enforced", func() (bool, error) {
		if kr.exited() {
			return false, fmt.Errorf("kube-router exited")
		}
		reason = dialFrom(probe, target(), 2*time.Second)
		return reason != "", fmt.Errorf("the probe Pod still connects")
	}); err != nil {
		t.Fatalf("%v; kube-router's log:\n%s", err, kr.tailLog(5000))
	}
	figs = append(figs, fmt.Sprintf("NetworkPolicy (kube-router %s, firewall only): enforced %s after its start; "+
		"before it, the probe Pod and the compute's egress connected", kubeRouterVersion, ms(time.Since(t0))))
	figs = append(figs, fmt.Sprintf("  a non-daemon Pod of the namespace -> compute %s: %s", target(), reason))
	for _, a := range egress {
		r := dialFrom(mariadbd(), a, 3*time.Second)
		if r == "" {
			t.Errorf("with the policy, the compute still reaches %s", a)
		}
		figs = append(figs, fmt.Sprintf("  compute -> %s: %s", a, orConnected(r)))
	}
	// The daemon's path: logins through the Service, then a suspend and a
	// wake, whose new Pod gets the policy too.
	loop := startLoginLoop(t, cfg)
	time.Sleep(3 * time.Second)
	ok, fails, _ := loop.finish()
	if len(fails) > 0 || ok == 0 {
		t.Errorf("daemon logins with the policy: %d ok, %d failed: %v", ok, len(fails), describeFails(fails, time.Now()))
	}
	api.Call("POST", "/api/v1/projects/"+clusterProject+"/compute/"+cid+"/suspend", "", 200, nil)
	t1 := time.Now()
	checkRows(t, cfg, 3)
	woke := time.Since(t1)
	r := dialFrom(probe, target(), 3*time.Second)
	if r == "" {
		t.Errorf("with the policy, the probe Pod reaches the new compute Pod")
	}
	figs = append(figs, fmt.Sprintf("  daemon logins through the Service with the policy: %d ok, %d failed; "+
		"suspend + wake by login: %s, rows intact; probe -> new compute Pod: %s", ok, len(fails), ms(woke), orConnected(r)))
	return figs
}

func orConnected(r string) string {
	if r == "" {
		return "CONNECTED"
	}
	return "blocked (" + r + ")"
}

// startProbePod runs a Pod that is not a daemon's in the daemon's
// namespace (restricted, as the namespace enforces), and returns the pid
// of its process, whose network namespace the checks dial from.
func (e *env) startProbePod(t *testing.T) int {
	ctx := t.Context()
	cs := e.cluster.client
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "policy-probe", Namespace: daemonNS,
			Labels: map[string]string{"app.kubernetes.io/name": "policy-probe"}},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser: ptrTo[int64](mysqlUID), RunAsGroup: ptrTo[int64](mysqlUID), RunAsNonRoot: ptrTo(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			TerminationGracePeriodSeconds: ptrTo[int64](0),
			Containers: []corev1.Container{{
				Name: "probe", Image: mariadbImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sleep", "infinity"},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptrTo(false),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
	if _, err := cs.CoreV1().Pods(daemonNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := kubetest.WaitFor(time.Minute, 200*time.Millisecond, "probe Pod running", func() (bool, error) {
		if procs := podProcesses("sleep"); len(procs) == 1 {
			pid = procs[0].pid
			return true, nil
		}
		return false, nil
	}); err != nil {
		t.Fatal(err)
	}
	return pid
}
