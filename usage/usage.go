// Package usage turns the store's raw metering (active intervals and
// samples) into what users are billed for: compute-seconds, storage and
// bytes through the proxy, per time bucket or per project.
package usage

import (
	"fmt"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// Bucket is the usage of one project over [Start, End).
type Bucket struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// ComputeSeconds is the wall time the compute was active.
	ComputeSeconds float64 `json:"compute_seconds"`
	// StorageBytes is the largest storage sample in the bucket (0 if none).
	StorageBytes int64 `json:"storage_bytes"`
	BytesIn      int64 `json:"bytes_in"`
	BytesOut     int64 `json:"bytes_out"`
}

// Step parses a granularity: "hour" or "day".
func Step(granularity string) (time.Duration, error) {
	switch granularity {
	case "", "hour":
		return time.Hour, nil
	case "day":
		return 24 * time.Hour, nil
	}
	return 0, fmt.Errorf("granularity must be hour or day, got %q", granularity)
}

// Buckets splits [from, to) into steps (aligned to UTC) and adds up the
// intervals and samples that fall in each. Open intervals count up to now.
func Buckets(ivs []store.UsageInterval, samples []store.UsageSample, from, to time.Time, step time.Duration, now time.Time) []Bucket {
	from = from.UTC().Truncate(step)
	var out []Bucket
	for s := from; s.Before(to); s = s.Add(step) {
		b := Bucket{Start: s, End: s.Add(step)}
		for _, iv := range ivs {
			b.ComputeSeconds += overlap(iv, b.Start, b.End, now).Seconds()
		}
		for _, sm := range samples {
			if !sm.At.Before(b.Start) && sm.At.Before(b.End) {
				b.StorageBytes = max(b.StorageBytes, sm.StorageBytes)
				b.BytesIn += sm.BytesIn
				b.BytesOut += sm.BytesOut
			}
		}
		out = append(out, b)
	}
	return out
}

// overlap is how much of iv lies inside [from, to).
func overlap(iv store.UsageInterval, from, to, now time.Time) time.Duration {
	end := iv.End
	if end.IsZero() {
		end = now
	}
	start := iv.Start
	if start.Before(from) {
		start = from
	}
	if end.After(to) {
		end = to
	}
	if !end.After(start) {
		return 0
	}
	return end.Sub(start)
}

// Line is one project's (or tenant's) usage over a whole report period.
type Line struct {
	ProjectID      string  `json:"project_id,omitempty"`
	ProjectName    string  `json:"project_name,omitempty"`
	TenantID       string  `json:"tenant_id,omitempty"`
	TenantName     string  `json:"tenant_name,omitempty"`
	ComputeSeconds float64 `json:"compute_seconds"`
	// MemoryGiBSeconds is compute-seconds weighted by the compute's
	// memory in GiB.
	MemoryGiBSeconds float64 `json:"memory_gib_seconds"`
	// StorageBytes is the project's largest storage sample in the period
	// (for a tenant, the sum of its projects').
	StorageBytes int64 `json:"storage_bytes"`
	// StorageGiBHours is the storage held over the period: each sample's
	// size holds until the compute's next sample (the first one back to
	// the period's start, the last one to its end).
	StorageGiBHours float64 `json:"storage_gib_hours"`
	BytesIn         int64   `json:"bytes_in"`
	BytesOut        int64   `json:"bytes_out"`
}

const gib = float64(1 << 30)

// add adds o's figures to l.
func (l *Line) add(o Line) {
	l.ComputeSeconds += o.ComputeSeconds
	l.MemoryGiBSeconds += o.MemoryGiBSeconds
	l.StorageBytes += o.StorageBytes
	l.StorageGiBHours += o.StorageGiBHours
	l.BytesIn += o.BytesIn
	l.BytesOut += o.BytesOut
}

// Report adds up usage per project over [from, to), in the order projects
// first appear, with a total line's figures returned separately.
func Report(ivs []store.UsageInterval, samples []store.UsageSample, from, to, now time.Time) (lines []Line, total Line) {
	idx := map[string]int{}
	line := func(projectID string) *Line {
		i, ok := idx[projectID]
		if !ok {
			i = len(lines)
			idx[projectID] = i
			lines = append(lines, Line{ProjectID: projectID})
		}
		return &lines[i]
	}
	for _, iv := range ivs {
		l := line(iv.ProjectID)
		l.TenantID = iv.TenantID
		secs := overlap(iv, from, to, now).Seconds()
		l.ComputeSeconds += secs
		l.MemoryGiBSeconds += secs * float64(iv.MemoryBytes) / gib
	}
	end := to
	if now.Before(end) {
		end = now
	}
	held := storageHeld(samples, from, end)
	for _, s := range samples {
		l := line(s.ProjectID)
		l.TenantID = s.TenantID
		l.StorageBytes = max(l.StorageBytes, s.StorageBytes)
		l.BytesIn += s.BytesIn
		l.BytesOut += s.BytesOut
	}
	for i := range lines {
		lines[i].StorageGiBHours = held[lines[i].ProjectID]
	}
	total.ProjectID = "total"
	for _, l := range lines {
		total.add(l)
	}
	return lines, total
}

// storageHeld is each project's storage over [from, end) in GiB-hours.
// samples are ordered by time.
func storageHeld(samples []store.UsageSample, from, end time.Time) map[string]float64 {
	type last struct {
		project string
		at      time.Time
		bytes   int64
	}
	out := map[string]float64{}
	prev := map[string]*last{} // by compute
	hold := func(project string, bytes int64, a, b time.Time) {
		if b.After(a) {
			out[project] += float64(bytes) / gib * b.Sub(a).Hours()
		}
	}
	for _, s := range samples {
		if p, ok := prev[s.ComputeID]; ok {
			hold(p.project, p.bytes, p.at, s.At)
		} else {
			hold(s.ProjectID, s.StorageBytes, from, s.At)
		}
		prev[s.ComputeID] = &last{s.ProjectID, s.At, s.StorageBytes}
	}
	for _, p := range prev {
		hold(p.project, p.bytes, p.at, end)
	}
	return out
}

// ByTenant groups a report's project lines by tenant, in the order
// tenants first appear.
func ByTenant(lines []Line) []Line {
	idx := map[string]int{}
	var out []Line
	for _, l := range lines {
		i, ok := idx[l.TenantID]
		if !ok {
			i = len(out)
			idx[l.TenantID] = i
			out = append(out, Line{TenantID: l.TenantID})
		}
		out[i].add(l)
	}
	return out
}
