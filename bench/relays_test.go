package bench

import (
	"context"
	"flag"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/proxy"
)

var relays = flag.String("relays", "", "comma-separated relays of BenchmarkRelays (default: event-loop,goroutines,haproxy)")

// BenchmarkRelays runs sysbench through each of the proxy's relay engines
// and through haproxy, interleaved in one run against one mariadbd, and
// reports each one's transactions/s and CPU per transaction:
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
