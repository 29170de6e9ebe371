package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

const threeNodes = 3

// Row ids of the three-node scenario say which node wrote them and in which
// phase: node k (0-based) writes (k+1)·idSpan + offset + i.
const (
	idSpan     = int64(1_000_000_000_000)
	bulkOffset = int64(200_000_000_000) // full-speed phase
	warmOffset = int64(500_000_000_000) // latency warm-up; below bulkOffset: measured latency rows
)

func originOf(id int64) int { return int(id/idSpan) - 1 }
func measured(id int64) bool {
	r := id % idSpan
	return id > 0 && r < bulkOffset
}

// threeResult is the three-node scenario on one system.
type threeResult struct {
	lat     []time.Duration // sorted, over every (origin, target) pair
	missing int
	applied float64 // rows applied per second, all targets together
	written float64 // rows committed per second, all origins together
}

// threeLayout names the tables of one system: pgactive-go writes one table
// from every node; native, which cannot replicate a table both ways on
// PostgreSQL 15 without loops, gives each node its own.
type threeLayout struct{ sys system }

func (l threeLayout) items(origin int) string {
	if l.sys == ours {
		return "items"
	}
	return fmt.Sprintf("items_%d", origin+1)
}

func (l threeLayout) marker(origin int) string {
	if l.sys == ours {
		return "marker"
	}
	return fmt.Sprintf("marker_%d", origin+1)
}

func (l threeLayout) schema() string {
	var b strings.Builder
	b.WriteString(notifySQL + "\n")
	n := threeNodes
	if l.sys == ours {
		n = 1
	}
	for k := range n {
		t := l.items(k)
		fmt.Fprintf(&b, "CREATE TABLE %s (id bigint PRIMARY KEY, filler text NOT NULL);\n%s\n", t, visibleTrigger(t))
		fmt.Fprintf(&b, "CREATE TABLE %s (k text PRIMARY KEY, v bigint NOT NULL);\n", l.marker(k))
	}
	return b.String()
}

func runThree(ctx context.Context, e *env, rep *Report) error {
	res := map[system]threeResult{}
	err := bothSystems(ctx, e, ScenarioThree, func(ctx context.Context, sys system) error {
		r, err := threeRun(ctx, e, sys)
		res[sys] = r
		return err
	})
	if err != nil {
		return err
	}
	o, nv := res[ours], res[native]
	scen := "three nodes all writing"
	rep.add(Figure{Scenario: scen, Metric: "applied, all targets", Unit: "rows/s", Ours: o.applied, Native: nv.applied})
	rep.add(Figure{Scenario: scen, Metric: "committed, all origins", Unit: "tx/s", Ours: o.written, Native: nv.written})
	latScen := fmt.Sprintf("three nodes at %.0f tx/s", e.sizes.Rate)
	rep.add(Figure{Scenario: latScen, Metric: "p50 commit to visible", Unit: "ms", Ours: msOf(percentile(o.lat, 50)), Native: msOf(percentile(nv.lat, 50))})
	rep.add(Figure{Scenario: latScen, Metric: "p99 commit to visible", Unit: "ms", Ours: msOf(percentile(o.lat, 99)), Native: msOf(percentile(nv.lat, 99))})
	rep.notef("three nodes: every node writes; pgactive-go replicates one table written on all three nodes (disjoint keys), with one agent per node and one NATS server. Native logical replication on PostgreSQL 15 cannot replicate a table in both directions (the subscription option origin = none arrives in PostgreSQL 16), so its column is an approximation, not multi-master: each node writes its own table, publishes it, and subscribes to the other two nodes' publications (six subscriptions). Latency: %.0f tx/s in all (a third per node, %d connections each) for %s, measured as in the latency scenario over every (origin, target) pair. Throughput: each node inserts %d rows at full speed with %d connections at the same time; applied rows/s = 6 × %d / (start to the last node's marker visible on both other nodes).",
		e.sizes.Rate, e.sizes.ThreeClients, e.sizes.Duration, e.sizes.ThreeRows, e.sizes.ThreeClients, e.sizes.ThreeRows)
	return nil
}

// threeNodesSetup is three linked clusters of one system.
type threeNodesSetup struct {
	layout threeLayout
	nodes  []*cluster
	conns  []*pgx.Conn
}

func startThree(ctx context.Context, sc *scope, e *env, sys system) (*threeNodesSetup, error) {
	s := &threeNodesSetup{layout: threeLayout{sys}}
	for k := range threeNodes {
		c, err := startCluster(ctx, sc, fmt.Sprintf("three-%s-node%d", sys.short(), k+1), e.binDir)
		if err != nil {
			return nil, err
		}
		if err := c.createDB(ctx, benchDB, s.layout.schema()); err != nil {
			return nil, err
		}
		conn, err := c.connect(ctx, benchDB)
		if err != nil {
			return nil, err
		}
		sc.add(func() { conn.Close(context.Background()) })
		s.nodes, s.conns = append(s.nodes, c), append(s.conns, conn)
	}
	var err error
	if sys == ours {
		err = s.linkOurs(ctx, sc, e)
	} else {
		err = s.linkNative(ctx)
	}
	if err != nil {
		return nil, err
	}
	if _, err := s.markAll(ctx, "probe", 1, time.Minute); err != nil {
		return nil, fmt.Errorf("first rows do not reach every node: %w", err)
	}
	return s, nil
}

func (s *threeNodesSetup) linkOurs(ctx context.Context, sc *scope, e *env) error {
	url, err := startNATS(sc)
	if err != nil {
		return err
	}
	dsns := map[string]string{}
	var order []string
	for k, c := range s.nodes {
		name := fmt.Sprintf("node%d", k+1)
		dsns[name] = c.dsn(benchDB)
		order = append(order, name)
	}
	g := newAgentGroup(url, e.log, dsns, order)
	if err := g.start(ctx); err != nil {
		return err
	}
	sc.add(g.stop)
	return nil
}

func (s *threeNodesSetup) linkNative(ctx context.Context) error {
	var subs []*subscription
	for k, pub := range s.nodes {
		pubName := fmt.Sprintf("node%d", k+1)
		if err := publish(ctx, pub, benchDB, pubName, []string{s.layout.items(k), s.layout.marker(k)}); err != nil {
			return err
		}
		for j, sub := range s.nodes {
			if j == k {
				continue
			}
			sb, err := subscribe(ctx, fmt.Sprintf("node%d_from_node%d", j+1, k+1), pub, benchDB, sub, benchDB, pubName, false)
			if err != nil {
				return err
			}
			subs = append(subs, sb)
		}
	}
	for _, sb := range subs {
		if err := sb.waitStreaming(ctx); err != nil {
			return err
		}
	}
	return nil
}

// markAll has every node write marker k = v and waits until every other
// node shows it; it returns when the last one did.
func (s *threeNodesSetup) markAll(ctx context.Context, k string, v int64, timeout time.Duration) (time.Time, error) {
	for o, conn := range s.conns {
		if err := writeMarker(ctx, conn, s.layout.marker(o), fmt.Sprintf("%s node%d", k, o+1), v); err != nil {
			return time.Time{}, err
		}
	}
	var last time.Time
	for o := range s.conns {
		for t, conn := range s.conns {
			if t == o {
				continue
			}
			seen, err := waitMarker(ctx, conn, s.layout.marker(o), fmt.Sprintf("%s node%d", k, o+1), v, timeout)
			if err != nil {
				return time.Time{}, fmt.Errorf("node%d to node%d: %w", o+1, t+1, err)
			}
			if seen.After(last) {
				last = seen
			}
		}
	}
	return last, nil
}

func threeRun(ctx context.Context, e *env, sys system) (threeResult, error) {
	sc := &scope{}
	defer sc.close()
	s, err := startThree(ctx, sc, e, sys)
	if err != nil {
		return threeResult{}, err
	}
	var r threeResult
	if r.lat, r.missing, err = s.latency(ctx, e); err != nil {
		return r, fmt.Errorf("latency: %w", err)
	}
	if len(r.lat) == 0 {
		return r, errNoSamples
	}
	e.sayf("three: %s: p50 %s, p99 %s over %d samples, %d (row, target) pairs committed and never seen",
		sys, percentile(r.lat, 50), percentile(r.lat, 99), len(r.lat), r.missing)
	if r.applied, r.written, err = s.throughput(ctx, e); err != nil {
		return r, fmt.Errorf("throughput: %w", err)
	}
	e.sayf("three: %s: %.0f rows/s committed, %.0f rows/s applied", sys, r.written, r.applied)
	return r, nil
}

func (s *threeNodesSetup) insertFunc(origin int, offset int64) stmtFunc {
	sql := "INSERT INTO " + pgx.Identifier{s.layout.items(origin)}.Sanitize() + " (id, filler) VALUES ($1, $2)"
	base := int64(origin+1)*idSpan + offset
	return func(i int) (string, []any) { return sql, []any{base + int64(i) + 1, filler} }
}

// latency runs the fixed rate from every node and pairs each row's commit
// time on its origin with when each other node showed it.
func (s *threeNodesSetup) latency(ctx context.Context, e *env) ([]time.Duration, int, error) {
	ls := make([]*listener, len(s.nodes))
	for k, c := range s.nodes {
		l, err := listen(ctx, c, benchDB)
		if err != nil {
			return nil, 0, err
		}
		defer l.stop()
		ls[k] = l
	}
	rate := e.sizes.Rate / threeNodes
	sent := make([]int, len(s.nodes))
	for _, phase := range []struct {
		offset int64
		d      time.Duration
	}{{warmOffset, e.sizes.Warmup}, {0, e.sizes.Duration}} {
		g, gctx := errgroup.WithContext(ctx)
		for k, c := range s.nodes {
			g.Go(func() error {
				n, _, err := runRate(gctx, c.dsn(benchDB), e.sizes.ThreeClients, rate, phase.d, s.insertFunc(k, phase.offset))
				sent[k] = n
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, 0, err
		}
	}
	total := 0
	for _, n := range sent {
		total += n
	}
	for t, l := range ls {
		fromOthers := func(id int64) bool { return measured(id) && originOf(id) != t }
		if err := l.waitCount(ctx, total-sent[t], fromOthers, catchUpTimeout); err != nil {
			return nil, 0, fmt.Errorf("node%d: %w", t+1, err)
		}
	}
	var all []time.Duration
	missing := 0
	for o, conn := range s.conns {
		committed, err := commitTimes(ctx, conn, s.layout.items(o), func(id int64) bool { return measured(id) && originOf(id) == o })
		if err != nil {
			return nil, 0, err
		}
		for t, l := range ls {
			if t == o {
				continue
			}
			lat, miss := latencies(committed, l.snapshot())
			all = append(all, lat...)
			missing += miss
		}
	}
	sortDurations(all)
	return all, missing, nil
}

// throughput has every node insert at full speed at once, and returns the
// rows applied per second on all targets and committed on all origins.
func (s *threeNodesSetup) throughput(ctx context.Context, e *env) (applied, written float64, err error) {
	n := e.sizes.ThreeRows
	loads := make([]time.Duration, len(s.nodes))
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for k, c := range s.nodes {
		g.Go(func() error {
			d, err := runCount(gctx, c.dsn(benchDB), e.sizes.ThreeClients, n, s.insertFunc(k, bulkOffset))
			loads[k] = d
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	last, err := s.markAll(ctx, "bulk", 1, catchUpTimeout)
	if err != nil {
		return 0, 0, err
	}
	slowest := max(loads[0], loads[1], loads[2])
	return float64(threeNodes*(threeNodes-1)*n) / last.Sub(start).Seconds(), float64(threeNodes*n) / slowest.Seconds(), nil
}
