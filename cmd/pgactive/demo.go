package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/pgactive-go/pgactive/bench"
	"github.com/pgactive-go/pgactive/extension"
	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

// demo walks the quick start on two throwaway clusters, narrating each step.
type demo struct {
	out       io.Writer
	endpoints [2]*bench.LocalCluster
	conns     [2]*pgx.Conn
	natsURL   string
	agents    *demoAgents
	start     time.Time
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return usagef("demo takes no arguments")
	}
	d := &demo{out: stdout, start: time.Now()}
	err := d.run(ctx, stderr)
	d.cleanup()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	d.say("done in %s: everything was stopped and removed", time.Since(d.start).Round(100*time.Millisecond))
	return nil
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "\n== "+format+"\n", args...)
}

func (d *demo) run(ctx context.Context, stderr io.Writer) error {
	d.say("starting two PostgreSQL 15 clusters, endpoint1 and endpoint2")
	for i := range d.endpoints {
		c, err := bench.StartLocalCluster(ctx, fmt.Sprintf("endpoint%d", i+1))
		if err != nil {
			return err
		}
		d.endpoints[i] = c
		fmt.Fprintf(d.out, "endpoint%d listens on 127.0.0.1:%d (PostgreSQL from %s)\n", i+1, c.Port, c.BinDir)
	}
	createSchema := false
	if dir, err := extension.Install(d.endpoints[0].BinDir + "/pg_config"); err != nil {
		fmt.Fprintf(d.out, "could not install the extension files (%v): the agents create the pgactive objects themselves (--create-schema)\n", err)
		createSchema = true
	} else {
		fmt.Fprintf(d.out, "pgactive extension files installed into %s\n", dir)
	}

	for i := range d.endpoints {
		d.say("endpoint%d: step 1, create the database", i+1)
		if err := d.sql(ctx, i, "postgres", "CREATE DATABASE app"); err != nil {
			return err
		}
		conn, err := connectNotices(ctx, d.endpoints[i].DSN("app"), func(n string) { fmt.Fprintln(d.out, n) })
		if err != nil {
			return err
		}
		d.conns[i] = conn
	}

	port, err := freePort()
	if err != nil {
		return err
	}
	storeDir, err := os.MkdirTemp("", "pgactive-demo-nats-")
	if err != nil {
		return err
	}
	srv, err := stream.StartServer(stream.ServerConfig{Listen: fmt.Sprintf("127.0.0.1:%d", port), StoreDir: storeDir})
	if err != nil {
		return err
	}
	defer func() {
		if d.agents != nil {
			d.agents.stop() // before the server goes: no disconnect to warn of
		}
		srv.Shutdown()
		os.RemoveAll(storeDir)
	}()
	d.natsURL = srv.ClientURL()
	d.say("started the embedded NATS JetStream server on %s and one agent per database (pgactive run)", d.natsURL)
	d.agents = &demoAgents{dsns: []string{d.endpoints[0].DSN("app"), d.endpoints[1].DSN("app")}, url: d.natsURL, createSchema: createSchema,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if err := d.agents.start(ctx); err != nil {
		return err
	}
	return d.quickStart(ctx, createSchema)
}

func (d *demo) quickStart(ctx context.Context, createSchema bool) error {
	servers := ""
	for i, c := range d.endpoints {
		servers += fmt.Sprintf(`CREATE SERVER pgactive_server_endpoint%d
    FOREIGN DATA WRAPPER pgactive_fdw
    OPTIONS (host '127.0.0.1', port '%d', dbname 'app');
CREATE USER MAPPING FOR postgres
    SERVER pgactive_server_endpoint%d
    OPTIONS (user 'postgres', password '%s');
`, i+1, c.Port, i+1, c.Password)
	}
	steps := []struct {
		say      string
		endpoint int
		sql      string
	}{
		{"endpoint1: step 4, a table with three products", 0, `CREATE SCHEMA inventory;
CREATE TABLE inventory.products (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  product_name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO inventory.products (product_name)
VALUES ('soap'), ('shampoo'), ('conditioner')`},
		{"endpoint1: step 5, the extension", 0, "CREATE EXTENSION IF NOT EXISTS pgactive"},
		{"endpoint1: step 3, is an agent attached? (pgactive-go's counterpart of the shared_preload_libraries check)", 0, "SELECT pgactive.pgactive_is_agent_attached()"},
		{"endpoint1: step 6, connection information for both nodes", 0, servers},
		{"endpoint1: step 7, create the group", 0, `SELECT pgactive.pgactive_create_group(
    node_name := 'endpoint1-app',
    node_dsn := 'user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1'
)`},
		{"endpoint1: wait until the node is ready", 0, "SELECT pgactive.pgactive_wait_for_node_ready()"},
		{"endpoint2: step 9, the extension", 1, "CREATE EXTENSION IF NOT EXISTS pgactive"},
		{"endpoint2: step 8, is an agent attached?", 1, "SELECT pgactive.pgactive_is_agent_attached()"},
		{"endpoint2: step 10, connection information for both nodes", 1, servers},
		{"endpoint2: step 11, join the group (a full initial copy from endpoint1)", 1, `SELECT pgactive.pgactive_join_group(
    node_name := 'endpoint2-app',
    node_dsn := 'user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint2',
    join_using_dsn := 'user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1'
)`},
		{"endpoint2: wait until the node is ready (progress arrives as NOTICEs)", 1, "SELECT pgactive.pgactive_wait_for_node_ready(progress_interval := 1)"},
		{"endpoint2: step 12, the products arrived", 1, "SELECT count(*) FROM inventory.products"},
		{"endpoint2: step 13, a write on the second node", 1, "INSERT INTO inventory.products (product_name) VALUES ('lotion')"},
	}
	for _, s := range steps {
		if createSchema && strings.HasPrefix(s.sql, "CREATE EXTENSION") {
			continue
		}
		d.say("%s", s.say)
		if err := d.sql(ctx, s.endpoint, "", s.sql); err != nil {
			return err
		}
	}
	d.say("endpoint1: step 14, the row written on endpoint2 is here")
	if err := d.waitCount(ctx, 0, 4); err != nil {
		return err
	}
	if err := d.conflict(ctx); err != nil {
		return err
	}
	d.say("endpoint1: replication lag, for every path, seen from one node")
	d.waitQuiet(ctx, 0, "SELECT count(*) FROM pgactive.pgactive_get_replication_lag_info() WHERE active AND pending_messages = 0", 2)
	if err := d.sql(ctx, 0, "", "SELECT node_name, active, pending_wal_decoding, pending_wal_to_apply, pending_messages, lag_seconds FROM pgactive.pgactive_get_replication_lag_info()"); err != nil {
		return err
	}
	d.say("clean up: detach both nodes, remove pgactive from each, drop the extension")
	if err := d.sql(ctx, 0, "", "SELECT pgactive.pgactive_detach_nodes(ARRAY['endpoint1-app', 'endpoint2-app'])"); err != nil {
		return err
	}
	for i := range d.conns {
		if err := d.waitStatus(ctx, i, node.StateDetached); err != nil {
			return err
		}
		if err := d.sql(ctx, i, "", "SELECT pgactive.pgactive_remove()"); err != nil {
			return err
		}
		if !createSchema {
			if err := d.sql(ctx, i, "", "DROP EXTENSION pgactive"); err != nil {
				return err
			}
		}
	}
	return d.waitNATSClean(ctx)
}

// waitNATSClean waits until the agents deleted the group's streams.
func (d *demo) waitNATSClean(ctx context.Context) error {
	nc, js, err := stream.Connect(ctx, stream.ConnectOptions{URLs: d.natsURL, Name: "pgactive demo check"}, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer nc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := 0
		for _, n := range []string{"endpoint1-app", "endpoint2-app"} {
			if _, err := js.Stream(ctx, stream.StreamName("app", n)); err == nil {
				left++
			}
		}
		if left == 0 {
			fmt.Fprintln(d.out, "the agents deleted both nodes' streams and consumers from NATS")
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d node streams still in NATS after 30s", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// conflict makes the quick start's conflict: both nodes rename soap while
// their agents are stopped, then replication resumes.
func (d *demo) conflict(ctx context.Context) error {
	d.say("a conflict: the agents stop; endpoint1 renames soap to sapone, then endpoint2 renames it to savon")
	d.agents.stop()
	if err := d.sql(ctx, 0, "", "UPDATE inventory.products SET product_name = 'sapone' WHERE product_name = 'soap'"); err != nil {
		return err
	}
	if err := d.sql(ctx, 1, "", "UPDATE inventory.products SET product_name = 'savon' WHERE product_name = 'soap'"); err != nil {
		return err
	}
	d.say("the agents start again; the later update wins on both nodes")
	if err := d.agents.start(ctx); err != nil {
		return err
	}
	for i := range d.conns {
		if err := d.waitRows(ctx, i, "SELECT count(*) FROM pgactive.pgactive_conflict_history", 1); err != nil {
			return err
		}
		if err := d.sql(ctx, i, "", "SELECT product_name FROM inventory.products ORDER BY product_name"); err != nil {
			return err
		}
		if err := d.sql(ctx, i, "", "SELECT conflict_type, conflict_resolution, local_tuple->>'product_name' AS local, remote_tuple->>'product_name' AS remote FROM pgactive.pgactive_conflict_history"); err != nil {
			return err
		}
	}
	return nil
}

// sql runs statements on an endpoint (on db, or the app connection when db
// is empty), printing them and their results.
func (d *demo) sql(ctx context.Context, endpoint int, db, sql string) error {
	fmt.Fprintf(d.out, "endpoint%d=# %s;\n", endpoint+1, strings.ReplaceAll(sql, "\n", "\n    "))
	conn := d.conns[endpoint]
	if db != "" {
		c, err := connectNotices(ctx, d.endpoints[endpoint].DSN(db), nil)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		conn = c
	}
	if !strings.HasPrefix(strings.TrimSpace(sql), "SELECT") {
		_, err := conn.Exec(ctx, sql)
		return err
	}
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return err
	}
	defer rows.Close()
	var names []string
	for _, f := range rows.FieldDescriptions() {
		names = append(names, f.Name)
	}
	fmt.Fprintln(d.out, strings.Join(names, " | "))
	n := 0
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return err
		}
		cells := make([]string, len(vals))
		for i, v := range vals {
			if v == nil {
				cells[i] = ""
			} else {
				cells[i] = fmt.Sprint(v)
			}
		}
		fmt.Fprintln(d.out, strings.Join(cells, " | "))
		n++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "(%d row%s)\n", n, map[bool]string{true: "", false: "s"}[n == 1])
	return nil
}

func (d *demo) waitCount(ctx context.Context, endpoint, want int) error {
	return d.waitRows(ctx, endpoint, "SELECT count(*) FROM inventory.products", want)
}

func (d *demo) waitRows(ctx context.Context, endpoint int, sql string, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		err := d.conns[endpoint].QueryRow(ctx, sql).Scan(&n)
		if err == nil && n >= want {
			return d.sql(ctx, endpoint, "", sql)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("endpoint%d: %s: got %d after 30s, want %d (last error: %v)", endpoint+1, sql, n, want, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitQuiet waits (up to 20 s, silently) until sql counts want rows.
func (d *demo) waitQuiet(ctx context.Context, endpoint int, sql string, want int) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := d.conns[endpoint].QueryRow(ctx, sql).Scan(&n); err == nil && n >= want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (d *demo) waitStatus(ctx context.Context, endpoint int, status string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var s string
		err := d.conns[endpoint].QueryRow(ctx, `SELECT node_status::text FROM pgactive.pgactive_nodes WHERE node_name = pgactive.pgactive_get_local_node_name()`).Scan(&s)
		if err == nil && s == status {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("endpoint%d: node status %q after 30s, want %q (last error: %v)", endpoint+1, s, status, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (d *demo) cleanup() {
	if d.agents != nil {
		d.agents.stop()
	}
	for i, c := range d.conns {
		if c != nil {
			c.Close(context.Background())
			d.conns[i] = nil
		}
	}
	for _, c := range d.endpoints {
		if c != nil {
			c.Stop()
		}
	}
}

// connectNotices connects to dsn, passing the server's notices to onNotice
// when it is set.
func connectNotices(ctx context.Context, dsn string, onNotice func(string)) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if onNotice != nil {
		cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { onNotice(n.Severity + ":  " + n.Message) }
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// demoAgents runs one controller per database, as `pgactive run` does.
type demoAgents struct {
	dsns         []string
	url          string
	createSchema bool
	log          *slog.Logger
	cancel       context.CancelFunc
	done         chan error
}

func (a *demoAgents) start(ctx context.Context) error {
	nc, js, err := stream.Connect(ctx, stream.ConnectOptions{URLs: a.url, Name: "pgactive demo"}, a.log)
	if err != nil {
		return err
	}
	var createSchema func(context.Context, *pgx.Conn) error
	if a.createSchema {
		createSchema = extension.CreateSchema
	}
	actx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(actx)
	for _, dsn := range a.dsns {
		c := node.NewController(node.ControllerConfig{DSN: dsn, NC: nc, JS: js, Replicas: 1, CreateSchema: createSchema, Log: a.log})
		g.Go(func() error { return c.Run(gctx) })
	}
	a.cancel, a.done = cancel, make(chan error, 1)
	go func() {
		err := g.Wait()
		nc.Close()
		a.done <- err
	}()
	// The agents attach within a moment; the SQL functions check for them.
	deadline := time.Now().Add(30 * time.Second)
	for _, dsn := range a.dsns {
		for {
			ok, err := attached(ctx, dsn)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return errors.Join(errors.New("agents did not attach within 30s"), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func attached(ctx context.Context, dsn string) (bool, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	var ok bool
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgactive:agent')`).Scan(&ok)
	return ok, err
}

func (a *demoAgents) stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	<-a.done
	a.cancel = nil
}
