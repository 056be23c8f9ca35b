package bench

import (
	"slices"
	"time"
)

// Rate is a throughput: Count operations in Elapsed.
type Rate struct {
	Count   int           `json:"count"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// PerSecond returns the rate in operations per second.
func (r Rate) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Count) / r.Elapsed.Seconds()
}

// Latencies summarises a set of durations.
type Latencies struct {
	Count int           `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

// summarize sorts d in place and returns its percentiles.
func summarize(d []time.Duration) Latencies {
	if len(d) == 0 {
		return Latencies{}
	}
	slices.Sort(d)
	return Latencies{Count: len(d), P50: percentile(d, 0.50), P99: percentile(d, 0.99), Max: d[len(d)-1]}
}

// percentile returns the nearest-rank percentile of sorted d.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
