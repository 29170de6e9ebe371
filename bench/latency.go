package bench

import (
	"context"
	"fmt"
	"time"
)

const latencySchema = `CREATE TABLE lat (id bigint PRIMARY KEY, filler text NOT NULL);`

// latencyResult is the latency scenario on one system.
type latencyResult struct {
	sent     int
	elapsed  time.Duration
	lat      []time.Duration // sorted
	missing  int
	achieved float64 // transactions per second the origin ran
	stages   string  // ours: where the delay arises, from the agents' histograms
}

func runLatency(ctx context.Context, e *env, rep *Report) error {
	res := map[system]latencyResult{}
	err := bothSystems(ctx, e, ScenarioLatency, func(ctx context.Context, sys system) error {
		r, err := latencyRun(ctx, e, sys)
		res[sys] = r
		return err
	})
	if err != nil {
		return err
	}
	o, nv := res[ours], res[native]
	scen := fmt.Sprintf("latency at %.0f tx/s", e.sizes.Rate)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	rep.add(Figure{Scenario: scen, Metric: "p50 commit to visible", Unit: "ms", Ours: ms(percentile(o.lat, 50)), Native: ms(percentile(nv.lat, 50))})
	rep.add(Figure{Scenario: scen, Metric: "p99 commit to visible", Unit: "ms", Ours: ms(percentile(o.lat, 99)), Native: ms(percentile(nv.lat, 99)), Goal: Goal{RatioAtMost, 2.0}})
	rep.add(Figure{Scenario: scen, Metric: "max commit to visible", Unit: "ms", Ours: ms(percentile(o.lat, 100)), Native: ms(percentile(nv.lat, 100))})
	rep.add(Figure{Scenario: scen, Metric: "origin rate achieved", Unit: "tx/s", Ours: o.achieved, Native: nv.achieved})
	rep.notef("latency: %d load connections start single-row inserts at %.0f tx/s for %s (after %s of warm-up, not counted); latency = the moment a LISTEN connection on the target receives the NOTIFY that an ENABLE ALWAYS AFTER INSERT trigger sends from the applying transaction (delivered at its commit) minus the origin's commit timestamp of the row (pg_xact_commit_timestamp on the origin); same machine clock. Samples: pgactive-go %d, native %d.",
		e.sizes.Clients, e.sizes.Rate, e.sizes.Duration, e.sizes.Warmup, len(o.lat), len(nv.lat))
	if o.stages != "" {
		rep.notef("latency: where pgactive-go's delay arises, from the agents' delay histograms (pgactive_capture_delay_seconds, pgactive_apply_delay_seconds; upper bounds of buckets, warm-up included): %s.", o.stages)
	}
	return nil
}

func latencyRun(ctx context.Context, e *env, sys system) (latencyResult, error) {
	sc := &scope{}
	defer sc.close()
	p, err := startPair(ctx, sc, e, sys, pairSpec{name: "lat-" + sys.short(), schema: latencySchema,
		targetSQL: notifySQL + "\n" + visibleTrigger("lat"), tables: []string{"lat"}})
	if err != nil {
		return latencyResult{}, err
	}
	stop, err := e.startProfile(sys, ScenarioLatency)
	if err != nil {
		return latencyResult{}, err
	}
	defer stop()
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
	r := latencyResult{sent: sent, elapsed: elapsed, lat: lat, missing: missing, achieved: float64(sent) / elapsed.Seconds()}
	if sys == ours {
		r.stages = p.group.delayStages()
	}
	e.sayf("latency: %s: %d rows at %.0f tx/s: p50 %s, p99 %s", sys, sent, r.achieved, percentile(lat, 50), percentile(lat, 99))
	return r, nil
}
