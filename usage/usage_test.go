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
