package bench

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"time"
)

const throughputSchema = `CREATE TABLE accounts (id bigint PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL DEFAULT 0, filler text NOT NULL);`

// filler makes rows the size of pgbench_accounts rows.
var filler = strings.Repeat("x", 84)

// catchUpTimeout bounds the wait for a target to show a phase's last row.
const catchUpTimeout = 30 * time.Minute

// phaseResult is one load phase on one system.
type phaseResult struct {
	rows    int
	load    time.Duration // the origin's load, first transaction to last commit
	visible time.Duration // live: load start to last row visible; backlog: first to last row visible
	restart time.Duration // backlog only: restart to first row visible
	cpu     cpuUse        // backlog only, restart to last row: this process, origin, target
}

func (r phaseResult) appliedRate() float64 { return float64(r.rows) / r.visible.Seconds() }
func (r phaseResult) originRate() float64  { return float64(r.rows) / r.load.Seconds() }
func (r phaseResult) catchUp() float64     { return (r.visible - r.load).Seconds() }

// throughput phases, in the order they run.
var throughputPhases = []string{"inserts", "updates", "backlog inserts", "backlog updates"}

func runThroughput(ctx context.Context, e *env, rep *Report) error {
	res := map[system]map[string]phaseResult{}
	err := bothSystems(ctx, e, ScenarioThroughput, func(ctx context.Context, sys system) error {
		r, err := throughputRun(ctx, e, sys)
		res[sys] = r
		return err
	})
	if err != nil {
		return err
	}
	n := e.sizes.Rows
	for _, ph := range throughputPhases {
		o, nv := res[ours][ph], res[native][ph]
		scen := "throughput: " + ph
		rep.add(Figure{Scenario: scen, Metric: "applied", Unit: "rows/s", Ours: o.appliedRate(), Native: nv.appliedRate(), Goal: Goal{RatioAtLeast, 1.0}})
		if !strings.HasPrefix(ph, "backlog") {
			rep.add(Figure{Scenario: scen, Metric: "origin commits", Unit: "tx/s", Ours: o.originRate(), Native: nv.originRate()})
			rep.add(Figure{Scenario: scen, Metric: "catch-up after load", Unit: "s", Ours: o.catchUp(), Native: nv.catchUp()})
			continue
		}
		perK := func(u cpuUse) float64 { return float64(u.total().Milliseconds()) * 1000 / float64(n) }
		rep.add(Figure{Scenario: scen, Metric: "restart to first row visible", Unit: "s", Ours: o.restart.Seconds(), Native: nv.restart.Seconds()})
		rep.add(Figure{Scenario: scen, Metric: "CPU per 1,000 rows, all processes", Unit: "ms", Ours: perK(o.cpu), Native: perK(nv.cpu)})
		rep.notef("throughput, %s: CPU while replicating the backlog of %d rows: pgactive-go %s (bench process: agents and NATS %s, origin PostgreSQL %s, target PostgreSQL %s) in %s; native %s (origin %s, target %s) in %s",
			ph, n, o.cpu.total().Round(10*time.Millisecond), o.cpu.self.Round(10*time.Millisecond), o.cpu.clusters[0].Round(10*time.Millisecond), o.cpu.clusters[1].Round(10*time.Millisecond), (o.restart + o.visible).Round(10*time.Millisecond),
			nv.cpu.total().Round(10*time.Millisecond), nv.cpu.clusters[0].Round(10*time.Millisecond), nv.cpu.clusters[1].Round(10*time.Millisecond), (nv.restart + nv.visible).Round(10*time.Millisecond))
	}
	rep.notef("throughput: one origin, one target; %d load connections, single-row autocommit transactions on a pgbench_accounts-like table: %d inserts, then %d updates (each row once), live (replication running); then the same again while replication is stopped (native: ALTER SUBSCRIPTION DISABLE; pgactive-go: both agents stopped), then restarted (a backlog). Live: applied rows/s = rows / (load start to a marker row written after the load being visible on the target); apply is in commit order, so the marker comes last. Backlog: rows / (a marker written before the load visible to the one written after it visible); the restart is timed apart (native's launcher starts a worker at most once per wal_retrieve_retry_interval, 5 s).",
		e.sizes.Clients, n, n)
	return nil
}

func throughputRun(ctx context.Context, e *env, sys system) (map[string]phaseResult, error) {
	sc := &scope{}
	defer sc.close()
	p, err := startPair(ctx, sc, e, sys, pairSpec{name: "tput-" + sys.short(), schema: throughputSchema, tables: []string{"accounts"}})
	if err != nil {
		return nil, err
	}
	stop, err := e.startProfile(sys, ScenarioThroughput)
	if err != nil {
		return nil, err
	}
	defer stop()
	n := e.sizes.Rows
	insert := func(base int) stmtFunc {
		return func(i int) (string, []any) {
			id := base + i + 1
			return `INSERT INTO accounts (id, bid, filler) VALUES ($1, $2, $3)`, []any{id, id/100_000 + 1, filler}
		}
	}
	update := func(rows int) stmtFunc {
		return func(i int) (string, []any) { // every row once, in scattered order (7919 is prime)
			return `UPDATE accounts SET abalance = abalance + 1 WHERE id = $1`, []any{(i*7919)%rows + 1}
		}
	}
	loads := map[string]stmtFunc{
		"inserts":         insert(0),
		"updates":         update(n),
		"backlog inserts": insert(n),
		"backlog updates": update(2 * n),
	}
	out := map[string]phaseResult{}
	for i, ph := range throughputPhases {
		e.sayf("throughput: %s: %d %s", sys, n, ph)
		var r phaseResult
		if strings.HasPrefix(ph, "backlog") {
			r, err = backlogPhase(ctx, p, e, n, loads[ph], int64(i))
		} else {
			r, err = livePhase(ctx, p, e, n, loads[ph], int64(i))
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", ph, err)
		}
		e.sayf("throughput: %s: %s: origin %.0f tx/s, applied %.0f rows/s", sys, ph, r.originRate(), r.appliedRate())
		out[ph] = r
	}
	return out, sameContents(ctx, p)
}

// livePhase runs the load with replication running.
func livePhase(ctx context.Context, p *pair, e *env, n int, stmt stmtFunc, mark int64) (phaseResult, error) {
	start := time.Now()
	load, err := runCount(ctx, p.origin.dsn(benchDB), e.sizes.Clients, n, stmt)
	if err != nil {
		return phaseResult{}, err
	}
	seen, err := p.mark(ctx, "phase", mark, catchUpTimeout)
	if err != nil {
		return phaseResult{}, err
	}
	return phaseResult{rows: n, load: load, visible: seen.Sub(start)}, nil
}

// backlogPhase runs the load with replication stopped, then times how long
// replication takes to bring the target up to date once restarted: from
// the first backlog transaction being visible (a marker written before the
// load) to the last (a marker written after it), so that the restart itself
// (native: the launcher's wal_retrieve_retry_interval throttle; ours: agent
// set-up) is timed apart.
func backlogPhase(ctx context.Context, p *pair, e *env, n int, stmt stmtFunc, mark int64) (phaseResult, error) {
	if err := p.pause(ctx); err != nil {
		return phaseResult{}, fmt.Errorf("stop replication: %w", err)
	}
	if err := writeMarker(ctx, p.oconn, "marker", "backlog start", mark); err != nil {
		return phaseResult{}, err
	}
	load, err := runCount(ctx, p.origin.dsn(benchDB), e.sizes.Clients, n, stmt)
	if err != nil {
		return phaseResult{}, err
	}
	if err := writeMarker(ctx, p.oconn, "marker", "phase", mark); err != nil {
		return phaseResult{}, err
	}
	meter := startCPUMeter(p.origin, p.target)
	start := time.Now()
	if err := p.resume(ctx); err != nil {
		return phaseResult{}, fmt.Errorf("restart replication: %w", err)
	}
	first, err := waitMarker(ctx, p.tconn, "marker", "backlog start", mark, catchUpTimeout)
	if err != nil {
		return phaseResult{}, err
	}
	last, err := waitMarker(ctx, p.tconn, "marker", "phase", mark, catchUpTimeout)
	if err != nil {
		return phaseResult{}, err
	}
	return phaseResult{rows: n, load: load, visible: last.Sub(first), restart: first.Sub(start), cpu: meter.stop()}, nil
}

// sameContents checks that the target holds what the origin holds.
func sameContents(ctx context.Context, p *pair) error {
	const q = `SELECT count(*), coalesce(sum(abalance), 0) FROM accounts`
	var on, os, tn, ts int64
	if err := p.oconn.QueryRow(ctx, q).Scan(&on, &os); err != nil {
		return fmt.Errorf("count origin rows: %w", err)
	}
	if err := p.tconn.QueryRow(ctx, q).Scan(&tn, &ts); err != nil {
		return fmt.Errorf("count target rows: %w", err)
	}
	if on != tn || os != ts {
		return fmt.Errorf("target differs from origin: %d rows, balance %d on the origin; %d rows, balance %d on the target", on, os, tn, ts)
	}
	return nil
}

// startProfile writes a CPU profile of this process to e.cpuProfile, when
// scenario is the one profiled and sys is pgactive-go, until the returned
// function is called.
func (e *env) startProfile(sys system, scenario string) (func(), error) {
	if sys != ours || e.profiled != scenario {
		return func() {}, nil
	}
	f, err := os.Create(e.cpuProfile)
	if err != nil {
		return nil, fmt.Errorf("create CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
