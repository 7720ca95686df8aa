package kube

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store/postgres/pgtest"
	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// TestTwoReplicas runs two daemons on one PostgreSQL store and the
// harness's cluster, as the Deployment's replicas: one leads (the Lease),
// both serve. Activity seen only by the follower keeps the compute awake;
// without it the leader suspends it, and the follower's open session goes
// on after the suspend. Killing the leader loses no login on the other,
// which takes the lease over; a stopping daemon keeps letting logins in
// for its drain delay while its readiness fails.
func TestTwoReplicas(t *testing.T) {
	ctx := ctxFor(t, 6*time.Minute)
	dsn := pgtest.Start(t)
	more := fmt.Sprintf(`store:
  driver: postgres
  dsn: %q
scheduler:
  interval: 300ms
shutdown:
  drain_delay: 2s
  drain_timeout: 2s
`, dsn)
	a := startDaemonWith(t, t.TempDir(), freeAddr(t), freeAddr(t), more)
	waitLog(t, a, "leading: this daemon suspends idle computes")
	b := startDaemonWith(t, t.TempDir(), freeAddr(t), freeAddr(t), more)

	pw := a.CreateProject(`{"name":"duo","config":{"idle_timeout":4}}`)
	var c computeOut
	a.Call("POST", "/api/v1/projects/duo/compute", `{}`, 201, &c)
	name := "serverlessd-" + strings.ReplaceAll(c.Compute.ID, "_", "-")

	// Only the follower sees the sessions: the leader must count them.
	db := b.open("duo", "root", pw)
	db.SetMaxOpenConns(1)
	kubetest.MustExec(t, db, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)")
	for i := range 10 {
		kubetest.MustExec(t, db, fmt.Sprintf("INSERT INTO app.t VALUES (%d)", i))
		time.Sleep(time.Second)
	}
	if s := a.compute("duo").Compute.State; s != "active" {
		t.Fatalf("compute %s after 10 s of the follower's traffic with idle_timeout 4 s; want active", s)
	}
	t0 := time.Now()
	waitState(t, a, "duo", "suspended", time.Minute)
	t.Logf("the leader suspended the compute %s after the follower's last command", ms(time.Since(t0)))
	checkSuspended(t, ctx, name)
	// The follower's session, idle through the suspend, goes on.
	if n := count(t, db, "SELECT COUNT(*) FROM app.t"); n != 10 {
		t.Errorf("%d rows after the suspend, want 10", n)
	}

	// The leader dies: the follower serves every login meanwhile, and
	// takes the lease over.
	stop := loginLoop(t, b, "duo", pw)
	a.kill()
	waitLog(t, b, "leading: this daemon suspends idle computes")
	if ok, failed := stop(); failed > 0 || ok == 0 {
		t.Errorf("logins on the follower while the leader died: %d ok, %d failed", ok, failed)
	}

	// A stopping daemon: readiness fails, logins still get in for the
	// drain delay.
	stop = loginLoop(t, b, "duo", pw)
	time.Sleep(300 * time.Millisecond)
	go b.stop()
	time.Sleep(time.Second)
	if code := b.readyz(); code != 503 {
		t.Errorf("readyz of a draining daemon: %d, want 503", code)
	}
	if ok, failed := stop(); failed > 0 || ok == 0 {
		t.Errorf("logins during the drain delay: %d ok, %d failed", ok, failed)
	}
}

// loginLoop logs in to d and runs SELECT 1 over and over, each time on a
// new connection, until the returned func is called; it returns how many
// logins succeeded and failed.
func loginLoop(t *testing.T, d *daemon, project, pw string) func() (int64, int64) {
	t.Helper()
	var ok, failed atomic.Int64
	var first atomic.Value
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			db, _ := sql.Open("mysql", d.dsn(project, "root", pw))
			var one int
			if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
				if ctx.Err() == nil {
					failed.Add(1)
					first.CompareAndSwap(nil, err.Error())
				}
			} else {
				ok.Add(1)
			}
			db.Close()
		}
	}()
	return func() (int64, int64) {
		cancel()
		<-done
		if err := first.Load(); err != nil {
			t.Logf("first failed login: %v", err)
		}
		return ok.Load(), failed.Load()
	}
}

// waitLog waits until the daemon's log says want.
func waitLog(t *testing.T, d *daemon, want string) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !strings.Contains(d.log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon never logged %q; its log:\n%s", want, kubetest.Tail(d.log.String(), 6000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
