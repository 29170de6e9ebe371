package stream

import (
	"testing"
	"time"
)

func TestDelays(t *testing.T) {
	if len(DelayBuckets()) != delayBucketCount {
		t.Fatalf("delayBucketCount %d, DelayBuckets has %d", delayBucketCount, len(DelayBuckets()))
	}
	var d Delays
	now := time.Now()
	for _, ago := range []time.Duration{-time.Second, 300 * time.Microsecond, 3 * time.Millisecond, 3 * time.Millisecond, 15 * time.Millisecond, 2 * time.Minute} {
		d.Observe(now.Add(-ago), now)
	}
	cum, n, sum := d.Snapshot()
	if n != 6 {
		t.Fatalf("count %d, want 6", n)
	}
	// ≤0.5 ms: the future commit (0) and 300 µs; ≤5 ms: +2; ≤20 ms: +1; the
	// 2 minutes exceed every bound.
	want := map[float64]uint64{0.0005: 2, 0.001: 2, 0.002: 2, 0.005: 4, 0.01: 4, 0.02: 5, 60: 5}
	for i, b := range DelayBuckets() {
		if w, ok := want[b]; ok && cum[i] != w {
			t.Errorf("bucket ≤%gs: %d, want %d", b, cum[i], w)
		}
	}
	if wantSum := (0.0003 + 0.003 + 0.003 + 0.015 + 120); sum < wantSum-1e-6 || sum > wantSum+1e-6 {
		t.Errorf("sum %g, want %g", sum, wantSum)
	}
	if q, ok := d.Quantile(0.5); !ok || q != 5*time.Millisecond {
		t.Errorf("median: %v %v, want 5ms", q, ok)
	}
	if _, ok := d.Quantile(1); ok {
		t.Error("the maximum exceeds every bound: want ok = false")
	}
}

func TestDelaysObserveAllocatesNothing(t *testing.T) {
	var d Delays
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() { d.Observe(now.Add(-time.Millisecond), now) }); n != 0 {
		t.Fatalf("Observe allocates %v times", n)
	}
}
