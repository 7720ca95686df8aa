package quota_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/quota"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

const mi = 1 << 20

// fixture is a real SQLite store with tenants a (quotas given) and b (none),
// each with projects p0..p2 and a 128Mi compute each.
func fixture(t *testing.T, quotas store.TenantQuotas) (store.Store, map[string][]*store.Compute) {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	out := map[string][]*store.Compute{}
	for _, tn := range []*store.Tenant{{Name: "a", Quotas: quotas}, {Name: "b"}} {
		if err := st.CreateTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			p := &store.Project{Name: "p" + string(rune('0'+i)), TenantID: tn.ID}
			if err := st.CreateProject(ctx, p); err != nil {
				t.Fatal(err)
			}
			c := &store.Compute{ID: store.NewID("cmp"), ProjectID: p.ID, State: store.StateSuspended, Driver: "local",
				Spec: store.ComputeSpec{Resources: store.Resources{Memory: "128Mi"}}}
			if err := st.CreateCompute(ctx, c); err != nil {
				t.Fatal(err)
			}
			out[tn.Name] = append(out[tn.Name], c)
		}
	}
	return st, out
}

func refused(err error, quota string) bool {
	var qe *compute.QuotaError
	return errors.As(err, &qe) && strings.Contains(qe.Msg, quota)
}

func TestActiveMemory(t *testing.T) {
	st, cs := fixture(t, store.TenantQuotas{MaxActiveMemory: "256Mi"})
	q := &quota.Checker{Store: st}
	ctx := context.Background()
	a, b := cs["a"], cs["b"]
	if err := q.CheckStart(ctx, a[1], 128*mi); err != nil {
		t.Fatalf("a second 128Mi compute of a (256Mi in all): %v", err)
	}
	if err := q.CheckStart(ctx, a[2], 256*mi); !refused(err, "max_active_memory 256Mi") {
		t.Fatalf("a third 128Mi compute of a: %v, want a QuotaError naming max_active_memory", err)
	}
	if err := q.CheckStart(ctx, b[2], 256*mi); err != nil {
		t.Fatalf("tenant b has no quota: %v", err)
	}
}

func TestComputeSecondsPerMonth(t *testing.T) {
	st, cs := fixture(t, store.TenantQuotas{ComputeSecondsPerMonth: 3600})
	ctx := context.Background()
	month := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return month.Add(6 * time.Hour) }
	interval := func(c *store.Compute, start time.Time, d time.Duration) {
		iv := &store.UsageInterval{ProjectID: c.ProjectID, TenantID: c.TenantID, ComputeID: c.ID, Start: start}
		if err := st.StartInterval(ctx, iv); err != nil {
			t.Fatal(err)
		}
		if err := st.EndInterval(ctx, c.ID, start.Add(d)); err != nil {
			t.Fatal(err)
		}
	}
	a, b := cs["a"], cs["b"]
	interval(a[0], month.Add(-2*time.Hour), 150*time.Minute) // 1800 s of it in this month
	interval(b[0], month, 10*time.Hour)                      // another tenant's
	if err := (&quota.Checker{Store: st, Now: clock}).CheckStart(ctx, a[1], 0); err != nil {
		t.Fatalf("a spent 1800 s of its 3600 this month: %v", err)
	}
	interval(a[1], month.Add(time.Hour), 30*time.Minute) // 3600 s in all: spent
	q := &quota.Checker{Store: st, Now: clock}           // a fresh checker: no cached sum
	if err := q.CheckStart(ctx, a[2], 0); !refused(err, "compute_seconds_per_month is 3600") {
		t.Fatalf("a over its monthly quota: %v, want a QuotaError", err)
	}
	if err := q.CheckStart(ctx, b[1], 0); err != nil {
		t.Fatalf("tenant b has no quota: %v", err)
	}
}

// TestOpenIntervalsKeepCounting checks that a cached read still counts the
// intervals open at the read up to now.
func TestOpenIntervalsKeepCounting(t *testing.T) {
	st, cs := fixture(t, store.TenantQuotas{ComputeSecondsPerMonth: 3600})
	ctx := context.Background()
	month := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	now := month.Add(6 * time.Hour)
	q := &quota.Checker{Store: st, Now: func() time.Time { return now }}
	a := cs["a"]
	if err := st.StartInterval(ctx, &store.UsageInterval{ProjectID: a[0].ProjectID, TenantID: a[0].TenantID, ComputeID: a[0].ID, Start: month.Add(5*time.Hour + 30*time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := q.CheckStart(ctx, a[1], 0); err != nil || q.Spent(ctx, a[1].TenantID) {
		t.Fatalf("1800 s of 3600 spent: %v", err)
	}
	now = now.Add(30 * time.Minute) // past the cache: read again
	if err := q.CheckStart(ctx, a[1], 0); !refused(err, "compute_seconds_per_month") || !q.Spent(ctx, a[1].TenantID) {
		t.Fatalf("3600 s of 3600 spent: %v", err)
	}
	now = month.Add(6*time.Hour + 30*time.Minute + 10*time.Second) // cached: the open interval still counts
	if !q.Spent(ctx, a[2].TenantID) {
		t.Fatal("the cached read forgot the open interval")
	}
}
