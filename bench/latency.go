package bench

import (
	"context"
	"fmt"
	"strings"
	"time"
)

const latencySchema = `CREATE TABLE lat (id bigint PRIMARY KEY, filler text NOT NULL);`

// latencyResult is the latency scenario on one system.
type latencyResult struct {
	sent    int
	elapsed time.Duration
	lat     []time.Duration // sorted
	missing int
	stages  string // ours: where the delay arises, from the agents' histograms
}

// runLatency runs Sizes.Rounds rounds, each system once a round on fresh
// clusters, who goes first alternating, and reports percentiles over the
// samples of every round pooled: on a shared host, one round's p99 moves
// with the host's load about as much as it differs between the systems.
func runLatency(ctx context.Context, e *env, rep *Report) error {
	rounds := max(e.sizes.Rounds, 1)
	res := map[system]*latencyResult{native: {}, ours: {}}
	var perRound []string
	for round := range rounds {
		order := []system{native, ours}
		if round%2 == 1 {
			order = []system{ours, native}
		}
		got := map[system]latencyResult{}
		err := bothSystemsIn(ctx, e, ScenarioLatency, order, func(ctx context.Context, sys system) error {
			r, err := latencyRun(ctx, e, sys, round == 0)
			got[sys] = r
			return err
		})
		if err != nil {
			return err
		}
		o, nv := percentile(got[ours].lat, 99), percentile(got[native].lat, 99)
		perRound = append(perRound, fmt.Sprintf("round %d (%s first): %.2f against %.2f ms (%.2f×)",
			round+1, order[0], msOf(o), msOf(nv), float64(o)/float64(nv)))
		for sys, r := range got {
			res[sys].add(r)
		}
	}
	o, nv := res[ours], res[native]
	scen := fmt.Sprintf("latency at %.0f tx/s", e.sizes.Rate)
	rep.add(Figure{Scenario: scen, Metric: "p50 commit to visible", Unit: "ms", Ours: msOf(percentile(o.lat, 50)), Native: msOf(percentile(nv.lat, 50))})
	rep.add(Figure{Scenario: scen, Metric: "p99 commit to visible", Unit: "ms", Ours: msOf(percentile(o.lat, 99)), Native: msOf(percentile(nv.lat, 99)), Goal: Goal{RatioAtMost, 2.0}})
	rep.add(Figure{Scenario: scen, Metric: "max commit to visible", Unit: "ms", Ours: msOf(percentile(o.lat, 100)), Native: msOf(percentile(nv.lat, 100))})
	rep.add(Figure{Scenario: scen, Metric: "origin rate achieved", Unit: "tx/s", Ours: o.achieved(), Native: nv.achieved()})
	rep.notef("latency: %d load connections start single-row inserts at %.0f tx/s for %s (after %s of warm-up, not counted); latency = the moment a LISTEN connection on the target receives the NOTIFY that an ENABLE ALWAYS AFTER INSERT trigger sends from the applying transaction (delivered at its commit) minus the origin's commit timestamp of the row (pg_xact_commit_timestamp on the origin); same machine clock. Samples: pgactive-go %d, native %d.",
		e.sizes.Clients, e.sizes.Rate, e.sizes.Duration, e.sizes.Warmup, len(o.lat), len(nv.lat))
	if rounds > 1 {
		rep.notef("latency: %d rounds, each system on fresh clusters once a round, who goes first alternating; the percentiles above pool the samples of every round. p99 of each round, pgactive-go against native: %s.",
			rounds, strings.Join(perRound, "; "))
	}
	if o.stages != "" {
		rep.notef("latency: where pgactive-go's delay arises, from the agents' delay histograms of the first round (pgactive_capture_delay_seconds, pgactive_apply_delay_seconds; upper bounds of buckets, warm-up included): %s.", o.stages)
	}
	return nil
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// add pools the samples of another round into r.
func (r *latencyResult) add(o latencyResult) {
	r.lat = append(r.lat, o.lat...)
	sortDurations(r.lat)
	r.sent += o.sent
	r.elapsed += o.elapsed
	r.missing += o.missing
	if r.stages == "" {
		r.stages = o.stages
	}
}

// achieved is the rate the origin ran, over every round.
func (r *latencyResult) achieved() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.sent) / r.elapsed.Seconds()
}

// latencyRun runs one system once; profiled allows the CPU profile (which
// covers one run only).
func latencyRun(ctx context.Context, e *env, sys system, profiled bool) (latencyResult, error) {
	sc := &scope{}
	defer sc.close()
	p, err := startPair(ctx, sc, e, sys, pairSpec{name: "lat-" + sys.short(), schema: latencySchema,
		targetSQL: notifySQL + "\n" + visibleTrigger("lat"), tables: []string{"lat"}})
	if err != nil {
		return latencyResult{}, err
	}
	if profiled {
		stop, err := e.startProfile(sys, ScenarioLatency)
		if err != nil {
			return latencyResult{}, err
		}
		defer stop()
	}
	l, err := listen(ctx, p.target, benchDB)
	if err != nil {
		return latencyResult{}, err
	}
	defer l.stop()
	dsn := p.origin.dsn(benchDB)
	warm := func(i int) (string, []any) {
		return `INSERT INTO lat (id, filler) VALUES ($1, $2)`, []any{-int64(i) - 1, filler}
	}
	if _, _, err := runRate(ctx, dsn, e.sizes.Clients, e.sizes.Rate, e.sizes.Warmup, warm); err != nil {
		return latencyResult{}, fmt.Errorf("warm-up: %w", err)
	}
	measured := func(i int) (string, []any) {
		return `INSERT INTO lat (id, filler) VALUES ($1, $2)`, []any{int64(i) + 1, filler}
	}
	sent, elapsed, err := runRate(ctx, dsn, e.sizes.Clients, e.sizes.Rate, e.sizes.Duration, measured)
	if err != nil {
		return latencyResult{}, err
	}
	positive := func(id int64) bool { return id > 0 }
	if err := l.waitCount(ctx, sent, positive, catchUpTimeout); err != nil {
		return latencyResult{}, err
	}
	committed, err := commitTimes(ctx, p.oconn, "lat", positive)
	if err != nil {
		return latencyResult{}, err
	}
	lat, missing := latencies(committed, l.snapshot())
	if len(lat) == 0 {
		return latencyResult{}, errNoSamples
	}
	r := latencyResult{sent: sent, elapsed: elapsed, lat: lat, missing: missing}
	if sys == ours {
		r.stages = p.group.delayStages()
	}
	e.sayf("latency: %s: %d rows at %.0f tx/s: p50 %s, p99 %s", sys, sent, r.achieved(), percentile(lat, 50), percentile(lat, 99))
	return r, nil
}
