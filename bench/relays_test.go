package bench

import (
	"context"
	"database/sql"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/proxy"
)

var relays = flag.String("relays", "", "comma-separated relays of BenchmarkRelays (default: event-loop,event-loop-untracked,goroutines,haproxy)")

// untracked is BenchmarkRelays' name for the event loop relaying sessions
// whose mariadbd session trackers are off: what tracking costs, beside it.
const untracked = proxy.RelayEventLoop + "-untracked"

// BenchmarkRelays runs sysbench through each of the proxy's relay engines
// and through haproxy, interleaved in one run against one mariadbd, and
// reports each one's transactions/s, its CPU per transaction and
// mariadbd's:
//
//	go test -run '^$' -bench Relays -benchtime 1x ./bench -args -proxytime=5s -proxythreads=4
func BenchmarkRelays(b *testing.B) {
	dir := localtest.Dir(b)
	sock := prepareSysbench(b, dir)
	targets := map[string]Target{}
	cpu := map[string]func() time.Duration{}
	for _, relay := range []string{proxy.RelayEventLoop, proxy.RelayGoroutines} {
		targets[relay] = startProxy(b, dir, sock, relay)
		cpu[relay] = func() time.Duration { return cpuTime(b) }
	}
	targets[untracked], cpu[untracked] = targets[proxy.RelayEventLoop], cpu[proxy.RelayEventLoop]
	dbCPU := mariadbdCPU(b, sock)
	addr, err := FreeAddr()
	if err != nil {
		b.Fatal(err)
	}
	h, err := StartHAProxy(dir, addr, sock)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Stop)
	host, port, _ := net.SplitHostPort(h.Addr)
	p, _ := strconv.Atoi(port)
	targets["haproxy"] = Target{Name: "haproxy", Host: host, Port: p, User: "sb", Pass: "pw"}
	cpu["haproxy"] = func() time.Duration {
		d, err := ProcCPU(h.PID())
		if err != nil {
			b.Fatal(err)
		}
		return d
	}

	names := []string{proxy.RelayEventLoop, untracked, proxy.RelayGoroutines, "haproxy"}
	if *relays != "" {
		names = strings.Split(*relays, ",")
	}
	tps := map[string][]float64{}
	cpuPerTxn, dbPerTxn := map[string][]float64{}, map[string][]float64{}
	ctx := context.Background()
	for b.Loop() {
		for _, name := range names {
			setTrackers(b, sock, name != untracked)
			c0, d0 := cpu[name](), dbCPU()
			res, err := SysbenchRun(ctx, targets[name], *proxyWorkload, *proxyThreads, *proxyTime)
			if err != nil {
				b.Fatalf("%s: %v", name, err)
			}
			used, dbUsed := cpu[name]()-c0, dbCPU()-d0
			txns := res.TPS * proxyTime.Seconds()
			tps[name] = append(tps[name], res.TPS)
			cpuPerTxn[name] = append(cpuPerTxn[name], float64(used.Microseconds())/txns)
			dbPerTxn[name] = append(dbPerTxn[name], float64(dbUsed.Microseconds())/txns)
		}
	}
	setTrackers(b, sock, true)
	for _, name := range names {
		b.ReportMetric(Median(tps[name]), name+"-tps")
		b.ReportMetric(Median(cpuPerTxn[name]), name+"-cpu-µs/txn")
		b.ReportMetric(Median(dbPerTxn[name]), name+"-mariadbd-cpu-µs/txn")
	}
	if len(tps["haproxy"]) > 0 {
		for _, name := range names {
			if name == "haproxy" {
				continue
			}
			b.ReportMetric(Median(tps[name])/Median(tps["haproxy"]), name+"/haproxy")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// trackerSettings turn mariadbd's session trackers on, as computes run
// (mariadb.SessionOptions), or off. Sessions take them at login.
var trackerSettings = map[bool]string{
	true: "SET GLOBAL session_track_schema = ON, session_track_state_change = ON, " +
		"session_track_system_variables = '*', session_track_transaction_info = 'CHARACTERISTICS'",
	false: "SET GLOBAL session_track_schema = OFF, session_track_state_change = OFF, " +
		"session_track_system_variables = '', session_track_transaction_info = 'OFF'",
}

// setTrackers sets the trackers for the sessions sysbench opens next.
func setTrackers(b *testing.B, sock string, on bool) {
	db, err := sql.Open("mysql", "sb:pw@unix("+sock+")/")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(trackerSettings[on]); err != nil {
		b.Fatalf("session trackers on=%v: %v", on, err)
	}
}

// mariadbdCPU returns a reader of the CPU time of the mariadbd serving
// sock (its pid file sits beside the socket).
func mariadbdCPU(b *testing.B, sock string) func() time.Duration {
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(sock), "mariadbd.pid"))
	if err != nil {
		b.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		b.Fatalf("mariadbd pid file: %v", err)
	}
	return func() time.Duration {
		d, err := ProcCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
}
