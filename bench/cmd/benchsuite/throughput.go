package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/serverlessd/serverlessd/bench"
)

// Cell is one workload at one thread count on the three paths.
type Cell struct {
	Workload string
	Threads  int
	// Median transactions/s over the repetitions.
	Direct, Serverlessd, HAProxy float64
	// Medians of the per-repetition ratios (each repetition runs the three
	// paths back to back, so a ratio compares neighbours in time).
	SDRatio, HARatio, SDvsHA float64
	// The spread of SDvsHA over the repetitions.
	SDvsHAMin, SDvsHAMax float64
	// Relay CPU per transaction (µs): the daemon's and haproxy's own
	// processes, from /proc, over their runs.
	SDCPU, HACPU float64
	// CPU migrations per second of the relay's threads (0 where the
	// kernel does not report them).
	SDMigr, HAMigr float64
	// mariadbd's CPU per transaction on each path.
	DBCPUDirect, DBCPUSD, DBCPUHA float64
	// Ignored errors per second (deadlocks, read_write only), on serverlessd.
	Errors float64
}

// ThroughputResult is the sysbench matrix.
type ThroughputResult struct {
	RunTime   time.Duration
	Reps      int
	Cells     []Cell
	MetCells  int // cells where serverlessd >= haproxy
	Project   string
	Tables    int
	TableSize int
	// Syscalls per transaction of each relay (when strace is installed).
	Syscalls []*SyscallTable
}

type pathRun struct {
	target bench.Target
	relay  int // pid whose CPU is the relay's (0: none)
}

// throughput runs sysbench direct (the compute's unix socket), through
// serverlessd and through haproxy, all against the same compute's mariadbd
// with the same data, interleaved.
func (s *suite) throughput(d *daemon) error {
	p, err := d.createProject("tput", 0)
	if err != nil {
		return err
	}
	if err := d.createCompute(p, ""); err != nil {
		return err
	}
	db, err := sql.Open("mysql", directDSN(p, ""))
	if err != nil {
		return err
	}
	if _, err := db.Exec("CREATE DATABASE " + bench.SysbenchDB); err != nil {
		db.Close()
		return err
	}
	db.Close()
	ctx := context.Background()
	direct := bench.Target{Name: "direct", Socket: p.Socket, User: "root", Pass: p.Password}
	log.Printf("sysbench prepare: %d tables of %d rows", bench.SysbenchTables, bench.SysbenchTableSize)
	if err := bench.SysbenchPrepare(ctx, direct); err != nil {
		return err
	}
	haAddr, err := bench.FreeAddr()
	if err != nil {
		return err
	}
	ha, err := bench.StartHAProxy(s.opts.workDir, haAddr, p.Socket)
	if err != nil {
		return err
	}
	defer onInterrupt(ha.Stop)()
	defer ha.Stop()
	dbPID, err := mariadbdPID(d.computeDir(p))
	if err != nil {
		return err
	}
	proxyHost, proxyPort := splitAddr(d.proxy)
	haHost, haPort := splitAddr(haAddr)
	paths := []pathRun{
		{target: direct},
		{target: bench.Target{Name: "serverlessd", Host: proxyHost, Port: proxyPort, User: p.Name + ".root", Pass: p.Password}, relay: d.pid()},
		{target: bench.Target{Name: "haproxy", Host: haHost, Port: haPort, User: "root", Pass: p.Password}, relay: ha.PID()},
	}
	// Warm the buffer pool and each path's first connections.
	for i, pr := range paths {
		t := 3 * time.Second
		if i > 0 {
			t = time.Second
		}
		if _, err := bench.SysbenchRun(ctx, pr.target, "oltp_read_only", 2, t); err != nil {
			return err
		}
	}
	res := &ThroughputResult{RunTime: s.opts.sbTime, Reps: s.opts.sbReps, Project: p.Name,
		Tables: bench.SysbenchTables, TableSize: bench.SysbenchTableSize}
	for _, wl := range s.opts.sbWorkloads {
		for _, th := range s.opts.sbThreads {
			cell, err := s.cell(ctx, paths, dbPID, wl, th)
			if err != nil {
				return err
			}
			res.Cells = append(res.Cells, cell)
			if cell.SDvsHA >= 1 {
				res.MetCells++
			}
			log.Printf("%-18s %2d thr: direct %8.0f  serverlessd %8.0f (%.2f)  haproxy %8.0f (%.2f)  sd/ha %.2f",
				wl, th, cell.Direct, cell.Serverlessd, cell.SDRatio, cell.HAProxy, cell.HARatio, cell.SDvsHA)
		}
	}
	if _, err := exec.LookPath("strace"); err == nil {
		for _, wl := range []string{"oltp_point_select", "oltp_read_only"} {
			t, err := s.syscalls(ctx, paths, dbPID, wl, 4)
			if err != nil {
				return err
			}
			res.Syscalls = append(res.Syscalls, t)
		}
	}
	s.res.Throughput = res
	return nil
}

// cell runs one workload and thread count on the three paths, sbReps times,
// rotating the order each repetition so that no path always runs first.
func (s *suite) cell(ctx context.Context, paths []pathRun, dbPID int, wl string, th int) (Cell, error) {
	c := Cell{Workload: wl, Threads: th}
	tps := make([][]float64, len(paths))
	var sdRatio, haRatio, sdVsHA []float64
	relayCPU := make([]time.Duration, len(paths))
	relayMigr := make([]int64, len(paths))
	dbCPU := make([]time.Duration, len(paths))
	txns := make([]float64, len(paths))
	var errs []float64
	for rep := range s.opts.sbReps {
		got := make([]float64, len(paths))
		for k := range paths {
			i := (k + rep) % len(paths)
			pr := paths[i]
			r0, d0, m0 := cpuOf(pr.relay), cpuOf(dbPID), migrationsOf(pr.relay)
			r, err := bench.SysbenchRun(ctx, pr.target, wl, th, s.opts.sbTime)
			if err != nil {
				return c, err
			}
			relayCPU[i] += cpuOf(pr.relay) - r0
			relayMigr[i] += migrationsOf(pr.relay) - m0
			dbCPU[i] += cpuOf(dbPID) - d0
			txns[i] += r.TPS * s.opts.sbTime.Seconds()
			got[i] = r.TPS
			tps[i] = append(tps[i], r.TPS)
			if i == 1 {
				errs = append(errs, r.Errors)
			}
		}
		sdRatio = append(sdRatio, got[1]/got[0])
		haRatio = append(haRatio, got[2]/got[0])
		sdVsHA = append(sdVsHA, got[1]/got[2])
	}
	c.Direct, c.Serverlessd, c.HAProxy = bench.Median(tps[0]), bench.Median(tps[1]), bench.Median(tps[2])
	c.SDRatio, c.HARatio, c.SDvsHA = bench.Median(sdRatio), bench.Median(haRatio), bench.Median(sdVsHA)
	c.SDvsHAMin, c.SDvsHAMax = minMax(sdVsHA)
	per := func(d time.Duration, n float64) float64 { return float64(d.Microseconds()) / n }
	c.SDCPU, c.HACPU = per(relayCPU[1], txns[1]), per(relayCPU[2], txns[2])
	secs := s.opts.sbTime.Seconds() * float64(s.opts.sbReps)
	c.SDMigr, c.HAMigr = float64(relayMigr[1])/secs, float64(relayMigr[2])/secs
	c.DBCPUDirect, c.DBCPUSD, c.DBCPUHA = per(dbCPU[0], txns[0]), per(dbCPU[1], txns[1]), per(dbCPU[2], txns[2])
	c.Errors = bench.Median(errs)
	return c, nil
}

func cpuOf(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	d, _ := bench.ProcCPU(pid)
	return d
}

func migrationsOf(pid int) int64 {
	if pid == 0 {
		return 0
	}
	n, _ := bench.ProcMigrations(pid)
	return n
}

func minMax(xs []float64) (float64, float64) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range xs {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return lo, hi
}

func splitAddr(addr string) (string, int) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		panic(fmt.Sprintf("bad address %q", addr))
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// SyscallRow is one system call's count per transaction through each relay.
type SyscallRow struct {
	Name         string
	SD, HA       float64 // calls per transaction
	SDErr, HAErr float64 // of which failed (EAGAIN for reads), per transaction
}

// SyscallTable is strace's count for one workload on both relays.
type SyscallTable struct {
	Workload string
	Threads  int
	Rows     []SyscallRow // the relay processes
	DBRows   []SyscallRow // mariadbd, reached through each relay
}

// syscalls counts system calls per transaction with `strace -c -f`, for one
// short run per relay: the relay's own process, and the compute's mariadbd
// on each path. strace slows the processes it watches, so only the counts
// are used, never the timings: they show what each relay asks of the kernel
// per query, and what each path makes mariadbd do.
func (s *suite) syscalls(ctx context.Context, paths []pathRun, dbPID int, wl string, th int) (*SyscallTable, error) {
	const d = 3 * time.Second
	relay := make([]map[string][2]float64, 2)
	db := make([]map[string][2]float64, 2)
	for k, pr := range paths[1:] {
		var outs [2]string
		var cmds [2]*exec.Cmd
		for j, pid := range []int{pr.relay, dbPID} {
			outs[j] = filepath.Join(s.opts.workDir, fmt.Sprintf("strace-%s-%s-%d.txt", pr.target.Name, wl, j))
			cmds[j] = exec.Command("strace", "-c", "-f", "-p", strconv.Itoa(pid), "-o", outs[j])
			if err := cmds[j].Start(); err != nil {
				return nil, err
			}
		}
		time.Sleep(500 * time.Millisecond) // attach to every thread first
		r, err := bench.SysbenchRun(ctx, pr.target, wl, th, d)
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGINT)
			_ = c.Wait()
		}
		if err != nil {
			return nil, err
		}
		for j, m := range []*map[string][2]float64{&relay[k], &db[k]} {
			raw, err := os.ReadFile(outs[j])
			if err != nil {
				return nil, err
			}
			*m = parseStrace(raw, r.TPS*d.Seconds())
		}
	}
	return &SyscallTable{Workload: wl, Threads: th, Rows: syscallRows(relay), DBRows: syscallRows(db)}, nil
}

// syscallRows merges the serverlessd-path and haproxy-path counts into rows,
// most frequent first, keeping the calls made at least 0.1 times per
// transaction on either path.
func syscallRows(counts []map[string][2]float64) []SyscallRow {
	names := map[string]bool{}
	for _, c := range counts {
		for n := range c {
			names[n] = true
		}
	}
	var rows []SyscallRow
	for n := range names {
		sd, ha := counts[0][n], counts[1][n]
		if sd[0] >= 0.1 || ha[0] >= 0.1 {
			rows = append(rows, SyscallRow{Name: n, SD: sd[0], SDErr: sd[1], HA: ha[0], HAErr: ha[1]})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].SD+rows[i].HA > rows[j].SD+rows[j].HA })
	return rows
}

// parseStrace reads `strace -c` output into calls and errors per
// transaction, by system call.
func parseStrace(raw []byte, txns float64) map[string][2]float64 {
	m := map[string][2]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[len(f)-1] == "total" || f[len(f)-1] == "syscall" {
			continue
		}
		calls, err := strconv.ParseFloat(f[3], 64)
		if err != nil {
			continue
		}
		var errs float64
		if len(f) == 6 {
			errs, _ = strconv.ParseFloat(f[4], 64)
		}
		m[f[len(f)-1]] = [2]float64{calls / txns, errs / txns}
	}
	return m
}
