package bench

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Target is one way for sysbench to reach a database.
type Target struct {
	Name string
	// Socket is a unix socket path; when empty, Host and Port are used.
	Socket string
	Host   string
	Port   int
	User   string
	Pass   string
}

// Data set every throughput run uses: small enough to prepare in a few
// seconds and to sit in any compute's buffer pool, so the figures measure
// the path to the database, not the disk. The same sizes as the earlier
// recorded measurements, so figures stay comparable.
const (
	SysbenchTables    = 4
	SysbenchTableSize = 10000
	SysbenchDB        = "sbtest"
)

func (t Target) args() []string {
	a := []string{"--db-driver=mysql", "--mysql-user=" + t.User, "--mysql-password=" + t.Pass, "--mysql-db=" + SysbenchDB}
	if t.Socket != "" {
		return append(a, "--mysql-socket="+t.Socket)
	}
	// --mysql-ssl=off: sysbench must not negotiate TLS with the relays, or
	// serverlessd would be measured decrypting while haproxy only copies.
	return append(a, "--mysql-host="+t.Host, "--mysql-port="+strconv.Itoa(t.Port), "--mysql-ssl=off")
}

func tableArgs() []string {
	return []string{fmt.Sprintf("--tables=%d", SysbenchTables), fmt.Sprintf("--table-size=%d", SysbenchTableSize)}
}

// SysbenchPrepare creates and fills the sbtest tables through t. The
// database sbtest must exist.
func SysbenchPrepare(ctx context.Context, t Target) error {
	args := append([]string{"oltp_read_write"}, t.args()...)
	args = append(args, tableArgs()...)
	args = append(args, "--threads=4", "prepare")
	out, err := exec.CommandContext(ctx, "sysbench", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sysbench prepare: %v\n%s", err, tail(out))
	}
	return nil
}

// SysbenchResult is one sysbench run.
type SysbenchResult struct {
	TPS    float64 // transactions per second
	QPS    float64
	P95ms  float64 // 95th percentile latency of a transaction (SysbenchRun)
	Errors float64 // ignored errors per second (deadlocks in read_write)
	// PctMs is the latency of a transaction at the percentile the run asked
	// for (95 for SysbenchRun), in ms.
	PctMs float64
}

var (
	reTPS = regexp.MustCompile(`transactions:\s+\d+\s+\(([0-9.]+) per sec`)
	reQPS = regexp.MustCompile(`queries:\s+\d+\s+\(([0-9.]+) per sec`)
	rePct = regexp.MustCompile(`\d+th percentile:\s+([0-9.]+)`)
	reErr = regexp.MustCompile(`ignored errors:\s+\d+\s+\(([0-9.]+) per sec`)
)

// SysbenchRun runs one workload (oltp_point_select, oltp_read_only,
// oltp_read_write) through t for d with the given client threads.
func SysbenchRun(ctx context.Context, t Target, workload string, threads int, d time.Duration) (SysbenchResult, error) {
	r, err := SysbenchRunPct(ctx, t, workload, threads, d, 95)
	r.P95ms = r.PctMs
	return r, err
}

// SysbenchRunPct is SysbenchRun reporting the latency at percentile pct
// (1-99) in PctMs: 99 for a tail.
func SysbenchRunPct(ctx context.Context, t Target, workload string, threads int, d time.Duration, pct int) (SysbenchResult, error) {
	args := append([]string{workload}, t.args()...)
	args = append(args, tableArgs()...)
	args = append(args, fmt.Sprintf("--threads=%d", threads), fmt.Sprintf("--time=%d", int(d.Round(time.Second)/time.Second)),
		"--report-interval=0", fmt.Sprintf("--percentile=%d", pct), "run")
	out, err := exec.CommandContext(ctx, "sysbench", args...).CombinedOutput()
	if err != nil {
		return SysbenchResult{}, fmt.Errorf("sysbench %s %d threads via %s: %v\n%s", workload, threads, t.Name, err, tail(out))
	}
	var r SysbenchResult
	s := string(out)
	for _, f := range []struct {
		re  *regexp.Regexp
		dst *float64
	}{{reTPS, &r.TPS}, {reQPS, &r.QPS}, {rePct, &r.PctMs}, {reErr, &r.Errors}} {
		m := f.re.FindStringSubmatch(s)
		if m == nil {
			return r, fmt.Errorf("sysbench %s via %s: cannot parse its output:\n%s", workload, t.Name, tail(out))
		}
		*f.dst, _ = strconv.ParseFloat(m[1], 64)
	}
	return r, nil
}

// tail returns the last lines of a command's output, for error messages.
func tail(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}
