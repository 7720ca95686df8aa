package e2e

import (
	"net/url"
	"syscall"
	"testing"
	"time"
)

type billing struct {
	Projects []struct {
		ProjectName    string  `json:"project_name"`
		ComputeSeconds float64 `json:"compute_seconds"`
	} `json:"projects"`
}

func (d *daemon) computeSeconds(t *testing.T, since time.Time) float64 {
	t.Helper()
	q := url.Values{"from": {since.Add(-time.Minute).UTC().Format(time.RFC3339)}, "to": {time.Now().Add(time.Minute).UTC().Format(time.RFC3339)}}
	var b billing
	if code := d.getJSON("/api/v1/usage?"+q.Encode(), &b); code != 200 {
		t.Fatalf("usage report: HTTP %d", code)
	}
	var s float64
	for _, p := range b.Projects {
		s += p.ComputeSeconds
	}
	return s
}

// TestMeteringSurvivesKill9: an interval left open by a daemon killed with -9
// is closed at the compute's last heartbeat when its mariadbd died too, and
// kept (not doubled) when the new daemon adopts the running mariadbd.
func TestMeteringSurvivesKill9(t *testing.T) {
	fast := "SERVERLESSD_SCHEDULER_INTERVAL=200ms"
	first := startDaemon(t, "", fast)
	t0 := time.Now()
	var p projectOut
	first.cliJSON(&p, "project", "create", "meter", "--memory", "128Mi")
	time.Sleep(2 * time.Second) // heartbeats advance last_seen
	pids := mariadbdPIDs(t, p.Compute.Compute.ID)
	first.stop(syscall.SIGKILL)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	killedAt := time.Now()

	second := startDaemon(t, first.dataDir, fast)
	got := second.computeSeconds(t, t0)
	if max := killedAt.Sub(t0).Seconds(); got < 1.5 || got > max {
		t.Fatalf("after kill -9 of daemon and mariadbd: %.2f compute-seconds, want between 1.5 and %.2f", got, max)
	}
	time.Sleep(time.Second)
	if again := second.computeSeconds(t, t0); again != got {
		t.Fatalf("the interval was left open: %.2f then %.2f compute-seconds", got, again)
	}

	// Now the adoption case: the mariadbd survives the daemon.
	var c computeOut
	second.cliJSON(&c, "compute", "resume", "meter")
	t1 := time.Now()
	time.Sleep(time.Second)
	second.stop(syscall.SIGKILL)
	third := startDaemon(t, first.dataDir, fast)
	time.Sleep(time.Second)
	third.cliJSON(&c, "compute", "suspend", "meter")
	wall := time.Since(t1).Seconds()
	total := third.computeSeconds(t, t0) - got
	if total < wall*0.8 || total > wall+0.5 {
		t.Fatalf("adopted compute counted %.2f s for %.2f s of wall time (counted twice or lost)", total, wall)
	}
}
