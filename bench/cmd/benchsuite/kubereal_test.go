package main

import (
	"strings"
	"testing"
)

// realOutput is the end of TestRealNodeDaemon's verbose output.
const realOutput = `=== RUN   TestRealNodeDaemon
    serverlessd_test.go:138: REALNODE FIGURES (2026-12-02, 2 cores, containerd+runc, cgroup v1, hostPath volumes):
        create compute (POST until 201: claim provisioned and bound, datadir initialized): 3.065s (driver's Start: Pod create call 26ms, container running at 846ms, admin login at 3.002s)
        resume (suspend, then a new login + SELECT COUNT(*), login start to answer) over 20 cycles: p50 1.013s, p99 (= max) 1.13s, min 967ms
          driver: Pod create call: p50 12ms, max 26ms
        in-place crash recovery (SIGKILL of mariadbd, then a new login + SELECT COUNT(*)): 1.426s, same Pod and IP, restarts 0 -> 1, the proxy waited for the restart (CheckBackend): true
        destroy: DELETE answered in 2.604s; Pod, PVC, Secret, PV and folder gone in 2.814s
--- PASS: TestRealNodeDaemon (120.25s)
=== RUN   TestRealNodeBackups
    backup_test.go:34: REALNODE BACKUP FIGURES (2026-12-02, 2 cores):
        suspend to snapshot listed (an agent Pod: binary logs and datadir to S3): 4.923s
        point-in-time restore from the hot backup: 5.798s
--- PASS: TestRealNodeBackups (152.83s)
PASS
`

func TestParseKubeReal(t *testing.T) {
	r, err := parseKubeReal(realOutput)
	if err != nil {
		t.Fatal(err)
	}
	if r.Cycles != 20 || r.ResumeP50 != 1.013 || r.ResumeP99 != 1.13 || r.Create != 3.065 || r.Crash != 1.426 {
		t.Errorf("parsed %+v", r)
	}
	if !strings.HasPrefix(r.Backups, "REALNODE BACKUP FIGURES") || !strings.HasSuffix(r.Backups, "5.798s") ||
		strings.Contains(r.Figures, "BACKUP") {
		t.Errorf("backup block %q, figures %q", r.Backups, r.Figures)
	}
	if _, err := parseKubeReal("--- FAIL: TestRealNodeDaemon"); err == nil {
		t.Error("output without figures parsed")
	}
}

// TestRenderKubeReal: the report's section and target row render.
func TestRenderKubeReal(t *testing.T) {
	r, err := parseKubeReal(realOutput)
	if err != nil {
		t.Fatal(err)
	}
	res := &Results{KubeReal: r}
	res.Targets = targets(res)
	out, err := render(res)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Kubernetes on a real node", "Resume p50 **1.013 s**", "resume p50 under 1 s, p99 under 2 s",
		"Backups on the same node", "point-in-time restore from the hot backup: 5.798s"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the report does not say %q", want)
		}
	}
}
