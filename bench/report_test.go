package bench

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFigureMet(t *testing.T) {
	tests := []struct {
		name      string
		f         Figure
		met, ok   bool
		wantRatio float64
	}{
		{"rate at least, met", Figure{Ours: 60, Native: 50, Goal: Goal{RatioAtLeast, 1}}, true, true, 1.2},
		{"rate at least, missed", Figure{Ours: 40, Native: 50, Goal: Goal{RatioAtLeast, 1}}, false, true, 0.8},
		{"time at most, met", Figure{Ours: 10, Native: 30, Goal: Goal{RatioAtMost, 0.5}}, true, true, 1.0 / 3},
		{"absolute, met without a baseline", Figure{Ours: 100, Native: math.NaN(), Goal: Goal{OursAtMost, 256}}, true, true, math.NaN()},
		{"absolute, missed", Figure{Ours: 300, Native: 30, Goal: Goal{OursAtMost, 256}}, false, true, 10},
		{"not measured", Figure{Ours: math.NaN(), Native: 5, Goal: Goal{RatioAtMost, 2}}, false, false, math.NaN()},
		{"no goal", Figure{Ours: 1, Native: 2}, false, false, 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			met, ok := tt.f.Met()
			if met != tt.met || ok != tt.ok {
				t.Errorf("Met() = %v, %v; want %v, %v", met, ok, tt.met, tt.ok)
			}
			got := tt.f.Ratio()
			if math.IsNaN(got) != math.IsNaN(tt.wantRatio) || (!math.IsNaN(got) && math.Abs(got-tt.wantRatio) > 1e-9) {
				t.Errorf("Ratio() = %v, want %v", got, tt.wantRatio)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{0, time.Millisecond}, {50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}} {
		if got := percentile(d, tt.p); got != tt.want {
			t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile(nil, 99); got != 0 {
		t.Errorf("percentile of nothing = %v, want 0", got)
	}
}

func TestLatencies(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	committed := map[int64]time.Time{1: t0, 2: t0, 3: t0}
	seen := map[int64]time.Time{1: t0.Add(3 * time.Millisecond), 2: t0.Add(time.Millisecond), 9: t0}
	lat, missing := latencies(committed, seen)
	if missing != 1 {
		t.Errorf("missing = %d, want 1", missing)
	}
	if want := []time.Duration{time.Millisecond, 3 * time.Millisecond}; len(lat) != 2 || lat[0] != want[0] || lat[1] != want[1] {
		t.Errorf("latencies = %v, want %v", lat, want)
	}
}

func TestThreeNodeIDs(t *testing.T) {
	for k := range threeNodes {
		base := int64(k+1) * idSpan
		for _, tt := range []struct {
			id       int64
			measured bool
		}{{base + 1, true}, {base + bulkOffset + 1, false}, {base + warmOffset + 1, false}} {
			if got := originOf(tt.id); got != k {
				t.Errorf("originOf(%d) = %d, want %d", tt.id, got, k)
			}
			if got := measured(tt.id); got != tt.measured {
				t.Errorf("measured(%d) = %v, want %v", tt.id, got, tt.measured)
			}
		}
	}
}

func TestReportWriters(t *testing.T) {
	r := &Report{Scale: "small", Command: "pgactive bench --scale small",
		Figures: []Figure{
			{Scenario: "throughput: inserts", Metric: "applied", Unit: "rows/s", Ours: 1200, Native: 1000, Goal: Goal{RatioAtLeast, 1}},
			{Scenario: "join", Metric: "time, native = pg_dump | pg_restore", Unit: "s", Ours: 1, Native: 2000},
		},
		Notes: []string{"a note"}, Failures: []string{"join: it broke"}}
	var text, md bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1.20×", "≥ 1.0×", "yes", "a note", "join: it broke"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
		if !strings.Contains(md.String(), want) {
			t.Errorf("Markdown report lacks %q:\n%s", want, md.String())
		}
	}
	if !strings.Contains(md.String(), "| join | time, native = pg_dump \\| pg_restore (s) | 1 | 2000 | 0.001× |  |  |") {
		t.Errorf("Markdown row with a pipe not escaped:\n%s", md.String())
	}
	if !strings.Contains(md.String(), "| throughput: inserts | applied (rows/s) | 1200 | 1000 | 1.20× | ≥ 1.0× | yes |") {
		t.Errorf("Markdown row not as expected:\n%s", md.String())
	}
}

// TestLatencyRoundsPool: rounds pool their samples, so that a percentile of
// the pooled result counts every round, and the origin's rate is over all of
// them.
func TestLatencyRoundsPool(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	var r latencyResult
	r.add(latencyResult{sent: 300, elapsed: time.Second, lat: ms(1, 2, 9), missing: 1, stages: "first"})
	r.add(latencyResult{sent: 100, elapsed: time.Second, lat: ms(3, 4, 5), stages: "second"})
	if want := ms(1, 2, 3, 4, 5, 9); !slices.Equal(r.lat, want) {
		t.Fatalf("pooled samples %v, want %v", r.lat, want)
	}
	if got := percentile(r.lat, 100); got != 9*time.Millisecond {
		t.Errorf("max %v, want 9ms", got)
	}
	if got := r.achieved(); got != 200 {
		t.Errorf("achieved %v tx/s, want 200", got)
	}
	if r.missing != 1 || r.stages != "first" {
		t.Errorf("missing %d, stages %q; want 1, the first round's", r.missing, r.stages)
	}
	if got := (&latencyResult{}).achieved(); got != 0 {
		t.Errorf("achieved of nothing %v, want 0", got)
	}
}
