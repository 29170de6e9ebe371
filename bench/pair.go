package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// system is what replicates: pgactive-go or PostgreSQL's own.
type system int

const (
	ours system = iota
	native
)

func (s system) String() string {
	if s == ours {
		return "pgactive-go"
	}
	return "native"
}

// short names the system in cluster names.
func (s system) short() string {
	if s == ours {
		return "ours"
	}
	return "native"
}

// benchDB is the replicated database of every scenario.
const benchDB = "app"

// markerSchema is the table every scenario writes a marker row to after its
// load: apply is in commit order, so once the marker is visible on a target,
// everything committed before it on the origin is too.
const markerSchema = `CREATE TABLE marker (k text PRIMARY KEY, v bigint NOT NULL);`

// pair is an origin that one system replicates to a target.
type pair struct {
	sys            system
	origin, target *cluster
	oconn, tconn   *pgx.Conn // for markers and checks
	pause, resume  func(context.Context) error
	group          *agentGroup   // ours
	sub            *subscription // native
	natsURL        string        // ours
}

// pairSpec says what to create on the pair.
type pairSpec struct {
	name      string   // cluster name prefix
	schema    string   // run on both databases (markerSchema is added)
	targetSQL string   // then run on the target only (triggers)
	tables    []string // what native publishes (marker is added)
}

// startPair starts two clusters and links them with sys; everything is
// registered with sc.
func startPair(ctx context.Context, sc *scope, e *env, sys system, spec pairSpec) (*pair, error) {
	p := &pair{sys: sys}
	var err error
	if p.origin, err = startCluster(ctx, sc, spec.name+"-origin", e.binDir); err != nil {
		return nil, err
	}
	if p.target, err = startCluster(ctx, sc, spec.name+"-target", e.binDir); err != nil {
		return nil, err
	}
	for _, c := range []*cluster{p.origin, p.target} {
		if err := c.createDB(ctx, benchDB, spec.schema+"\n"+markerSchema); err != nil {
			return nil, err
		}
	}
	if spec.targetSQL != "" {
		if err := p.target.exec(ctx, benchDB, spec.targetSQL); err != nil {
			return nil, err
		}
	}
	if p.oconn, err = p.origin.connect(ctx, benchDB); err != nil {
		return nil, err
	}
	sc.add(func() { p.oconn.Close(context.Background()) })
	if p.tconn, err = p.target.connect(ctx, benchDB); err != nil {
		return nil, err
	}
	sc.add(func() { p.tconn.Close(context.Background()) })

	switch sys {
	case ours:
		err = p.startOurs(ctx, sc, e)
	case native:
		err = p.startNative(ctx, spec.tables)
	}
	if err != nil {
		return nil, err
	}
	// A first row through proves the link works end to end.
	if _, err := p.mark(ctx, "probe", 1, time.Minute); err != nil {
		return nil, fmt.Errorf("%s: first row does not reach the target: %w", sys, err)
	}
	return p, nil
}

func (p *pair) startOurs(ctx context.Context, sc *scope, e *env) error {
	url, err := startNATS(sc)
	if err != nil {
		return err
	}
	p.natsURL = url
	p.group = newAgentGroup(url, e.log, map[string]string{"origin": p.origin.dsn(benchDB), "target": p.target.dsn(benchDB)},
		[]string{"origin", "target"})
	if err := p.group.start(ctx); err != nil {
		return err
	}
	sc.add(p.group.stop)
	p.pause = func(context.Context) error { p.group.stop(); return nil }
	p.resume = p.group.start
	return nil
}

func (p *pair) startNative(ctx context.Context, tables []string) error {
	if err := publish(ctx, p.origin, benchDB, "bench", append(tables, "marker")); err != nil {
		return err
	}
	sub, err := subscribe(ctx, "bench", p.origin, benchDB, p.target, benchDB, "bench", false)
	if err != nil {
		return err
	}
	p.sub = sub
	if err := sub.waitStreaming(ctx); err != nil {
		return err
	}
	p.pause = sub.disable
	p.resume = sub.enable
	return nil
}

// mark writes marker k = v on the origin and waits until the target shows
// it; it returns when the target showed it.
func (p *pair) mark(ctx context.Context, k string, v int64, timeout time.Duration) (time.Time, error) {
	if err := writeMarker(ctx, p.oconn, "marker", k, v); err != nil {
		return time.Time{}, err
	}
	return waitMarker(ctx, p.tconn, "marker", k, v, timeout)
}

// writeMarker sets marker k of table to v.
func writeMarker(ctx context.Context, conn *pgx.Conn, table, k string, v int64) error {
	sql := "INSERT INTO " + pgx.Identifier{table}.Sanitize() + " (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
	if _, err := conn.Exec(ctx, sql, k, v); err != nil {
		return fmt.Errorf("write marker %s: %w", k, err)
	}
	return nil
}

// waitMarker polls conn until marker k of table holds v, and returns when
// it saw it.
func waitMarker(ctx context.Context, conn *pgx.Conn, table, k string, v int64, timeout time.Duration) (time.Time, error) {
	var seen time.Time
	sql := "SELECT v FROM " + pgx.Identifier{table}.Sanitize() + " WHERE k = $1"
	err := poll(ctx, timeout, 5*time.Millisecond, fmt.Sprintf("marker %s = %d", k, v), func(ctx context.Context) (bool, error) {
		var got int64
		err := conn.QueryRow(ctx, sql, k).Scan(&got)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if got == v {
			seen = time.Now()
			return true, nil
		}
		return false, fmt.Errorf("marker %s is %d", k, got)
	})
	return seen, err
}
