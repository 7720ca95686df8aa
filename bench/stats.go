package bench

import (
	"math"
	"slices"
	"time"
)

// Quantile returns the q-quantile (0 < q <= 1) of samples by the
// nearest-rank method: the smallest sample with at least q of all samples
// at or below it. With 50 samples p99 is therefore the maximum, which is
// the honest reading of a tail from so few cycles.
func Quantile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Latency summarises a set of latency samples in milliseconds.
type Latency struct {
	N             int
	P50, P90, P99 float64
	Min, Max      float64
}

// Summarize computes a Latency from samples.
func Summarize(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	return Latency{
		N:   len(samples),
		P50: Ms(Quantile(samples, 0.50)),
		P90: Ms(Quantile(samples, 0.90)),
		P99: Ms(Quantile(samples, 0.99)),
		Min: Ms(slices.Min(samples)),
		Max: Ms(slices.Max(samples)),
	}
}

// Ms converts a duration to fractional milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Median returns the median of xs (the mean of the middle two for an even
// count), or NaN for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
