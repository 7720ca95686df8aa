package storetest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// usageBase is a fixed time, well in the past, that usage tests place their
// intervals and samples after.
var usageBase = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// at returns usageBase plus seconds.
func at(seconds int) time.Time { return usageBase.Add(time.Duration(seconds) * time.Second) }

func intervalID(iv store.UsageInterval) string { return iv.ID }

// startInterval starts an interval and fails the test on error.
func startInterval(t *testing.T, s store.Store, projectID, computeID string, start time.Time) *store.UsageInterval {
	t.Helper()
	iv := &store.UsageInterval{ProjectID: projectID, ComputeID: computeID, Start: start}
	if err := s.StartInterval(t.Context(), iv); err != nil {
		t.Fatalf("StartInterval(compute %s, %v): %v", computeID, start, err)
	}
	return iv
}

// closedInterval records [start, end) for the compute.
func closedInterval(t *testing.T, s store.Store, projectID, computeID string, start, end time.Time) store.UsageInterval {
	t.Helper()
	iv := startInterval(t, s, projectID, computeID, start)
	if err := s.EndInterval(t.Context(), computeID, end); err != nil {
		t.Fatalf("EndInterval(compute %s, %v): %v", computeID, end, err)
	}
	iv.End, iv.LastSeen = end.UTC().Truncate(time.Microsecond), end.UTC().Truncate(time.Microsecond)
	return *iv
}

// openIntervals lists the open intervals and fails the test on error.
func openIntervals(t *testing.T, s store.Store) []store.UsageInterval {
	t.Helper()
	list, err := s.OpenIntervals(t.Context())
	if err != nil {
		t.Fatalf("OpenIntervals: %v", err)
	}
	return list
}

// testUsageIntervalLifecycle starts, touches and ends intervals, and checks
// the one-open-interval rule and the errors.
func testUsageIntervalLifecycle(t *testing.T, s store.Store) {
	ctx := t.Context()
	p1, p2 := newProject(t, s, "one"), newProject(t, s, "two")
	c1, c2 := newCompute(t, s, p1.ID), newCompute(t, s, p2.ID)

	if got := openIntervals(t, s); len(got) != 0 {
		t.Fatalf("OpenIntervals of a new store = %v", got)
	}

	// Times are stored like every other: UTC, microseconds.
	paris := time.FixedZone("CET", 3600)
	start := time.Date(2025, 1, 1, 1, 0, 0, 123456789, paris)
	iv1 := startInterval(t, s, p1.ID, c1.ID, start)
	if !strings.HasPrefix(iv1.ID, "usg_") {
		t.Errorf("StartInterval gave id %q, want a usg_ prefix", iv1.ID)
	}
	want := start.UTC().Truncate(time.Microsecond)
	checkTimes(t, "the started interval", want, iv1.Start, iv1.LastSeen)
	if !iv1.End.IsZero() {
		t.Errorf("a started interval has End %v", iv1.End)
	}

	// A second open interval for the compute is refused, and iv is left
	// alone; another compute may have its own.
	dup := &store.UsageInterval{ProjectID: p1.ID, ComputeID: c1.ID, Start: at(10)}
	wantErr(t, "a second open interval", s.StartInterval(ctx, dup), store.ErrAlreadyExists, c1.ID)
	if dup.ID != "" {
		t.Errorf("a failed StartInterval set the id to %q", dup.ID)
	}
	iv2 := startInterval(t, s, p2.ID, c2.ID, at(5))
	same(t, "OpenIntervals", openIntervals(t, s), []store.UsageInterval{*iv1, *iv2})

	// A caller-chosen id and LastSeen are kept; a taken id is refused.
	own := &store.UsageInterval{ID: "usg_own", ProjectID: p1.ID, ComputeID: "cmp_other", Start: at(1), LastSeen: at(2)}
	if err := s.StartInterval(ctx, own); err != nil {
		t.Fatalf("StartInterval with an id: %v", err)
	}
	if own.ID != "usg_own" || !own.LastSeen.Equal(at(2)) {
		t.Errorf("StartInterval with an id and LastSeen = %+v", own)
	}
	taken := &store.UsageInterval{ID: "usg_own", ProjectID: p1.ID, ComputeID: "cmp_third", Start: at(1)}
	wantErr(t, "a taken id", s.StartInterval(ctx, taken), store.ErrAlreadyExists, "usg_own")
	if err := s.EndInterval(ctx, "cmp_other", at(3)); err != nil {
		t.Fatalf("EndInterval: %v", err)
	}

	// Touch: LastSeen moves forward, never back; closed and unknown
	// computes are ignored, and so is an empty list.
	if err := s.TouchIntervals(ctx, []string{c1.ID, "cmp_unknown", "cmp_other"}, at(100)); err != nil {
		t.Fatalf("TouchIntervals: %v", err)
	}
	if err := s.TouchIntervals(ctx, []string{c1.ID}, at(50)); err != nil {
		t.Fatalf("TouchIntervals back in time: %v", err)
	}
	if err := s.TouchIntervals(ctx, nil, at(200)); err != nil {
		t.Fatalf("TouchIntervals(nil): %v", err)
	}
	iv1.LastSeen = at(100)
	same(t, "OpenIntervals after the touches", openIntervals(t, s), []store.UsageInterval{*iv1, *iv2})

	// End closes the open interval at end, LastSeen too.
	end := time.Date(2025, 1, 1, 0, 5, 0, 999, time.UTC)
	if err := s.EndInterval(ctx, c1.ID, end); err != nil {
		t.Fatalf("EndInterval: %v", err)
	}
	iv1.End, iv1.LastSeen = end.Truncate(time.Microsecond), end.Truncate(time.Microsecond)
	same(t, "OpenIntervals after the end", openIntervals(t, s), []store.UsageInterval{*iv2})
	wantErr(t, "EndInterval with none open", s.EndInterval(ctx, c1.ID, at(400)), store.ErrNotFound, c1.ID)
	wantErr(t, "EndInterval of an unknown compute", s.EndInterval(ctx, "cmp_missing", at(400)),
		store.ErrNotFound, "cmp_missing")
	// A touch after the end leaves the closed interval alone.
	if err := s.TouchIntervals(ctx, []string{c1.ID}, at(1000)); err != nil {
		t.Fatalf("TouchIntervals: %v", err)
	}

	// Once closed, the compute can start again.
	iv3 := startInterval(t, s, p1.ID, c1.ID, at(600))
	list, err := s.ListIntervals(ctx, p1.ID, time.Time{}, time.Time{})
	if err != nil {
		t.Fatalf("ListIntervals: %v", err)
	}
	ownClosed := *own
	ownClosed.End, ownClosed.LastSeen = at(3), at(3)
	same(t, "ListIntervals of the project", list, []store.UsageInterval{*iv1, ownClosed, *iv3})

	// An end before the start is taken as the start: no negative time.
	if err := s.EndInterval(ctx, c1.ID, at(590)); err != nil {
		t.Fatalf("EndInterval before the start: %v", err)
	}
	iv3.End, iv3.LastSeen = iv3.Start, iv3.Start
	list, err = s.ListIntervals(ctx, p1.ID, time.Time{}, time.Time{})
	if err != nil || len(list) != 3 {
		t.Fatalf("ListIntervals = %v, %v; want 3", list, err)
	}
	same(t, "the interval ended before its start", list[2], *iv3)

	// Bad input is refused.
	for name, iv := range map[string]*store.UsageInterval{
		"no compute": {ProjectID: p1.ID},
		"no project": {ComputeID: c1.ID},
		"with End":   {ProjectID: p1.ID, ComputeID: "cmp_x", Start: at(1), End: at(2)},
	} {
		if err := s.StartInterval(ctx, iv); err == nil {
			t.Errorf("StartInterval %s succeeded", name)
		}
	}
	// A zero Start is now.
	before := store.Now()
	now := startInterval(t, s, p1.ID, "cmp_now", time.Time{})
	if now.Start.Before(before) || now.Start.After(store.Now()) || !now.LastSeen.Equal(now.Start) {
		t.Errorf("StartInterval with a zero Start = %+v, want now (after %v)", now, before)
	}
	isStored(t, "a defaulted Start", now.Start)
}

// testUsageIntervalRace starts intervals for one compute from several
// goroutines at once: the database lets exactly one through.
func testUsageIntervalRace(t *testing.T, s store.Store) {
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.StartInterval(t.Context(), &store.UsageInterval{ProjectID: "prj_x", ComputeID: "cmp_x", Start: at(i)})
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		default:
			wantErr(t, "a racing StartInterval", err, store.ErrAlreadyExists, "cmp_x")
		}
	}
	if won != 1 {
		t.Errorf("%d of %d racing StartIntervals succeeded, want 1", won, n)
	}
	if got := openIntervals(t, s); len(got) != 1 {
		t.Errorf("OpenIntervals after the race = %v, want 1", got)
	}
}

// testUsageTouchMany touches more computes than one statement carries.
func testUsageTouchMany(t *testing.T, s store.Store) {
	const total = 1200 // more than two batches, the last one partial
	var all []string
	for i := range total {
		c := fmt.Sprintf("cmp_%04d", i)
		all = append(all, c)
		startInterval(t, s, "prj_many", c, at(0))
	}
	// Touch all but the first ten, with unknown ids mixed in.
	touched := append([]string{"cmp_unknown"}, all[10:]...)
	touched = append(touched, "cmp_unknown2")
	if err := s.TouchIntervals(t.Context(), touched, at(60)); err != nil {
		t.Fatalf("TouchIntervals: %v", err)
	}
	open := openIntervals(t, s)
	if len(open) != total {
		t.Fatalf("OpenIntervals has %d, want %d", len(open), total)
	}
	for _, iv := range open {
		want := at(60)
		if iv.ComputeID < all[10] {
			want = at(0)
		}
		if !iv.LastSeen.Equal(want) {
			t.Errorf("compute %s: LastSeen %v, want %v", iv.ComputeID, iv.LastSeen, want)
		}
	}
}

// testUsageListIntervals checks the overlap filter at its edges, the project
// filter and the order.
func testUsageListIntervals(t *testing.T, s store.Store) {
	ctx := t.Context()
	p1, p2 := newProject(t, s, "one"), newProject(t, s, "two")
	const c1, c2 = "cmp_one", "cmp_two"
	a := closedInterval(t, s, p1.ID, c1, at(0), at(10))
	b := closedInterval(t, s, p1.ID, c1, at(20), at(30))
	d := closedInterval(t, s, p2.ID, c2, at(5), at(25))
	o := *startInterval(t, s, p1.ID, c1, at(40)) // open: extends to now
	none := []store.UsageInterval{}
	now := store.Now()

	tests := []struct {
		name     string
		project  string
		from, to time.Time
		want     []store.UsageInterval
	}{
		{"exactly one interval", p1.ID, at(0), at(10), []store.UsageInterval{a}},
		{"the gap: one ends at from, the next starts at to", p1.ID, at(10), at(20), none},
		{"a microsecond into each side", p1.ID, at(10).Add(-time.Microsecond), at(20).Add(time.Microsecond),
			[]store.UsageInterval{a, b}},
		{"inside one interval", p1.ID, at(2), at(3), []store.UsageInterval{a}},
		{"before the open one starts", p1.ID, at(35), at(40), none},
		{"the open one, long after its start", p1.ID, at(1000), at(1001), []store.UsageInterval{o}},
		{"the open one reaches now", p1.ID, now.Add(-time.Second), now.Add(time.Hour), []store.UsageInterval{o}},
		{"the open one does not reach the future", p1.ID, now.Add(time.Hour), now.Add(2 * time.Hour), none},
		{"from after to", p1.ID, at(30), at(0), none},
		{"unbounded", p1.ID, time.Time{}, time.Time{}, []store.UsageInterval{a, b, o}},
		{"unbounded from", p1.ID, time.Time{}, at(20), []store.UsageInterval{a}},
		{"unbounded to", p1.ID, at(30), time.Time{}, []store.UsageInterval{o}},
		{"the other project", p2.ID, time.Time{}, time.Time{}, []store.UsageInterval{d}},
		{"all projects, by start", "", at(0), at(30), []store.UsageInterval{a, d, b}},
		{"all projects, unbounded", "", time.Time{}, time.Time{}, []store.UsageInterval{a, d, b, o}},
		{"all projects, one overlap", "", at(25), at(30), []store.UsageInterval{b}},
		{"an unknown project", "prj_missing", time.Time{}, time.Time{}, none},
		{"a project name is not an id", "one", time.Time{}, time.Time{}, none},
	}
	for _, tc := range tests {
		got, err := s.ListIntervals(ctx, tc.project, tc.from, tc.to)
		if err != nil {
			t.Fatalf("%s: ListIntervals: %v", tc.name, err)
		}
		if got == nil {
			t.Errorf("%s: ListIntervals gave nil, want an empty list", tc.name)
		}
		same(t, tc.name, got, tc.want)
	}
}

// testUsageSamples adds samples and lists them by range and project.
func testUsageSamples(t *testing.T, s store.Store) {
	ctx := t.Context()
	add := func(projectID, computeID string, when time.Time, storage, in, out int64) store.UsageSample {
		t.Helper()
		us := &store.UsageSample{ProjectID: projectID, ComputeID: computeID, At: when,
			StorageBytes: storage, BytesIn: in, BytesOut: out}
		if err := s.AddUsageSample(ctx, us); err != nil {
			t.Fatalf("AddUsageSample: %v", err)
		}
		return *us
	}
	const big = int64(5) << 40 // 5 TiB: past 32 bits
	s0 := add("prj_1", "cmp_1", at(0), big, 10, 2000)
	s10 := add("prj_1", "cmp_1", at(10).Add(999), big+1, 0, 0) // nanoseconds are dropped
	s20 := add("prj_1", "cmp_1", at(20), big+2, 1, 1)
	t5 := add("prj_2", "cmp_2", at(5), 1<<20, 7, 8)
	t15 := add("prj_2", "cmp_2", at(15), 1<<20, 0, 9)
	// Two samples of one compute at the same time are both kept.
	t15b := add("prj_2", "cmp_2", at(15), 1<<21, 1, 1)
	if !s10.At.Equal(at(10)) {
		t.Errorf("AddUsageSample left At %v, want %v", s10.At, at(10))
	}
	isStored(t, "a sample's At", s10.At)
	none := []store.UsageSample{}

	tests := []struct {
		name     string
		project  string
		from, to time.Time
		want     []store.UsageSample
	}{
		{"from is in, to is out", "prj_1", at(0), at(20), []store.UsageSample{s0, s10}},
		{"just past to", "prj_1", at(0), at(20).Add(time.Microsecond), []store.UsageSample{s0, s10, s20}},
		{"just past from", "prj_1", at(0).Add(time.Microsecond), at(20), []store.UsageSample{s10}},
		{"unbounded", "prj_1", time.Time{}, time.Time{}, []store.UsageSample{s0, s10, s20}},
		{"the other project", "prj_2", time.Time{}, time.Time{}, []store.UsageSample{t5, t15, t15b}},
		{"all projects, by time", "", at(5), at(16), []store.UsageSample{t5, s10, t15, t15b}},
		{"all projects, unbounded", "", time.Time{}, time.Time{}, []store.UsageSample{s0, t5, s10, t15, t15b, s20}},
		{"an empty range", "", at(30), at(40), none},
		{"an unknown project", "prj_missing", time.Time{}, time.Time{}, none},
	}
	for _, tc := range tests {
		got, err := s.ListUsageSamples(ctx, tc.project, tc.from, tc.to)
		if err != nil {
			t.Fatalf("%s: ListUsageSamples: %v", tc.name, err)
		}
		if got == nil {
			t.Errorf("%s: ListUsageSamples gave nil, want an empty list", tc.name)
		}
		// Samples at the same time of one compute may come in either order.
		if tc.name == "the other project" || strings.HasPrefix(tc.name, "all projects") {
			got = sortSameTime(got)
		}
		same(t, tc.name, got, tc.want)
	}

	// A zero At is now; the ids are required.
	before := store.Now()
	now := add("prj_1", "cmp_1", time.Time{}, 1, 0, 0)
	if now.At.Before(before) || now.At.After(store.Now()) {
		t.Errorf("AddUsageSample with a zero At = %v, want now (after %v)", now.At, before)
	}
	if err := s.AddUsageSample(ctx, &store.UsageSample{ProjectID: "prj_1", At: at(1)}); err == nil {
		t.Error("AddUsageSample without a compute id succeeded")
	}
}

// sortSameTime puts samples of the same compute at the same time in
// StorageBytes order, which is how the tests wrote them.
func sortSameTime(list []store.UsageSample) []store.UsageSample {
	out := append([]store.UsageSample{}, list...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].At.Equal(out[j-1].At) && out[j].ComputeID == out[j-1].ComputeID &&
			out[j].StorageBytes < out[j-1].StorageBytes; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// testUsageSurvivesDelete deletes a compute and its project: their usage
// stays for billing, and an interval left open can still be closed.
func testUsageSurvivesDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := newProject(t, s, "gone")
	c := newCompute(t, s, p.ID)
	closed := closedInterval(t, s, p.ID, c.ID, at(0), at(10))
	open := *startInterval(t, s, p.ID, c.ID, at(20))
	sample := store.UsageSample{ProjectID: p.ID, ComputeID: c.ID, At: at(5), StorageBytes: 42, BytesIn: 1, BytesOut: 2}
	if err := s.AddUsageSample(ctx, &sample); err != nil {
		t.Fatalf("AddUsageSample: %v", err)
	}

	if err := s.DeleteCompute(ctx, c.ID); err != nil {
		t.Fatalf("DeleteCompute: %v", err)
	}
	if err := s.DeleteProject(ctx, p.ID); err != nil {
		t.Fatalf("DeleteProject: %v", err)
	}

	ivs, err := s.ListIntervals(ctx, p.ID, time.Time{}, time.Time{})
	if err != nil {
		t.Fatalf("ListIntervals: %v", err)
	}
	same(t, "the deleted project's intervals", ivs, []store.UsageInterval{closed, open})
	same(t, "OpenIntervals", openIntervals(t, s), []store.UsageInterval{open})
	samples, err := s.ListUsageSamples(ctx, p.ID, time.Time{}, time.Time{})
	if err != nil {
		t.Fatalf("ListUsageSamples: %v", err)
	}
	same(t, "the deleted project's samples", samples, []store.UsageSample{sample})

	// Reconciliation closes the interval of the compute that is gone.
	if err := s.EndInterval(ctx, c.ID, open.LastSeen); err != nil {
		t.Fatalf("EndInterval of a deleted compute: %v", err)
	}
	if got := openIntervals(t, s); len(got) != 0 {
		t.Errorf("OpenIntervals after closing = %v", got)
	}
	// Project ids are random, so a new project never inherits the old usage.
	p2 := newProject(t, s, "gone")
	if ivs, err := s.ListIntervals(ctx, p2.ID, time.Time{}, time.Time{}); err != nil || len(ivs) != 0 {
		t.Errorf("a new project of the same name has intervals %v, %v", ivs, err)
	}
}

// testUsageByTenant lists a tenant's usage rows alone, with memory, and
// keeps them after the project is deleted.
func testUsageByTenant(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := newTenant(t, s, "billed")
	p := &store.Project{Name: "app", TenantID: tn.ID}
	if err := s.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	c := newCompute(t, s, p.ID)
	other := newProject(t, s, "other")
	oc := newCompute(t, s, other.ID)
	iv := &store.UsageInterval{ProjectID: p.ID, TenantID: tn.ID, ComputeID: c.ID, Start: at(0), MemoryBytes: 256 << 20}
	if err := s.StartInterval(ctx, iv); err != nil {
		t.Fatal(err)
	}
	startInterval(t, s, other.ID, oc.ID, at(0))
	for _, sm := range []*store.UsageSample{
		{ProjectID: p.ID, TenantID: tn.ID, ComputeID: c.ID, At: at(5), StorageBytes: 10},
		{ProjectID: other.ID, ComputeID: oc.ID, At: at(5), StorageBytes: 20},
	} {
		if err := s.AddUsageSample(ctx, sm); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteProject(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	ivs, err := s.ListTenantIntervals(ctx, tn.ID, time.Time{}, time.Time{})
	if err != nil || len(ivs) != 1 || ivs[0].ID != iv.ID || ivs[0].MemoryBytes != 256<<20 || ivs[0].TenantID != tn.ID {
		t.Errorf("ListTenantIntervals = %+v, %v; want the tenant's one interval with its memory", ivs, err)
	}
	samples, err := s.ListTenantUsageSamples(ctx, tn.ID, time.Time{}, time.Time{})
	if err != nil || len(samples) != 1 || samples[0].StorageBytes != 10 {
		t.Errorf("ListTenantUsageSamples = %+v, %v; want the tenant's one sample", samples, err)
	}
	def, err := s.ListTenantIntervals(ctx, store.DefaultTenantID, time.Time{}, time.Time{})
	if err != nil || len(def) != 1 || def[0].ProjectID != other.ID {
		t.Errorf("the default tenant's intervals = %+v, %v", def, err)
	}
}
