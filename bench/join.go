package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

// pgbenchSQL creates pgbench's tables at a scale, as pgbench -i -I dtGvp
// does (server-side generate_series, then vacuum, then primary keys).
func pgbenchSQL(scale int) []string {
	return []string{
		`CREATE TABLE pgbench_branches (bid int NOT NULL, bbalance int, filler char(88))`,
		`CREATE TABLE pgbench_tellers (tid int NOT NULL, bid int, tbalance int, filler char(84))`,
		`CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84))`,
		fmt.Sprintf(`INSERT INTO pgbench_branches (bid, bbalance) SELECT b, 0 FROM generate_series(1, %d) b`, scale),
		fmt.Sprintf(`INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT t, (t - 1) / 10 + 1, 0 FROM generate_series(1, %d) t`, 10*scale),
		fmt.Sprintf(`INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT a, (a - 1) / 100000 + 1, 0, '' FROM generate_series(1, %d) a`, 100_000*scale),
		`VACUUM (ANALYZE) pgbench_branches, pgbench_tellers, pgbench_accounts`,
		`ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid)`,
		`ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid)`,
		`ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)`,
		`CHECKPOINT`,
	}
}

var pgbenchTables = []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers"}

// joinResult is the join scenario: the same data copied three ways.
type joinResult struct {
	bytes   int64 // tables, indexes and TOAST on the source
	ours    time.Duration
	restore time.Duration // pg_dump -Fc | pg_restore
	sync    time.Duration // native subscription with copy_data = true
}

func runJoin(ctx context.Context, e *env, rep *Report) error {
	r, err := joinRun(ctx, e)
	if err != nil {
		return err
	}
	mib := float64(r.bytes) / (1 << 20)
	scen := fmt.Sprintf("join (%.0f MiB)", mib)
	rep.add(Figure{Scenario: scen, Metric: "time, native = pg_dump -Fc | pg_restore", Unit: "s", Ours: r.ours.Seconds(), Native: r.restore.Seconds(), Goal: Goal{RatioAtMost, 0.5}})
	rep.add(Figure{Scenario: scen, Metric: "rate, native = pg_dump -Fc | pg_restore", Unit: "MiB/s", Ours: mib / r.ours.Seconds(), Native: mib / r.restore.Seconds()})
	rep.add(Figure{Scenario: scen, Metric: "time, native = subscription copy_data", Unit: "s", Ours: r.ours.Seconds(), Native: r.sync.Seconds()})
	rep.notef("join: pgbench's tables at scale %d (%.0f MiB of tables and indexes, generated as pgbench -i -I dtGvp does) on a source node, copied into an empty database of another cluster three ways: node.Join (pgactive-go's initial copy: schema with pg_dump/pg_restore, data with COPY inside an exported snapshot by parallel workers (node.JoinConfig's default: one more than the CPUs, at most 8), binary format between servers of one major version, large tables split into ranges of pages, then indexes by as many pg_restore jobs), pg_dump -Fc | pg_restore (the tools pgactive's logical join runs, there through a dump file), and a native subscription with copy_data = true after a schema-only dump (indexes built as rows arrive, up to 2 table-sync workers). A checkpoint runs before each.",
		e.sizes.JoinScale, mib)
	return nil
}

func joinRun(ctx context.Context, e *env) (joinResult, error) {
	sc := &scope{}
	defer sc.close()
	var r joinResult
	src, err := startCluster(ctx, sc, "join-source", e.binDir)
	if err != nil {
		return r, err
	}
	dst, err := startCluster(ctx, sc, "join-target", e.binDir)
	if err != nil {
		return r, err
	}
	e.sayf("join: generating pgbench tables at scale %d", e.sizes.JoinScale)
	if err := src.createDB(ctx, benchDB, ""); err != nil {
		return r, err
	}
	for _, sql := range pgbenchSQL(e.sizes.JoinScale) {
		if err := src.exec(ctx, benchDB, sql); err != nil {
			return r, err
		}
	}
	if r.bytes, err = tablesSize(ctx, src, benchDB, pgbenchTables); err != nil {
		return r, err
	}
	want, err := countRows(ctx, src, benchDB, "pgbench_accounts")
	if err != nil {
		return r, err
	}
	js := &joinState{}
	steps := []struct {
		name    string
		db      string
		took    *time.Duration
		prepare func(context.Context) error // not timed
		run     func(context.Context, string) error
	}{
		{"pg_dump -Fc | pg_restore", "restored", &r.restore, nil, func(ctx context.Context, db string) error {
			return dumpRestore(ctx, e.binDir, src, benchDB, dst, db)
		}},
		{"native subscription with copy_data", "synced", &r.sync, nil, func(ctx context.Context, db string) error {
			return nativeSync(ctx, e.binDir, src, dst, db)
		}},
		{"pgactive-go node.Join", "joined", &r.ours, func(ctx context.Context) error {
			return js.startSource(ctx, sc, e, src)
		}, func(ctx context.Context, db string) error {
			return js.join(ctx, e, src, dst, db)
		}},
	}
	for _, st := range steps {
		if st.prepare != nil {
			if err := st.prepare(ctx); err != nil {
				return r, fmt.Errorf("%s: %w", st.name, err)
			}
		}
		for _, c := range []*cluster{src, dst} {
			if err := c.exec(ctx, "postgres", "CHECKPOINT"); err != nil {
				return r, err
			}
		}
		if err := dst.createDB(ctx, st.db, ""); err != nil {
			return r, err
		}
		e.sayf("join: %s", st.name)
		start := time.Now()
		if err := st.run(ctx, st.db); err != nil {
			return r, fmt.Errorf("%s: %w", st.name, err)
		}
		*st.took = time.Since(start)
		got, err := countRows(ctx, dst, st.db, "pgbench_accounts")
		if err != nil {
			return r, err
		}
		if got != want {
			return r, fmt.Errorf("%s: %d accounts copied, the source has %d", st.name, got, want)
		}
		e.sayf("join: %s: %s", st.name, st.took.Round(10*time.Millisecond))
	}
	return r, nil
}

func tablesSize(ctx context.Context, c *cluster, db string, tables []string) (int64, error) {
	conn, err := c.connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	err = conn.QueryRow(ctx, `SELECT sum(pg_total_relation_size(t::regclass))::bigint FROM unnest($1::text[]) t`, tables).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("measure the tables: %w", err)
	}
	return n, nil
}

func countRows(ctx context.Context, c *cluster, db, table string) (int64, error) {
	conn, err := c.connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s on %s: %w", table, c.name, err)
	}
	return n, nil
}

// dumpRestore runs pg_dump -Fc of src's srcDB into pg_restore into dst's
// dstDB, through a pipe. The passwords go through the environment.
func dumpRestore(ctx context.Context, binDir string, src *cluster, srcDB string, dst *cluster, dstDB string, dumpArgs ...string) error {
	dump := exec.CommandContext(ctx, filepath.Join(binDir, "pg_dump"), append([]string{"-Fc", "-h", "127.0.0.1", "-p", strconv.Itoa(src.port), "-U", "postgres", "-d", srcDB}, dumpArgs...)...)
	dump.Env = append(childEnv(os.TempDir()), "PGPASSWORD="+src.password)
	restore := exec.CommandContext(ctx, filepath.Join(binDir, "pg_restore"), "-h", "127.0.0.1", "-p", strconv.Itoa(dst.port), "-U", "postgres", "-d", dstDB)
	restore.Env = append(childEnv(os.TempDir()), "PGPASSWORD="+dst.password)
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pipe pg_dump into pg_restore: %w", err)
	}
	var dumpErr, restoreErr bytes.Buffer
	dump.Stdout, dump.Stderr = pw, &dumpErr
	restore.Stdin, restore.Stderr = pr, &restoreErr
	if err := restore.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("start pg_restore: %w", err)
	}
	pr.Close()
	if err := dump.Start(); err != nil {
		pw.Close()
		_ = restore.Wait()
		return fmt.Errorf("start pg_dump: %w", err)
	}
	pw.Close()
	derr := dump.Wait()
	rerr := restore.Wait()
	if derr != nil {
		return fmt.Errorf("pg_dump: %w: %s", derr, bytes.TrimSpace(dumpErr.Bytes()))
	}
	if rerr != nil {
		return fmt.Errorf("pg_restore: %w: %s", rerr, bytes.TrimSpace(restoreErr.Bytes()))
	}
	return nil
}

// nativeSync copies the schema, then subscribes with copy_data = true and
// waits until every table is synchronised; then it drops the subscription.
func nativeSync(ctx context.Context, binDir string, src, dst *cluster, db string) error {
	if err := dumpRestore(ctx, binDir, src, benchDB, dst, db, "--schema-only"); err != nil {
		return err
	}
	if err := publish(ctx, src, benchDB, "joinsync", pgbenchTables); err != nil {
		return err
	}
	if _, err := subscribe(ctx, "joinsync", src, benchDB, dst, db, "joinsync", true); err != nil {
		return err
	}
	conn, err := dst.connect(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = poll(ctx, catchUpTimeout, 100*time.Millisecond, "tables to be synchronised", func(ctx context.Context) (bool, error) {
		var ready, all int
		err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE srsubstate = 'r'), count(*) FROM pg_subscription_rel`).Scan(&ready, &all)
		if err != nil {
			return false, err
		}
		return all == len(pgbenchTables) && ready == all, fmt.Errorf("%d of %d tables ready", ready, all)
	})
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "DROP SUBSCRIPTION joinsync"); err != nil {
		return fmt.Errorf("drop the subscription: %w", err)
	}
	return src.exec(ctx, benchDB, "DROP PUBLICATION joinsync")
}

// joinState is pgactive-go's side of the join scenario: the source's agent
// runs (so the group exists with the source ready in it) before node.Join
// is timed.
type joinState struct {
	layout *stream.Layout
}

func (j *joinState) startSource(ctx context.Context, sc *scope, e *env, src *cluster) error {
	url, err := startNATS(sc)
	if err != nil {
		return err
	}
	g := newAgentGroup(url, e.log, map[string]string{"source": src.dsn(benchDB)}, []string{"source"})
	if err := g.start(ctx); err != nil {
		return err
	}
	sc.add(g.stop)
	nc, js, err := stream.Connect(ctx, stream.ConnectOptions{URLs: url, Name: "pgactive bench join"}, e.log)
	if err != nil {
		return err
	}
	sc.add(nc.Close)
	j.layout = &stream.Layout{JS: js, Group: benchGroup, Replicas: 1}
	return nil
}

func (j *joinState) join(ctx context.Context, e *env, src, dst *cluster, db string) error {
	return node.Join(ctx, node.JoinConfig{
		Group: benchGroup, Node: "joiner", DSN: dst.dsn(db),
		SourceNode: "source", SourceDSN: src.dsn(benchDB),
		Layout: j.layout, PGBinDir: e.binDir, Log: e.log,
	})
}
