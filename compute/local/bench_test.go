package local

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/serverlessd/serverlessd/store"
)

// Run with: go test -run '^$' -bench . -benchtime 50x ./compute/local/

// BenchmarkResume measures what a waking client waits for: Start of a
// stopped compute until a fresh connection answers SELECT 1.
func BenchmarkResume(b *testing.B) {
	d, _ := newDriver(b, Options{})
	c := newCompute(b, d, "")
	start(b, d, c) // the first start applies the admin password: not a resume
	cr, err := d.Admin(context.Background(), c)
	if err != nil {
		b.Fatal(err)
	}
	var times []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		stop(b, d, c)
		b.StartTimer()
		t0 := time.Now()
		addr := start(b, d, c)
		selectOne(b, addr, cr.User, cr.Password)
		times = append(times, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, times)
	stop(b, d, c)
}

// BenchmarkProvisionTemplateCopy measures Provision as shipped: a sparse
// copy of the template datadir, fsynced.
func BenchmarkProvisionTemplateCopy(b *testing.B) {
	d, _ := newDriver(b, Options{})
	if _, err := d.templateData(context.Background()); err != nil {
		b.Fatal(err)
	}
	var times []time.Duration
	b.ResetTimer()
	for i := range b.N {
		c := &store.Compute{ID: fmt.Sprintf("cmp_copy%d", i)}
		t0 := time.Now()
		if err := d.Provision(context.Background(), c); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(t0))
		b.StopTimer()
		_ = d.Destroy(context.Background(), c)
		b.StartTimer()
	}
	b.StopTimer()
	reportPercentiles(b, times)
}

// BenchmarkProvisionInstallDB measures the alternative: mariadb-install-db
// (plus the same account set-up) for every compute.
func BenchmarkProvisionInstallDB(b *testing.B) {
	d, _ := newDriver(b, Options{})
	var times []time.Duration
	b.ResetTimer()
	for i := range b.N {
		c := &store.Compute{ID: fmt.Sprintf("cmp_idb%d", i)}
		l, _ := d.layoutFor(c.ID)
		t0 := time.Now()
		err := d.assemble(l, func(tmp layout) error {
			if err := d.installDatadir(context.Background(), tmp.data()); err != nil {
				return err
			}
			return syncTree(tmp.data())
		})
		if err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(t0))
		b.StopTimer()
		_ = d.Destroy(context.Background(), c)
		b.StartTimer()
	}
	b.StopTimer()
	reportPercentiles(b, times)
}

// BenchmarkCreate measures a new compute until it answers: Provision, the
// first Start (which applies the admin password) and SELECT 1.
func BenchmarkCreate(b *testing.B) {
	d, _ := newDriver(b, Options{})
	if _, err := d.templateData(context.Background()); err != nil {
		b.Fatal(err)
	}
	var times []time.Duration
	b.ResetTimer()
	for i := range b.N {
		c := &store.Compute{ID: fmt.Sprintf("cmp_new%d", i)}
		t0 := time.Now()
		if err := d.Provision(context.Background(), c); err != nil {
			b.Fatal(err)
		}
		addr := start(b, d, c)
		cr, _ := d.Admin(context.Background(), c)
		selectOne(b, addr, cr.User, cr.Password)
		times = append(times, time.Since(t0))
		b.StopTimer()
		_ = d.Destroy(context.Background(), c)
		b.StartTimer()
	}
	b.StopTimer()
	reportPercentiles(b, times)
}

func selectOne(b *testing.B, addr, user, password string) {
	b.Helper()
	conn, err := client.Connect(strings.TrimPrefix(addr, "unix:"), user, password, "")
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Execute("SELECT 1"); err != nil {
		b.Fatal(err)
	}
}

func reportPercentiles(b *testing.B, times []time.Duration) {
	if len(times) == 0 {
		return
	}
	slices.Sort(times)
	pct := func(p float64) float64 {
		return float64(times[int(p*float64(len(times)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op") // the percentiles say more than the mean
}
