package usage

import (
	"math"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

var t0 = time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)

func at(min float64) time.Time { return t0.Add(time.Duration(min * float64(time.Minute))) }

func TestBucketsClipIntervals(t *testing.T) {
	ivs := []store.UsageInterval{
		{ProjectID: "p", Start: at(30), End: at(90)},   // 30 min in hour 10, 30 in hour 11
		{ProjectID: "p", Start: at(100), End: at(110)}, // 10 min in hour 11
		{ProjectID: "p", Start: at(170)},               // open: counts to now (hour 12)
	}
	samples := []store.UsageSample{
		{At: at(5), StorageBytes: 100, BytesIn: 1, BytesOut: 10},
		{At: at(50), StorageBytes: 300, BytesIn: 2, BytesOut: 20},
		{At: at(60), StorageBytes: 200, BytesIn: 4, BytesOut: 40}, // exactly at 11:00: hour 11
	}
	now := at(175)
	got := Buckets(ivs, samples, at(0), at(180), time.Hour, now)
	want := []Bucket{
		{Start: at(0), End: at(60), ComputeSeconds: 30 * 60, StorageBytes: 300, BytesIn: 3, BytesOut: 30},
		{Start: at(60), End: at(120), ComputeSeconds: 40 * 60, StorageBytes: 200, BytesIn: 4, BytesOut: 40},
		{Start: at(120), End: at(180), ComputeSeconds: 5 * 60},
	}
	if len(got) != len(want) {
		t.Fatalf("%d buckets, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("bucket %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestReportSumsAcrossProjects(t *testing.T) {
	ivs := []store.UsageInterval{
		{ProjectID: "a", Start: at(0), End: at(1)},
		{ProjectID: "b", Start: at(0), End: at(2)},
		{ProjectID: "a", Start: at(10), End: at(11)},
		{ProjectID: "b", Start: at(-5), End: at(1)}, // starts before the period
	}
	samples := []store.UsageSample{
		{ProjectID: "a", StorageBytes: 10, BytesIn: 1},
		{ProjectID: "a", StorageBytes: 30, BytesIn: 1},
		{ProjectID: "b", StorageBytes: 20, BytesOut: 5},
	}
	lines, total := Report(ivs, samples, at(0), at(60), at(60))
	if len(lines) != 2 || lines[0].ProjectID != "a" || lines[1].ProjectID != "b" {
		t.Fatalf("lines: %+v", lines)
	}
	if lines[0].ComputeSeconds != 120 || lines[1].ComputeSeconds != 180 {
		t.Fatalf("compute seconds: a %v, b %v; want 120 and 180", lines[0].ComputeSeconds, lines[1].ComputeSeconds)
	}
	if lines[0].StorageBytes != 30 || lines[0].BytesIn != 2 || lines[1].BytesOut != 5 {
		t.Fatalf("samples: %+v", lines)
	}
	if math.Abs(total.ComputeSeconds-300) > 1e-9 || total.StorageBytes != 50 || total.BytesIn != 2 || total.BytesOut != 5 {
		t.Fatalf("total: %+v", total)
	}
}

func TestStep(t *testing.T) {
	for in, want := range map[string]time.Duration{"": time.Hour, "hour": time.Hour, "day": 24 * time.Hour} {
		if got, err := Step(in); err != nil || got != want {
			t.Errorf("Step(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := Step("week"); err == nil {
		t.Error("Step(week) must fail")
	}
}

// TestMemoryStorageAndTenants weighs compute-seconds by memory, holds each
// storage sample until the next, and groups projects by tenant.
func TestMemoryStorageAndTenants(t *testing.T) {
	const g = 1 << 30
	ivs := []store.UsageInterval{
		{ProjectID: "p1", TenantID: "a", ComputeID: "c1", Start: at(0), End: at(60), MemoryBytes: g / 2},
		{ProjectID: "p2", TenantID: "b", ComputeID: "c2", Start: at(0), End: at(30), MemoryBytes: 2 * g},
		{ProjectID: "p3", TenantID: "a", ComputeID: "c3", Start: at(0), End: at(60)}, // memory unknown
	}
	samples := []store.UsageSample{
		{ProjectID: "p1", TenantID: "a", ComputeID: "c1", At: at(30), StorageBytes: g, BytesIn: 5},
		{ProjectID: "p1", TenantID: "a", ComputeID: "c1", At: at(90), StorageBytes: 2 * g, BytesIn: 7},
	}
	lines, total := Report(ivs, samples, at(0), at(120), at(120))
	byID := map[string]Line{}
	for _, l := range lines {
		byID[l.ProjectID] = l
	}
	if got := byID["p1"].MemoryGiBSeconds; got != 1800 { // 3600 s x 0.5 GiB
		t.Errorf("p1 memory-seconds %v, want 1800", got)
	}
	if got := byID["p2"].MemoryGiBSeconds; got != 3600 { // 1800 s x 2 GiB
		t.Errorf("p2 memory-seconds %v, want 3600", got)
	}
	// 1 GiB from 0 to 90 min (the first sample holds back to the start),
	// then 2 GiB to 120 min: 1.5 + 1 GiB-hours.
	if got := byID["p1"].StorageGiBHours; got != 2.5 {
		t.Errorf("p1 storage GiB-hours %v, want 2.5", got)
	}
	tenants := ByTenant(lines)
	if len(tenants) != 2 || tenants[0].TenantID != "a" || tenants[0].ComputeSeconds != 7200 ||
		tenants[0].BytesIn != 12 || tenants[1].TenantID != "b" || tenants[1].MemoryGiBSeconds != 3600 {
		t.Errorf("ByTenant = %+v", tenants)
	}
	if total.MemoryGiBSeconds != 5400 || total.StorageGiBHours != 2.5 {
		t.Errorf("total = %+v", total)
	}
}
