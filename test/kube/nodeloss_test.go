package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// TestLostNode powers off the node a project's Pod runs on, twice: once
// while the daemon is down (the restarted daemon serves at once, and the
// first login, which meets the dead Pod's address, lands on a new Pod on
// the other node) and once while it runs (the node watch marks the compute
// failed, and the next login force-deletes the Pod the dead kubelet will
// never stop). The rows committed before each loss are there after it.
func TestLostNode(t *testing.T) {
	ctx := ctxFor(t, 6*time.Minute)
	dataDir := t.TempDir()
	d := startDaemon(t, dataDir, freeAddr(t), freeAddr(t))
	pw := d.CreateProject(`{"name":"farm"}`)
	var c computeOut
	d.Call("POST", "/api/v1/projects/farm/compute", `{}`, 201, &c)
	name := "serverlessd-" + strings.ReplaceAll(c.Compute.ID, "_", "-")
	db := d.open("farm", "root", pw)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.cows (id INT PRIMARY KEY)", "INSERT INTO app.cows VALUES (1), (2)")
	db.Close()
	if on := podNode(t, ctx, name); on != nodeName {
		t.Fatalf("pod on %q, want %q (the only node)", on, nodeName)
	}

	// The node goes while no daemon runs.
	d.kill()
	if err := kubeNode.kill(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := kubeNode.revive(context.Background()); err != nil {
			t.Error(err)
		}
	})
	other := startSecondNode(t, ctx)
	t0 := time.Now()
	d = startDaemon(t, dataDir, d.api, d.proxy)
	t.Logf("daemon ready %s after its start, with the compute's node lost", ms(time.Since(t0)))
	db = d.open("farm", "root", pw)
	if n := count(t, db, "SELECT COUNT(*) FROM app.cows"); n != 2 {
		t.Errorf("%d rows after the node was lost, want 2", n)
	}
	kubetest.MustExec(t, db, "INSERT INTO app.cows VALUES (3)")
	db.Close()
	t.Logf("first login after the restart answered %s after the daemon's start", ms(time.Since(t0)))
	if on := podNode(t, ctx, name); on != other.name {
		t.Fatalf("pod on %q after the loss, want %q", on, other.name)
	}

	// The node goes while the daemon runs.
	if err := kubeNode.revive(ctx); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	if err := other.kill(ctx); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, "farm", "failed", 30*time.Second)
	t.Logf("compute failed %s after its node went Unknown", ms(time.Since(t1)))
	db = d.open("farm", "root", pw)
	if n := count(t, db, "SELECT COUNT(*) FROM app.cows"); n != 3 {
		t.Errorf("%d rows after the second node loss, want 3", n)
	}
	db.Close()
	if on := podNode(t, ctx, name); on != nodeName {
		t.Fatalf("pod on %q after the second loss, want %q", on, nodeName)
	}
	if !strings.Contains(d.log.String(), "force-deleting a pod on a lost node") {
		t.Errorf("the daemon did not force-delete the Pod of the lost node; its log:\n%s", kubetest.Tail(d.log.String(), 6000))
	}
	d.Call("DELETE", "/api/v1/projects/farm/compute/"+c.Compute.ID, "", 200, nil)
	waitNothingLeft(t, ctx, name)
}

// startSecondNode runs another harness node, sharing the first one's
// volumes (as a network volume would be reachable from both), until the
// test ends.
func startSecondNode(t *testing.T, ctx context.Context) *node {
	t.Helper()
	const name = "harness-node-2"
	if err := createNode(ctx, kube.client, name); err != nil {
		t.Fatal(err)
	}
	n := newNode(kube.client, name, kubeNode.dir, 128)
	nctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.run(nctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = kube.client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return n
}

// podNode is the node the Pod called name is bound to.
func podNode(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	pod, err := kube.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod.Spec.NodeName
}

// waitState waits until the project's compute is in state.
func waitState(t *testing.T, d *daemon, project, state string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		c := d.compute(project)
		if c.Compute.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("compute of %s is %s after %s, want %s; daemon log:\n%s", project, c.Compute.State, limit, state, kubetest.Tail(d.log.String(), 6000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
