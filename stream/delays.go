package stream

import (
	"sync/atomic"
	"time"
)

// DelayBuckets returns the upper bounds, in seconds, of the buckets of a
// Delays histogram.
func DelayBuckets() []float64 {
	b := delayBounds()
	return b[:]
}

const delayBucketCount = 16

// delayBounds are the buckets' bounds as a value, so that Observe
// allocates nothing.
func delayBounds() [delayBucketCount]float64 {
	return [delayBucketCount]float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
}

// Delays is a histogram of how long transactions took from their commit on
// the origin to a stage of replication (captured, delivered, applied),
// updated without locks by the worker and read at scrape time. Delays
// measured across hosts include the difference of their clocks; a negative
// one counts as zero.
type Delays struct {
	buckets [delayBucketCount + 1]atomic.Uint64 // the last counts what exceeds every bound
	count   atomic.Uint64
	sum     atomic.Int64 // µs
}

// Observe records the delay from commit to now.
func (d *Delays) Observe(commit, now time.Time) {
	delay := max(now.Sub(commit), 0)
	s := delay.Seconds()
	i := 0
	for _, b := range delayBounds() {
		if s <= b {
			break
		}
		i++
	}
	d.buckets[i].Add(1)
	d.count.Add(1)
	d.sum.Add(delay.Microseconds())
}

// Snapshot returns the cumulative count of each bucket of DelayBuckets, the
// number of observations and their sum in seconds.
func (d *Delays) Snapshot() (cumulative []uint64, count uint64, sum float64) {
	cumulative = make([]uint64, delayBucketCount)
	var acc uint64
	for i := range cumulative {
		acc += d.buckets[i].Load()
		cumulative[i] = acc
	}
	return cumulative, d.count.Load(), float64(d.sum.Load()) / 1e6
}

// Quantile estimates the q-quantile (0 < q ≤ 1) of the delays recorded so
// far as the upper bound of the bucket it falls in; ok is false without
// observations or beyond the last bound.
func (d *Delays) Quantile(q float64) (upper time.Duration, ok bool) {
	cum, n, _ := d.Snapshot()
	if n == 0 {
		return 0, false
	}
	rank := uint64(q * float64(n))
	if rank < 1 {
		rank = 1
	}
	bounds := delayBounds()
	for i, c := range cum {
		if c >= rank {
			return time.Duration(bounds[i] * float64(time.Second)), true
		}
	}
	return 0, false
}
