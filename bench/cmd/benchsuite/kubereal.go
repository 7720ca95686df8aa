package main

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// KubeRealResult is the kubernetes driver on a real one-node cluster: the
// tests TestRealNodeDaemon and TestRealNodeBackups of make test-kube-real,
// which run the daemon against a real kubelet, containerd and CNI on this
// machine.
type KubeRealResult struct {
	Elapsed time.Duration
	// Figures is the test's "REALNODE FIGURES" block, as it printed it,
	// and Backups the "REALNODE BACKUP FIGURES" block.
	Figures, Backups string
	// Parsed from Figures, in seconds.
	Create, ResumeP50, ResumeP99, Crash float64
	Cycles                              int
}

// kubeRealTest is what the phase runs, from test/kube.
var kubeRealTest = []string{"test", "-tags", "realnode", "-count=1", "-timeout", "60m", "-v", "-run", "TestRealNodeDaemon|TestRealNodeBackups", "./realnode"}

// kubeReal runs TestRealNodeDaemon and TestRealNodeBackups and keeps
// their figures. It needs root
// (the node changes the host's network and cgroups, and puts them back).
func (s *suite) kubeReal() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the real-node phase needs root (make test-kube-real)")
	}
	t0 := time.Now()
	cmd := exec.Command("go", kubeRealTest...)
	cmd.Dir = "test/kube"
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(kubeRealTest, " "), err, lastLines(out, 40))
	}
	res, err := parseKubeReal(string(out))
	if err != nil {
		return err
	}
	res.Elapsed = time.Since(t0)
	log.Printf("kube-real: resume p50 %.3f s, p99 %.3f s over %d cycles", res.ResumeP50, res.ResumeP99, res.Cycles)
	s.res.KubeReal = res
	return nil
}

var (
	realBlock   = regexp.MustCompile(`(?s)REALNODE FIGURES.*?\n(.*?)\n--- `)
	backupBlock = regexp.MustCompile(`(?s)REALNODE BACKUP FIGURES.*?\n(.*?)\n--- `)
	realCreate  = regexp.MustCompile(`create compute \(.*?\): ([0-9.]+)(ms|s)`)
	realResume  = regexp.MustCompile(`over (\d+) cycles: p50 ([0-9.]+)(ms|s), p99 \(= max\) ([0-9.]+)(ms|s)`)
	realCrash   = regexp.MustCompile(`in-place crash recovery \(.*?\): ([0-9.]+)(ms|s)`)
)

// parseKubeReal takes the figures out of the test's output.
func parseKubeReal(out string) (*KubeRealResult, error) {
	m := realBlock.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("no REALNODE FIGURES block in the test's output:\n%s", lastLines([]byte(out), 40))
	}
	res := &KubeRealResult{Figures: strings.TrimRight(m[0][:len(m[0])-len("\n--- ")], "\n")}
	if b := backupBlock.FindString(out); b != "" {
		res.Backups = strings.TrimRight(b[:len(b)-len("\n--- ")], "\n")
	}
	sec := func(v, unit string) float64 {
		f, _ := strconv.ParseFloat(v, 64)
		if unit == "ms" {
			return f / 1000
		}
		return f
	}
	if c := realCreate.FindStringSubmatch(res.Figures); c != nil {
		res.Create = sec(c[1], c[2])
	}
	if r := realResume.FindStringSubmatch(res.Figures); r != nil {
		res.Cycles, _ = strconv.Atoi(r[1])
		res.ResumeP50, res.ResumeP99 = sec(r[2], r[3]), sec(r[4], r[5])
	}
	if c := realCrash.FindStringSubmatch(res.Figures); c != nil {
		res.Crash = sec(c[1], c[2])
	}
	if res.Cycles == 0 {
		return nil, fmt.Errorf("no resume figures in the REALNODE FIGURES block:\n%s", res.Figures)
	}
	return res, nil
}

// kubeRealTargets checks the resume times on a real node.
func kubeRealTargets(kr *KubeRealResult) []Target {
	const goal = "kubernetes on a real node: resume p50 under 1 s, p99 under 2 s"
	if kr == nil {
		return []Target{{Issue: "18", Goal: goal, Status: notRun}}
	}
	t := Target{Issue: "18", Goal: goal,
		Measured: fmt.Sprintf("p50 %.3f s, p99 %.3f s over %d cycles; create %.2f s; in-place crash recovery %.2f s",
			kr.ResumeP50, kr.ResumeP99, kr.Cycles, kr.Create, kr.Crash),
		Status: status(kr.ResumeP50 < 1 && kr.ResumeP99 < 2)}
	if t.Status != met {
		t.Limit = "the kubelet reports a started container (with the Pod's IP) at its next status relist, once a second: about half a second of every resume waits for it"
	}
	return []Target{t}
}
