package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgactive-go/pgactive/node"
)

const bigSchema = `CREATE TABLE big (id bigint PRIMARY KEY, val text NOT NULL);`

// bigResult is the big transaction on one system.
type bigResult struct {
	commit  time.Duration // the INSERT on the origin, commit included
	visible time.Duration // commit to the rows visible on the target
	// Peak RSS in bytes: pgactive-go's two agent processes (capture on the
	// origin, apply on the target); native's walsender and apply worker,
	// whose figures include the shared buffers they touched.
	originRSS, targetRSS int64
}

func runBigTxn(ctx context.Context, e *env, rep *Report) error {
	res := map[system]bigResult{}
	err := bothSystems(ctx, e, ScenarioBigTxn, func(ctx context.Context, sys system) error {
		r, err := bigRun(ctx, e, sys)
		res[sys] = r
		return err
	})
	if err != nil {
		return err
	}
	o, nv := res[ours], res[native]
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	scen := fmt.Sprintf("big transaction (%d rows)", e.sizes.BigRows)
	rep.add(Figure{Scenario: scen, Metric: "commit to visible on target", Unit: "s", Ours: o.visible.Seconds(), Native: nv.visible.Seconds()})
	rep.add(Figure{Scenario: scen, Metric: "origin INSERT and commit", Unit: "s", Ours: o.commit.Seconds(), Native: nv.commit.Seconds()})
	rep.add(Figure{Scenario: scen, Metric: "peak RSS, apply side (agent on target; native: apply worker)", Unit: "MiB", Ours: mib(o.targetRSS), Native: mib(nv.targetRSS), Goal: Goal{OursAtMost, 256}})
	rep.add(Figure{Scenario: scen, Metric: "peak RSS, capture side (agent on origin; native: walsender)", Unit: "MiB", Ours: mib(o.originRSS), Native: mib(nv.originRSS), Goal: Goal{OursAtMost, 256}})
	rep.notef("big transaction: one INSERT ... SELECT generate_series of %d rows (about 40 bytes each) in one transaction; time from its commit on the origin to the rows visible on the target (polled every 50 ms). Peak RSS is VmHWM from /proc/<pid>/status of each pgactive-go agent, each run as a separate process (this program again, with --agent-process), which holds the agent, its NATS client and the Go runtime. Native's figures are the VmHWM of its walsender and apply worker: they count the shared buffers those processes touched, and native spills a transaction larger than logical_decoding_work_mem (64 MB) to disk.",
		e.sizes.BigRows)
	return nil
}

func bigRun(ctx context.Context, e *env, sys system) (bigResult, error) {
	sc := &scope{}
	defer sc.close()
	var r bigResult
	var rss func() (int64, int64, error)
	var p *pair
	var err error
	if sys == native {
		if p, err = startPair(ctx, sc, e, sys, pairSpec{name: "big-native", schema: bigSchema, tables: []string{"big"}}); err != nil {
			return r, err
		}
		walsender, apply, err := p.sub.workerPIDs(ctx)
		if err != nil {
			return r, err
		}
		rss = func() (int64, int64, error) {
			o, err1 := peakRSS(walsender)
			t, err2 := peakRSS(apply)
			if err1 != nil {
				return 0, 0, err1
			}
			return o, t, err2
		}
	} else {
		if p, rss, err = startProcessPair(ctx, sc, e); err != nil {
			return r, err
		}
	}
	n := e.sizes.BigRows
	start := time.Now()
	if _, err := p.oconn.Exec(ctx, `INSERT INTO big (id, val) SELECT g, 'row ' || g || repeat('x', 20) FROM generate_series(1, $1) g`, n); err != nil {
		return r, fmt.Errorf("insert %d rows: %w", n, err)
	}
	r.commit = time.Since(start)
	committed := time.Now()
	err = poll(ctx, catchUpTimeout, 50*time.Millisecond, "the big transaction on the target", func(ctx context.Context) (bool, error) {
		var ok bool
		err := p.tconn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM big WHERE id = $1)`, n).Scan(&ok)
		return ok, err
	})
	if err != nil {
		return r, err
	}
	r.visible = time.Since(committed)
	var count int
	if err := p.tconn.QueryRow(ctx, `SELECT count(*) FROM big`).Scan(&count); err != nil || count != n {
		return r, fmt.Errorf("target holds %d rows, want %d (%v)", count, n, err)
	}
	if r.originRSS, r.targetRSS, err = rss(); err != nil {
		return r, err
	}
	e.sayf("big transaction: %s: committed in %s, visible %s later; peak RSS origin side %d MiB, target side %d MiB",
		sys, r.commit.Round(time.Millisecond), r.visible.Round(time.Millisecond), r.originRSS>>20, r.targetRSS>>20)
	return r, nil
}

// startProcessPair is startPair for pgactive-go with each agent in its own
// process, so that its peak memory is its own.
func startProcessPair(ctx context.Context, sc *scope, e *env) (*pair, func() (int64, int64, error), error) {
	p := &pair{sys: ours}
	var err error
	if p.origin, err = startCluster(ctx, sc, "big-ours-origin", e.binDir); err != nil {
		return nil, nil, err
	}
	if p.target, err = startCluster(ctx, sc, "big-ours-target", e.binDir); err != nil {
		return nil, nil, err
	}
	conns := []**pgx.Conn{&p.oconn, &p.tconn}
	for i, c := range []*cluster{p.origin, p.target} {
		if err := c.createDB(ctx, benchDB, bigSchema+"\n"+markerSchema); err != nil {
			return nil, nil, err
		}
		conn, err := c.connect(ctx, benchDB)
		if err != nil {
			return nil, nil, err
		}
		sc.add(func() { conn.Close(context.Background()) })
		*conns[i] = conn
	}
	url, err := startNATS(sc)
	if err != nil {
		return nil, nil, err
	}
	procs := make([]*agentProcess, 2)
	for i, name := range []string{"origin", "target"} {
		cfg := node.Config{Group: benchGroup, Node: name, DSN: []*cluster{p.origin, p.target}[i].dsn(benchDB), Replicas: 1}
		if procs[i], err = startAgentProcess(ctx, sc, e.agentCommand, url, cfg, e.progress); err != nil {
			return nil, nil, err
		}
	}
	// Both agents are ready; a first row through shows they are linked.
	if _, err := p.mark(ctx, "probe", 1, time.Minute); err != nil {
		return nil, nil, fmt.Errorf("first row does not reach the target: %w", err)
	}
	rss := func() (int64, int64, error) {
		o, err1 := procs[0].peakRSS()
		t, err2 := procs[1].peakRSS()
		if err1 != nil {
			return 0, 0, err1
		}
		return o, t, err2
	}
	return p, rss, nil
}
