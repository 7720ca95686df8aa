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

// Line is one project's usage over a whole report period.
type Line struct {
	ProjectID      string  `json:"project_id"`
	ProjectName    string  `json:"project_name,omitempty"`
	ComputeSeconds float64 `json:"compute_seconds"`
	// StorageBytes is the project's largest storage sample in the period.
	StorageBytes int64 `json:"storage_bytes"`
	BytesIn      int64 `json:"bytes_in"`
	BytesOut     int64 `json:"bytes_out"`
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
		line(iv.ProjectID).ComputeSeconds += overlap(iv, from, to, now).Seconds()
	}
	for _, s := range samples {
		l := line(s.ProjectID)
		l.StorageBytes = max(l.StorageBytes, s.StorageBytes)
		l.BytesIn += s.BytesIn
		l.BytesOut += s.BytesOut
	}
	total.ProjectID = "total"
	for _, l := range lines {
		total.ComputeSeconds += l.ComputeSeconds
		total.StorageBytes += l.StorageBytes
		total.BytesIn += l.BytesIn
		total.BytesOut += l.BytesOut
	}
	return lines, total
}
