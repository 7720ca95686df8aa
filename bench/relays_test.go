package bench

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/proxy"
)

var relays = flag.String("relays", "", "comma-separated relays of BenchmarkRelays (default: event-loop,goroutines,haproxy)")

// BenchmarkRelays runs sysbench through each of the proxy's relays and
// through haproxy, interleaved in one run against one mariadbd, and
// reports each one's transactions/s and CPU per transaction. It is the
// A/B test behind the proxy's default relay:
//
//	go test -run '^$' -bench Relays -benchtime 1x ./bench -args -proxytime=5s -proxythreads=4
func BenchmarkRelays(b *testing.B) {
	dir := b.TempDir()
	sock := prepareSysbench(b, dir)
	targets := map[string]Target{}
	cpu := map[string]func() time.Duration{}
	for _, relay := range []string{proxy.RelayEventLoop, proxy.RelayGoroutines} {
		targets[relay] = startProxy(b, dir, sock, relay)
		cpu[relay] = func() time.Duration { return cpuTime(b) }
	}
	h, err := StartHAProxy(dir, "127.0.0.1:"+freePort(b), sock)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Stop)
	host, port, _ := net.SplitHostPort(h.Addr)
	p, _ := strconv.Atoi(port)
	targets["haproxy"] = Target{Name: "haproxy", Host: host, Port: p, User: "sb", Pass: "pw"}
	cpu["haproxy"] = func() time.Duration { return pidCPU(b, h.PID()) }

	names := []string{proxy.RelayEventLoop, proxy.RelayGoroutines, "haproxy"}
	if *relays != "" {
		names = strings.Split(*relays, ",")
	}
	tps := map[string][]float64{}
	cpuPerTxn := map[string][]float64{}
	ctx := context.Background()
	for b.Loop() {
		for _, name := range names {
			c0 := cpu[name]()
			res, err := SysbenchRun(ctx, targets[name], *proxyWorkload, *proxyThreads, *proxyTime)
			if err != nil {
				b.Fatalf("%s: %v", name, err)
			}
			used := cpu[name]() - c0
			tps[name] = append(tps[name], res.TPS)
			cpuPerTxn[name] = append(cpuPerTxn[name], float64(used.Microseconds())/(res.TPS*proxyTime.Seconds()))
		}
	}
	for _, name := range names {
		b.ReportMetric(Median(tps[name]), name+"-tps")
		b.ReportMetric(Median(cpuPerTxn[name]), name+"-cpu-µs/txn")
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

// pidCPU is another process's user+system CPU time, from /proc.
func pidCPU(tb testing.TB, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

func freePort(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
