package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgactive-go/pgactive/extension"
)

// The tests of the SQL surface run against a real PostgreSQL with the extension installed, and
// stand in for the agent only in what the contract says the agent does: a session with
// application_name 'pgactive:agent' is an attached agent, and the agent writes the state tables
// (pgactive_nodes statuses, pgactive_requests states, pgactive_join_progress, pgactive_lag).

var extInstall struct {
	once sync.Once
	dir  string
	err  error
}

// extInstalled installs the extension files once per test binary and reports whether that worked.
func extInstalled(t *testing.T) bool {
	t.Helper()
	extInstall.once.Do(func() { extInstall.dir, extInstall.err = extension.Install("") })
	if extInstall.err != nil {
		t.Logf("extension files not installed (%v): creating pgactive's objects with extension.CreateSchema", extInstall.err)
		return false
	}
	return true
}

// extSetUp creates pgactive's objects in db as the quick start does (CREATE EXTENSION IF NOT EXISTS
// pgactive), or with extension.CreateSchema where the files could not be installed.
func extSetUp(t *testing.T, p *Postgres, db string) {
	t.Helper()
	if extInstalled(t) {
		p.Psql(t, db, "CREATE EXTENSION IF NOT EXISTS pgactive;")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := extension.CreateSchema(ctx, p.Connect(t, db)); err != nil {
		t.Fatalf("CreateSchema on %s: %v", db, err)
	}
}

// extServersSQL is the quick start's step 6, connection info for both endpoints, with a port
// option added and the placeholders filled in.
func extServersSQL(p *Postgres) string {
	return fmt.Sprintf(`
-- connection info for endpoint1
CREATE SERVER pgactive_server_endpoint1
    FOREIGN DATA WRAPPER pgactive_fdw
    OPTIONS (host '127.0.0.1', port '%[1]d', dbname 'app');
CREATE USER MAPPING FOR postgres
    SERVER pgactive_server_endpoint1
    OPTIONS (user 'postgres', password '%[2]s');

-- connection info for endpoint2
CREATE SERVER pgactive_server_endpoint2
    FOREIGN DATA WRAPPER pgactive_fdw
    OPTIONS (host '127.0.0.1', port '%[1]d', dbname 'app2');
CREATE USER MAPPING FOR postgres
    SERVER pgactive_server_endpoint2
    OPTIONS (user 'postgres', password '%[2]s');
`, p.Port, p.Password)
}

// The quick start's SQL, as typed.
const (
	extCreateGroupSQL = `SELECT pgactive.pgactive_create_group(
    node_name := 'endpoint1-app',
    node_dsn := 'user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1'

);
`
	extJoinGroupSQL = `SELECT pgactive.pgactive_join_group(
    node_name := 'endpoint2-app',
    node_dsn := 'user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint2',
    join_using_dsn := 'user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1'
);
`
	extWaitSQL   = "SELECT pgactive.pgactive_wait_for_node_ready();\n"
	extDetachSQL = "SELECT pgactive.pgactive_detach_nodes(ARRAY['endpoint1-app', 'endpoint2-app']);\n"
	extRemoveSQL = "SELECT pgactive.pgactive_remove();\n"
	extDropSQL   = "DROP EXTENSION pgactive;\n"
	extTableSQL  = `CREATE SCHEMA inventory;

CREATE TABLE inventory.products (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  product_name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);

INSERT INTO inventory.products (product_name)
VALUES ('soap'), ('shampoo'), ('conditioner');
`
	// extWaitOutput is psql's aligned output of pgactive_wait_for_node_ready, as the quick start shows it.
	extWaitOutput = " pgactive_wait_for_node_ready \n------------------------------\n \n(1 row)\n\n"
)

// extAttachAgent opens a session that counts as an attached agent for db, closed when the test ends.
func extAttachAgent(t *testing.T, p *Postgres, db string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(p.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "pgactive:agent"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect as agent to %s: %v", db, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// extScalar runs sql with psql and returns its unaligned output, trimmed.
func extScalar(t *testing.T, p *Postgres, db, sql string) string {
	t.Helper()
	return strings.TrimSpace(p.Psql(t, db, sql))
}

// extPsqlError runs sql with psql, expects it to fail, and checks that standard error holds every
// one of want.
func extPsqlError(t *testing.T, p *Postgres, db, sql string, want ...string) string {
	t.Helper()
	_, stderr, err := p.RunPsql(db, sql)
	if err == nil {
		t.Fatalf("psql on %s succeeded, want an error containing %q; script:\n%s", db, want, sql)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("psql error does not contain %q; script:\n%s\nstderr:\n%s", w, sql, stderr)
		}
	}
	return stderr
}

// extState summarises what the lifecycle functions change: node rows and requests.
func extState(t *testing.T, p *Postgres, db string) string {
	t.Helper()
	return extScalar(t, p, db, `SELECT 'nodes=' || coalesce((SELECT string_agg(node_name || ':' || node_status::text, ',' ORDER BY node_name) FROM pgactive.pgactive_nodes), '')
		|| ' requests=' || (SELECT count(*) FROM pgactive.pgactive_requests)`)
}

// extMirrorNode inserts a node row as the agent's membership mirror does.
func extMirrorNode(t *testing.T, p *Postgres, db, name, sysid string, status byte, group string) {
	t.Helper()
	p.Exec(t, db, `INSERT INTO pgactive.pgactive_nodes (node_sysid, node_timeline, node_dboid, node_status, node_name, node_dsn, node_group)
		VALUES ($1, 1, 16385, ($2::text)::"char", $3, 'host=elsewhere dbname=app', $4)`, sysid, string(status), name, group)
}

func TestExtensionLifecycle(t *testing.T) {
	p := StartPostgres(t)
	p.CreateDatabase(t, "app")
	p.CreateDatabase(t, "app2")
	p.Psql(t, "app", extTableSQL+`
CREATE TABLE public.audit (at timestamptz, what text);
CREATE TABLE public.customers (id int PRIMARY KEY, email text UNIQUE);`)

	// Step 5: install, twice (IF NOT EXISTS).
	extSetUp(t, p, "app")
	extSetUp(t, p, "app")
	if extInstalled(t) {
		if got := extScalar(t, p, "app", "SELECT extversion FROM pg_extension WHERE extname = 'pgactive'"); got != extension.Version {
			t.Errorf("extension version = %q, want %q", got, extension.Version)
		}
	}

	// Step 6 as typed (plus port).
	p.Psql(t, "app", extServersSQL(p))
	if got := extScalar(t, p, "app", `SELECT string_agg(srvname || '=' || array_to_string(srvoptions, ','), ' ' ORDER BY srvname)
		FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw WHERE w.fdwname = 'pgactive_fdw'`); !strings.Contains(got, "pgactive_server_endpoint1=host=127.0.0.1,port="+strconv.Itoa(p.Port)+",dbname=app") {
		t.Errorf("pgactive_fdw servers = %q", got)
	}
	if got := extScalar(t, p, "app", "SELECT count(*) FROM pg_user_mappings WHERE srvname LIKE 'pgactive_server_endpoint%' AND usename = 'postgres'"); got != "2" {
		t.Errorf("user mappings = %s, want 2", got)
	}

	t.Run("fdw validator", func(t *testing.T) {
		extPsqlError(t, p, "app", "CREATE SERVER s_bad FOREIGN DATA WRAPPER pgactive_fdw OPTIONS (host 'h', password 'secret');",
			`invalid option "password"`, "Valid options in this context are: host, hostaddr, port, dbname")
		extPsqlError(t, p, "app", "CREATE USER MAPPING FOR public SERVER pgactive_server_endpoint1 OPTIONS (host 'h');",
			`invalid option "host"`, "Valid options in this context are: user, password, sslpassword")
		extPsqlError(t, p, "app", "CREATE SERVER s_bad FOREIGN DATA WRAPPER pgactive_fdw OPTIONS (hots 'h');", `invalid option "hots"`)
	})

	t.Run("no agent", func(t *testing.T) {
		if got := extScalar(t, p, "app", "SELECT pgactive.pgactive_is_agent_attached();"); got != "f" {
			t.Fatalf("pgactive_is_agent_attached() = %q with no agent, want f", got)
		}
		extPsqlError(t, p, "app", extCreateGroupSQL,
			`no pgactive agent is attached to database "app"`,
			fmt.Sprintf("start an agent with: pgactive run --dsn 'host=127.0.0.1 port=%d dbname=app user=postgres'", p.Port))
		if got := extState(t, p, "app"); got != "nodes= requests=0" {
			t.Errorf("after a refused create_group: %q, want nothing changed", got)
		}
	})

	agent := extAttachAgent(t, p, "app")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := agent.Exec(ctx, "LISTEN pgactive_requests"); err != nil {
		t.Fatal(err)
	}
	if got := extScalar(t, p, "app", "SELECT pgactive.pgactive_is_agent_attached();"); got != "t" {
		t.Fatalf("pgactive_is_agent_attached() = %q with an agent session, want t", got)
	}

	t.Run("create_group refused", func(t *testing.T) {
		p.Psql(t, "app", `CREATE FOREIGN DATA WRAPPER other_fdw;
CREATE SERVER other_server FOREIGN DATA WRAPPER other_fdw;
CREATE USER MAPPING FOR postgres SERVER other_server;
CREATE SERVER pgactive_server_nomap FOREIGN DATA WRAPPER pgactive_fdw OPTIONS (host '127.0.0.1', dbname 'app');`)
		call := func(name, dsn string) string {
			return fmt.Sprintf("SELECT pgactive.pgactive_create_group(node_name := %s, node_dsn := %s);",
				pgQuote(name), pgQuote(dsn))
		}
		cases := []struct {
			name, sql string
			want      []string
		}{
			{"empty name", call("", "user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1"),
				[]string{"node_name must not be empty"}},
			{"not a DSN", call("endpoint1-app", "endpoint1 app database"),
				[]string{"node_dsn is not a valid connection string", "user_mapping=<role> pgactive_foreign_server=<server>"}},
			{"unknown keyword", call("endpoint1-app", "hots=127.0.0.1 dbname=app"),
				[]string{`node_dsn has an unknown keyword "hots"`}},
			{"no server", call("endpoint1-app", "user_mapping=postgres"),
				[]string{"node_dsn must give both user_mapping=<role> and pgactive_foreign_server=<server>"}},
			{"mixed", call("endpoint1-app", "user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1 host=x"),
				[]string{"node_dsn mixes user_mapping/pgactive_foreign_server with libpq keywords"}},
			{"missing server", call("endpoint1-app", "user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint9"),
				[]string{`foreign server "pgactive_server_endpoint9" named in node_dsn does not exist`,
					"CREATE SERVER pgactive_server_endpoint9 FOREIGN DATA WRAPPER pgactive_fdw"}},
			{"other wrapper", call("endpoint1-app", "user_mapping=postgres pgactive_foreign_server=other_server"),
				[]string{`foreign server "other_server" named in node_dsn uses foreign data wrapper other_fdw, not pgactive_fdw`}},
			{"missing user mapping", call("endpoint1-app", "user_mapping=postgres pgactive_foreign_server=pgactive_server_nomap"),
				[]string{`user mapping for "postgres" on foreign server "pgactive_server_nomap" named in node_dsn does not exist`,
					"CREATE USER MAPPING FOR postgres SERVER pgactive_server_nomap"}},
			{"password not echoed", call("endpoint1-app", "host=127.0.0.1 password=hunter2 nonsense"),
				[]string{"node_dsn is not a valid connection string"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				stderr := extPsqlError(t, p, "app", c.sql, c.want...)
				if strings.Contains(stderr, "ERROR:  ") && strings.Contains(strings.SplitN(stderr, "ERROR:  ", 2)[1], "hunter2") {
					t.Errorf("error quotes the password: %s", stderr)
				}
				if got := extState(t, p, "app"); got != "nodes= requests=0" {
					t.Errorf("after a refused create_group: %q, want nothing changed", got)
				}
			})
		}
	})

	t.Run("create_group", func(t *testing.T) {
		stdout, stderr, err := p.RunPsql("app", extCreateGroupSQL)
		if err != nil {
			t.Fatalf("create_group: %v\n%s", err, stderr)
		}
		if want := " pgactive_create_group \n-----------------------\n \n(1 row)\n\n"; stdout != want {
			t.Errorf("create_group output:\n%q\nwant\n%q", stdout, want)
		}
		for _, w := range []string{
			"WARNING:  table public.audit has no PRIMARY KEY",
			"WARNING:  table public.customers has secondary unique constraint or index customers_email_key",
		} {
			if !strings.Contains(stderr, w) {
				t.Errorf("create_group stderr lacks %q:\n%s", w, stderr)
			}
		}
		if strings.Contains(stderr, "inventory.products") {
			t.Errorf("create_group warns about inventory.products, which has a primary key:\n%s", stderr)
		}
		got := extScalar(t, p, "app", `SELECT n.node_status::text || '|' || n.node_name || '|' || n.node_dsn || '|' || (n.node_init_from_dsn IS NULL)
			|| '|' || n.node_group || '|' || (n.node_sysid = s.system_identifier::text) || '|' || (n.node_dboid = d.oid)
			|| '|' || (n.node_timeline = c.timeline_id::oid) || '|' || n.node_read_only
			FROM pgactive.pgactive_nodes n, pg_control_system() s, pg_control_checkpoint() c, pg_database d WHERE d.datname = 'app'`)
		if want := "b|endpoint1-app|user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1|true|app|true|true|true|false"; got != want {
			t.Errorf("local node row = %q, want %q", got, want)
		}
		if got := extScalar(t, p, "app", "SELECT pgactive.pgactive_get_local_node_name();"); got != "endpoint1-app" {
			t.Errorf("pgactive_get_local_node_name() = %q", got)
		}
		var id int64
		var req, state string
		var args map[string]any
		if err := agent.QueryRow(ctx, "SELECT request_id, request, state, args FROM pgactive.pgactive_requests").Scan(&id, &req, &state, &args); err != nil {
			t.Fatal(err)
		}
		if req != "create_group" || state != "pending" || args["node_name"] != "endpoint1-app" ||
			args["node_dsn"] != "user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1" ||
			args["node_group"] != "app" || args["join_using_dsn"] != nil {
			t.Errorf("request = %d %s %s %v", id, req, state, args)
		}
		if _, ok := args["join_using_dsn"]; !ok {
			t.Errorf("request args lack join_using_dsn: %v", args)
		}
		nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
		defer ncancel()
		n, err := agent.WaitForNotification(nctx)
		if err != nil {
			t.Fatalf("no NOTIFY for the request: %v", err)
		}
		if n.Channel != "pgactive_requests" || n.Payload != strconv.FormatInt(id, 10) {
			t.Errorf("notification = %s %q, want pgactive_requests %d", n.Channel, n.Payload, id)
		}

		extPsqlError(t, p, "app", extCreateGroupSQL, "this database is already a member of a pgactive group", `It is node "endpoint1-app"`)
		if got := extState(t, p, "app"); got != "nodes=endpoint1-app:b requests=1" {
			t.Errorf("after a second create_group: %q, want nothing changed", got)
		}
	})

	t.Run("join_group", func(t *testing.T) {
		extSetUp(t, p, "app2")
		p.Psql(t, "app2", extServersSQL(p))
		extAttachAgent(t, p, "app2")
		// The agent mirrors the group's membership, so endpoint1-app may already be known here.
		extMirrorNode(t, p, "app2", "endpoint1-app", "7412711576138986882", 'r', "app")
		before := extState(t, p, "app2")

		extPsqlError(t, p, "app2", strings.Replace(extJoinGroupSQL, "'endpoint2-app'", "'endpoint1-app'", 1),
			`node name "endpoint1-app" is already used by another node`)
		extPsqlError(t, p, "app2", strings.Replace(extJoinGroupSQL, "pgactive_server_endpoint2'", "pgactive_server_endpoint1'", 1),
			"join_using_dsn is the same as node_dsn")
		extPsqlError(t, p, "app2", strings.Replace(extJoinGroupSQL, "join_using_dsn := 'user_mapping=postgres", "join_using_dsn := 'user_mapping=nobody", 1),
			`user mapping for "nobody" on foreign server "pgactive_server_endpoint1" named in join_using_dsn does not exist`)
		p.Exec(t, "app2", "CREATE TABLE public.leftover (id int PRIMARY KEY)")
		extPsqlError(t, p, "app2", extJoinGroupSQL, "database joining pgactive group has existing user tables", "public.leftover")
		p.Exec(t, "app2", "DROP TABLE public.leftover")
		if got := extState(t, p, "app2"); got != before {
			t.Errorf("after refused joins: %q, want %q", got, before)
		}

		p.Psql(t, "app2", extJoinGroupSQL)
		got := extScalar(t, p, "app2", `SELECT node_status::text || '|' || node_init_from_dsn || '|' || (node_group IS NULL)
			FROM pgactive.pgactive_nodes WHERE node_name = 'endpoint2-app'`)
		if want := "b|user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1|true"; got != want {
			t.Errorf("joining node row = %q, want %q", got, want)
		}
		got = extScalar(t, p, "app2", `SELECT request || ' ' || (args->>'node_name') || ' ' || (args->>'join_using_dsn') FROM pgactive.pgactive_requests`)
		if want := "join_group endpoint2-app user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1"; got != want {
			t.Errorf("join request = %q, want %q", got, want)
		}
	})

	t.Run("detach", func(t *testing.T) {
		extMirrorNode(t, p, "app", "endpoint2-app", "7412711618745234863", 'r', "app")
		before := extState(t, p, "app")
		extPsqlError(t, p, "app", "SELECT pgactive.pgactive_detach_nodes(ARRAY['endpoint1-app', 'nosuch', 'other']);",
			`no node named "nosuch", "other" in pgactive.pgactive_nodes`)
		if got := extState(t, p, "app"); got != before {
			t.Errorf("after a refused detach: %q, want %q", got, before)
		}
		extPsqlError(t, p, "app", extRemoveSQL, `node "endpoint1-app" is not detached`,
			"SELECT pgactive.pgactive_detach_nodes(ARRAY['endpoint1-app']);")
		if got := extState(t, p, "app"); got != before {
			t.Errorf("after a refused remove: %q, want %q", got, before)
		}

		p.Psql(t, "app", extDetachSQL)
		if got, want := extState(t, p, "app"), "nodes=endpoint1-app:k,endpoint2-app:k requests=2"; got != want {
			t.Errorf("after detach: %q, want %q", got, want)
		}
		got := extScalar(t, p, "app", "SELECT args FROM pgactive.pgactive_requests WHERE request = 'detach_nodes'")
		if want := `{"nodes": ["endpoint1-app", "endpoint2-app"]}`; got != want {
			t.Errorf("detach request args = %s, want %s", got, want)
		}
	})

	t.Run("remove and drop", func(t *testing.T) {
		extRemoveAndDrop(t, p)
	})
}

// extRemoveAndDrop gives database app, a detached node, what an agent leaves (its slot with a
// walsender streaming from it, replication origins held by an apply session, the publication), then
// runs the quick start's clean-up and checks nothing of pgactive is left but what belongs elsewhere.
func extRemoveAndDrop(t *testing.T, p *Postgres) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dboid := extScalar(t, p, "app", "SELECT oid FROM pg_database WHERE datname = 'app'")
	dboid2 := extScalar(t, p, "app2", "SELECT oid FROM pg_database WHERE datname = 'app2'")
	sysid := extScalar(t, p, "app", "SELECT system_identifier FROM pg_control_system()")
	slot := "pgactive_" + dboid + "_" + sysid
	otherSlot := "pgactive_" + dboid2 + "_" + sysid
	// Origins: endpoint2's is held by an apply session, the agent reports
	// one in pgactive_stats, endpoint7 is named like the group's but for no
	// node app knows (kept, and named in a notice), othergroup's is another
	// group's.
	p.Psql(t, "app", `CREATE PUBLICATION pgactive_publication FOR ALL TABLES;
SELECT pg_create_logical_replication_slot('`+slot+`', 'pgoutput');
SELECT pg_replication_origin_create('pgactive_app_endpoint2-app');
SELECT pg_replication_origin_create('pgactive_reported_by_agent');
SELECT pg_replication_origin_create('pgactive_app_endpoint7-app');
SELECT pg_replication_origin_create('pgactive_othergroup_endpoint2-app');
INSERT INTO pgactive.pgactive_stats (origin_node, origin_name, nr_commit) VALUES ('endpoint9-app', 'pgactive_reported_by_agent', 3);`)
	p.Psql(t, "app2", "SELECT pg_create_logical_replication_slot('"+otherSlot+"', 'pgoutput');")

	// A walsender streaming from the slot, as the agent's capture does.
	repl, err := pgconn.Connect(ctx, p.DSN("app")+" replication=database application_name=pgactive:"+sysid+":send")
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	defer repl.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, repl, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'pgactive_publication'"}})
	if err != nil {
		t.Fatalf("start replication: %v", err)
	}
	WaitFor(t, 30*time.Second, "the slot to be active", func() (bool, error) {
		return extScalar(t, p, "app", "SELECT active FROM pg_replication_slots WHERE slot_name = '"+slot+"'") == "t", nil
	})
	// An apply session holding an origin, as the agent's apply workers do.
	cfg, err := pgx.ParseConfig(p.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "pgactive:7412711618745234863:apply"
	apply, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer apply.Close(context.Background())
	if _, err := apply.Exec(ctx, "SELECT pg_replication_origin_session_setup('pgactive_app_endpoint2-app')"); err != nil {
		t.Fatal(err)
	}

	// The quick start's clean-up, as typed.
	_, stderr, err := p.RunPsql("app", extRemoveSQL)
	if err != nil {
		t.Fatalf("pgactive_remove(): %v\n%s", err, stderr)
	}
	for _, w := range []string{
		"dropped foreign server(s) pgactive_server_endpoint1, pgactive_server_endpoint2, pgactive_server_nomap on pgactive_fdw",
		"pgactive removed from this node",
		`replication origin "pgactive_app_endpoint7-app" is named like this group's origins but for no node this database knows`,
	} {
		if !strings.Contains(stderr, w) {
			t.Errorf("pgactive_remove() stderr lacks %q:\n%s", w, stderr)
		}
	}
	got := extScalar(t, p, "app", `SELECT (SELECT count(*) FROM pgactive.pgactive_nodes) || ' ' ||
		(SELECT request || ' ' || (args->>'node_name') FROM pgactive.pgactive_requests ORDER BY request_id DESC LIMIT 1)`)
	if want := "0 remove endpoint1-app"; got != want {
		t.Errorf("after pgactive_remove(): %q, want %q", got, want)
	}
	p.Psql(t, "app", extDropSQL)

	checks := []struct{ what, sql, want string }{
		{"schema", "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgactive'", "0"},
		{"extension", "SELECT count(*) FROM pg_extension WHERE extname = 'pgactive'", "0"},
		{"wrapper", "SELECT count(*) FROM pg_foreign_data_wrapper WHERE fdwname = 'pgactive_fdw'", "0"},
		{"servers", "SELECT string_agg(srvname, ',' ORDER BY srvname) FROM pg_foreign_server", "other_server"},
		{"slots of app", "SELECT count(*) FROM pg_replication_slots WHERE database = 'app'", "0"},
		{"slots of app2", "SELECT string_agg(slot_name, ',') FROM pg_replication_slots WHERE database = 'app2'", otherSlot},
		{"origins", "SELECT string_agg(roname, ',' ORDER BY roname) FROM pg_replication_origin", "pgactive_app_endpoint7-app,pgactive_othergroup_endpoint2-app"},
		{"publication", "SELECT count(*) FROM pg_publication", "0"},
		{"functions", "SELECT count(*) FROM pg_proc WHERE proname LIKE '%pgactive%'", "0"},
		{"types", "SELECT count(*) FROM pg_type WHERE typname LIKE 'pgactive%'", "0"},
		{"tables kept", "SELECT count(*) FROM inventory.products", "3"},
	}
	for _, c := range checks {
		if got := extScalar(t, p, "app", c.sql); got != c.want {
			t.Errorf("after DROP EXTENSION, %s: %q, want %q", c.what, got, c.want)
		}
	}
}

// pgQuote quotes s as an SQL string literal.
func pgQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func TestExtensionWaitForNodeReady(t *testing.T) {
	p := StartPostgres(t)
	p.CreateDatabase(t, "app")
	extSetUp(t, p, "app")
	p.Psql(t, "app", extServersSQL(p))

	extPsqlError(t, p, "app", extWaitSQL, `no pgactive agent is attached to database "app"`, "start an agent with: pgactive run --dsn '")
	extAttachAgent(t, p, "app")
	extPsqlError(t, p, "app", extWaitSQL, "this database is not a pgactive node")
	extPsqlError(t, p, "app", "SELECT pgactive.pgactive_wait_for_node_ready(progress_interval := 0);", `"progress_interval" must be a positive number of seconds`)
	extPsqlError(t, p, "app", "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pgactive.pgactive_wait_for_node_ready();",
		"can only wait for the node in a READ COMMITTED transaction")

	p.Psql(t, "app", extCreateGroupSQL)
	start := time.Now()
	extPsqlError(t, p, "app", "SELECT pgactive.pgactive_wait_for_node_ready(timeout := 1);",
		`node "endpoint1-app" did not become ready within 1 seconds; its status is 'b'`)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("a 1 s timeout took %s", d)
	}

	// The agent records that the request failed: the wait reports its error.
	const failure = "join NATS at nats://127.0.0.1:4222: connection refused"
	p.Exec(t, "app", "UPDATE pgactive.pgactive_requests SET state = 'failed', error = $1, finished_at = now() WHERE request = 'create_group'", failure)
	extPsqlError(t, p, "app", extWaitSQL, "ERROR:  "+failure+"\n", "request_id 1 (create_group) failed")

	// The agent finished: the wait returns, as the quick start shows.
	p.Exec(t, "app", "UPDATE pgactive.pgactive_requests SET state = 'done', error = NULL")
	p.Exec(t, "app", "UPDATE pgactive.pgactive_nodes SET node_status = 'r'")
	stdout, stderr, err := p.RunPsql("app", extWaitSQL)
	if err != nil {
		t.Fatalf("wait on a ready node: %v\n%s", err, stderr)
	}
	if stdout != extWaitOutput {
		t.Errorf("wait output:\n%q\nwant\n%q", stdout, extWaitOutput)
	}

	t.Run("join progress", func(t *testing.T) {
		extJoinProgress(t, p)
	})
}

// extJoinProgress joins database app2 and plays the agent's part of an initial copy of 7483 MB,
// while pgactive_wait_for_node_ready(progress_interval := 1) reports it through psql.
func extJoinProgress(t *testing.T, p *Postgres) {
	p.CreateDatabase(t, "app2")
	extSetUp(t, p, "app2")
	p.Psql(t, "app2", extServersSQL(p))
	extAttachAgent(t, p, "app2")
	p.Psql(t, "app2", extJoinGroupSQL)
	const total = "7483::bigint * 1048576"
	p.Exec(t, "app2", `INSERT INTO pgactive.pgactive_join_progress
		(node_name, source_node, dbname, phase, total_bytes, copied_bytes, started_at)
		VALUES ('endpoint2-app', 'endpoint1-app', 'app', 'data', `+total+`, (`+total+` * 42 + 99) / 100, '2024-05-01 10:00:00+00')`)
	p.Exec(t, "app2", "UPDATE pgactive.pgactive_nodes SET node_status = 'i' WHERE node_name = 'endpoint2-app'")

	type result struct {
		stdout, stderr string
		err            error
	}
	done := make(chan result, 1)
	const waitSQL = "SELECT pgactive.pgactive_wait_for_node_ready(progress_interval := 1);\n"
	go func() {
		stdout, stderr, err := p.RunPsql("app2", waitSQL)
		done <- result{stdout, stderr, err}
	}()
	// runningFor returns how long the wait call has been running, in seconds, or -1 before it starts.
	runningFor := func() (float64, error) {
		select {
		case r := <-done:
			done <- r
			return 0, fmt.Errorf("the wait returned early: %v\n%s", r.err, r.stderr)
		default:
		}
		got := extScalar(t, p, "app2", `SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), -1)
			FROM pg_stat_activity WHERE query LIKE '%wait_for_node_ready(progress_interval%' AND state = 'active'
			  AND pid <> pg_backend_pid()`)
		return strconv.ParseFloat(got, 64)
	}
	// waitedFor waits until the wait call has run for more seconds than secs.
	waitedFor := func(secs float64) float64 {
		t.Helper()
		var ran float64
		WaitFor(t, time.Minute, fmt.Sprintf("the wait to run %.1f s", secs), func() (bool, error) {
			var err error
			ran, err = runningFor()
			return err == nil && ran > secs, err
		})
		return ran
	}
	// A notice a second: 42% at least once, then 98% at least once, then the end once.
	ran := waitedFor(2.3)
	p.Exec(t, "app2", "UPDATE pgactive.pgactive_join_progress SET copied_bytes = ("+total+" * 98 + 99) / 100, phase = 'indexes'")
	ran = waitedFor(ran + 2.3)
	p.Exec(t, "app2", "UPDATE pgactive.pgactive_join_progress SET copied_bytes = total_bytes, finished_at = started_at + interval '4 min 12.274956 s'")
	p.Exec(t, "app2", "UPDATE pgactive.pgactive_nodes SET node_status = 'c' WHERE node_name = 'endpoint2-app'")
	waitedFor(ran + 1.5)
	p.Exec(t, "app2", "UPDATE pgactive.pgactive_nodes SET node_status = 'r' WHERE node_name = 'endpoint2-app'")

	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("pgactive_wait_for_node_ready did not return after the node became ready")
	}
	if r.err != nil {
		t.Fatalf("wait: %v\n%s", r.err, r.stderr)
	}
	if r.stdout != extWaitOutput {
		t.Errorf("wait output:\n%q\nwant\n%q", r.stdout, extWaitOutput)
	}
	counts := map[string]int{}
	for _, line := range strings.Split(r.stderr, "\n") {
		if _, notice, ok := strings.Cut(line, "NOTICE:  "); ok {
			counts[notice]++
		}
	}
	const restored = "successfully restored database 'app' from node endpoint1-app in 00:04:12.274956"
	if counts["restoring database 'app', 42% of 7483 MB complete"] < 1 ||
		counts["restoring database 'app', 98% of 7483 MB complete"] < 1 ||
		counts[restored] != 1 || len(counts) != 3 {
		t.Errorf("notices (message: count) = %v, want 42%% and 98%% progress and %q once\nstderr:\n%s", counts, restored, r.stderr)
	}
}

func TestExtensionFunctions(t *testing.T) {
	p := StartPostgres(t)
	p.CreateDatabase(t, "app")
	extSetUp(t, p, "app")
	agent := extAttachAgent(t, p, "app")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A plain libpq DSN is accepted too.
	p.Psql(t, "app", "SELECT pgactive.pgactive_create_group('endpoint1-app', "+pgQuote(p.DSN("app"))+");")
	extMirrorNode(t, p, "app", "endpoint2-app", "7412711618745234863", 'r', "app")

	t.Run("snowflake", func(t *testing.T) {
		p.Exec(t, "app", "CREATE SEQUENCE public.ids_seq")
		extPsqlError(t, p, "app", "SELECT pgactive.pgactive_snowflake_id_nextval('public.ids_seq');", "node sequence ID not allocated")
		p.Exec(t, "app", "UPDATE pgactive.pgactive_nodes SET node_seq_id = 5 WHERE node_name = 'endpoint1-app'")
		before := time.Now().UnixMilli()
		rows, err := agent.Query(ctx, "SELECT pgactive.pgactive_snowflake_id_nextval('public.ids_seq') FROM generate_series(1, 1000)")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		after := time.Now().UnixMilli()
		const epochMS = 1475798400000 // 2016-10-07 00:00:00 UTC
		for i, id := range ids {
			if i > 0 && id <= ids[i-1] {
				t.Fatalf("id %d = %d is not above the one before, %d", i, id, ids[i-1])
			}
			if node := id >> 12 & 1023; node != 5 {
				t.Fatalf("id %d has node %d, want 5", id, node)
			}
			if seq := id & 4095; seq != int64(i+1) {
				t.Fatalf("id %d has sequence bits %d, want %d", id, seq, i+1)
			}
			if ms := id>>22 + epochMS; ms < before-1000 || ms > after+1000 {
				t.Fatalf("id %d has time %d ms, not within [%d, %d]", id, ms, before, after)
			}
		}
		if len(ids) != 1000 {
			t.Errorf("got %d ids, want 1000", len(ids))
		}
	})

	t.Run("lag", func(t *testing.T) {
		p.Exec(t, "app", `INSERT INTO pgactive.pgactive_lag (origin_node, target_node, node_name, node_sysid, application_name,
			slot_name, active, active_pid, pending_wal_decoding, pending_wal_to_apply, restart_lsn, confirmed_flush_lsn,
			sent_lsn, write_lsn, flush_lsn, replay_lsn, pending_messages, lag_seconds, updated_at) VALUES
			('endpoint1-app', 'endpoint2-app', 'endpoint2-app', '7412711618745234863', 'pgactive:7412711618745234863:send',
			 'pgactive_16385_7412711576138986882', true, 214501, 0, 120, '0/1996D58', '0/1996D90', '0/1996D90', '0/1996D90',
			 '0/1996D90', '0/1996D90', 2, 0.25, now()),
			('endpoint2-app', 'endpoint1-app', 'endpoint1-app', '7412711576138986882', 'pgactive:7412711576138986882:send',
			 'pgactive_16385_7412711618745234863', true, 214505, 0, 0, '0/198F1B0', '0/198F1E8', '0/198F1E8', '0/198F1E8',
			 '0/198F1E8', '0/198F1E8', 0, 0, now() - interval '31 seconds')`)
		rows, err := agent.Query(ctx, "SELECT * FROM pgactive.pgactive_get_replication_lag_info()")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range rows.FieldDescriptions() {
			names = append(names, f.Name)
		}
		type lagRow struct {
			NodeName, NodeSysid, ApplicationName, SlotName string
			Active                                         bool
			ActivePID                                      int32
			PendingWALDecoding, PendingWALToApply          int64
			RestartLSN, ConfirmedFlushLSN, SentLSN         string
			WriteLSN, FlushLSN, ReplayLSN                  string
			PendingMessages                                int64
			LagSeconds                                     float64
			LastError                                      *string
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[lagRow])
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"node_name", "node_sysid", "application_name", "slot_name", "active", "active_pid",
			"pending_wal_decoding", "pending_wal_to_apply", "restart_lsn", "confirmed_flush_lsn", "sent_lsn",
			"write_lsn", "flush_lsn", "replay_lsn", "pending_messages", "lag_seconds", "last_error"}
		if !slices.Equal(names, want) {
			t.Errorf("lag columns = %v, want %v", names, want)
		}
		if len(got) != 2 {
			t.Fatalf("lag rows = %+v, want 2", got)
		}
		if r := got[0]; r.NodeName != "endpoint2-app" || !r.Active || r.PendingWALToApply != 120 || r.ReplayLSN != "0/1996D90" ||
			r.PendingMessages != 2 || r.LagSeconds != 0.25 || r.LastError != nil {
			t.Errorf("fresh lag row = %+v", r)
		}
		if r := got[1]; r.NodeName != "endpoint1-app" || r.Active {
			t.Errorf("lag row not refreshed for 31 s = %+v, want active false", r)
		}
	})

	t.Run("stats", func(t *testing.T) {
		p.Psql(t, "app", `SELECT pg_replication_origin_create('pgactive_app_endpoint2-app');
INSERT INTO pgactive.pgactive_stats (origin_node, origin_sysid, origin_name, nr_commit, nr_rollback, nr_insert, nr_update_conflict)
VALUES ('endpoint2-app', '7412711618745234863', 'pgactive_app_endpoint2-app', 10, 1, 7, 2);`)
		rows, err := agent.Query(ctx, "SELECT * FROM pgactive.pgactive_get_stats()")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range rows.FieldDescriptions() {
			names = append(names, f.Name)
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"rep_node_id", "rilocalid", "riremoteid", "nr_commit", "nr_rollback", "nr_insert",
			"nr_insert_conflict", "nr_update", "nr_update_conflict", "nr_delete", "nr_delete_conflict", "nr_disconnect"}
		if !slices.Equal(names, want) {
			t.Errorf("stats columns = %v, want %v", names, want)
		}
		roident := extScalar(t, p, "app", "SELECT roident FROM pg_replication_origin WHERE roname = 'pgactive_app_endpoint2-app'")
		if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprintf("[%s %s pgactive_app_endpoint2-app 10 1 7 0 0 2 0 0 0]", roident, roident) {
			t.Errorf("stats rows = %v", got)
		}
	})

	t.Run("apply pause", func(t *testing.T) {
		if _, err := agent.Exec(ctx, "LISTEN pgactive_requests"); err != nil {
			t.Fatal(err)
		}
		for _, step := range []struct{ call, paused string }{
			{"pgactive_apply_pause", "t"}, {"pgactive_apply_resume", "f"},
		} {
			p.Psql(t, "app", "SELECT pgactive."+step.call+"();")
			if got := extScalar(t, p, "app", "SELECT pgactive.pgactive_is_apply_paused();"); got != step.paused {
				t.Errorf("after %s: pgactive_is_apply_paused() = %q, want %q", step.call, got, step.paused)
			}
			nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
			n, err := agent.WaitForNotification(nctx)
			ncancel()
			if err != nil || n.Channel != "pgactive_requests" || n.Payload != "apply" {
				t.Errorf("after %s: notification %+v, %v; want pgactive_requests 'apply'", step.call, n, err)
			}
		}
		if got := extScalar(t, p, "app", "SELECT count(*) FROM pgactive.pgactive_apply_state"); got != "1" {
			t.Errorf("pgactive_apply_state has %s rows, want 1", got)
		}
	})

	t.Run("skip changes", func(t *testing.T) {
		extPsqlError(t, p, "app", "SELECT pgactive.pgactive_skip_changes('123', 1, 16385, '0/1000');", "no node (123,1,16385) in pgactive.pgactive_nodes")
		p.Psql(t, "app", "SELECT pgactive.pgactive_skip_changes('7412711618745234863', 1, 16385, '0/1996D90');")
		var args map[string]any
		if err := agent.QueryRow(ctx, "SELECT args FROM pgactive.pgactive_requests WHERE request = 'skip_changes'").Scan(&args); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(args)
		if want := `{"from_dboid":16385,"from_sysid":"7412711618745234863","from_timeline":1,"node_name":"endpoint2-app","upto_lsn":"0/1996D90"}`; string(b) != want {
			t.Errorf("skip_changes args = %s, want %s", b, want)
		}
	})

	t.Run("replicate ddl", func(t *testing.T) {
		const cmd = "CREATE TABLE public.ddl_t (id int PRIMARY KEY)"
		p.Psql(t, "app", "SELECT pgactive.pgactive_replicate_ddl_command("+pgQuote(cmd)+");")
		if got := extScalar(t, p, "app", "SELECT to_regclass('public.ddl_t') IS NOT NULL"); got != "t" {
			t.Error("the DDL command did not run locally")
		}
		// As in pgactive, the command runs with an empty search_path.
		extPsqlError(t, p, "app", "SELECT pgactive.pgactive_replicate_ddl_command('CREATE TABLE ddl_u (id int)');", "no schema has been selected to create in")
	})

	t.Run("catalog types", func(t *testing.T) {
		extCheckColumns(t, p, "app", "pgactive_nodes", "node_sysid text, node_timeline oid, node_dboid oid, node_status char, "+
			"node_name text, node_dsn text, node_init_from_dsn text, node_read_only bool, node_seq_id int2, node_group text")
		extCheckColumns(t, p, "app", "pgactive_conflict_history", "conflict_id int8, local_node_sysid text, local_conflict_xid xid, "+
			"local_conflict_lsn pg_lsn, local_conflict_time timestamptz, object_schema text, object_name text, remote_node_sysid text, "+
			"remote_txid xid, remote_commit_time timestamptz, remote_commit_lsn pg_lsn, conflict_type pgactive_conflict_type, "+
			"conflict_resolution pgactive_conflict_resolution, local_tuple json, remote_tuple json, local_tuple_xmin xid, "+
			"local_tuple_origin_sysid text, error_message text, error_sqlstate text, error_querystring text, error_cursorpos int4, "+
			"error_detail text, error_hint text, error_context text, error_columnname text, error_typename text, "+
			"error_constraintname text, error_filename text, error_lineno int4, error_funcname text, remote_node_timeline oid, "+
			"remote_node_dboid oid, local_tuple_origin_timeline oid, local_tuple_origin_dboid oid, local_commit_time timestamptz")
		got := extScalar(t, p, "app", `SELECT string_agg(t.typname || ':' || (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder)
			FROM pg_enum WHERE enumtypid = t.oid), ' ' ORDER BY t.typname) FROM pg_type t WHERE t.typname LIKE 'pgactive_conflict_%' AND t.typtype = 'e'`)
		want := "pgactive_conflict_resolution:conflict_trigger_skip_change,conflict_trigger_returned_tuple,last_update_wins_keep_local," +
			"last_update_wins_keep_remote,apply_change,skip_change,unhandled_tx_abort " +
			"pgactive_conflict_type:insert_insert,insert_update,update_update,update_delete,delete_delete,unhandled_tx_abort"
		if got != want {
			t.Errorf("conflict enums:\n%s\nwant\n%s", got, want)
		}
		// The quick start's example row fits.
		p.Psql(t, "app", `INSERT INTO pgactive.pgactive_conflict_history (local_node_sysid, local_conflict_xid, local_conflict_lsn,
			local_conflict_time, object_schema, object_name, remote_node_sysid, remote_txid, remote_commit_time, remote_commit_lsn,
			conflict_type, conflict_resolution, local_tuple, remote_tuple, local_tuple_origin_sysid, remote_node_timeline,
			remote_node_dboid, local_tuple_origin_timeline, local_tuple_origin_dboid)
			VALUES ('7254092437219470229', '0', '0/1DCBEA8', '2023-08-31 12:22:10.062739+00', 'inventory', 'products',
			'7254092429617437576', '738', '2023-08-31 12:23:10.062739+00', '0/1DCDBF0', 'update_update',
			'last_update_wins_keep_remote', '{"product_name":"sapone"}', '{"product_name":"savon"}', '7254092437219470229',
			1, 16385, 1, 16385);`)
		if got := extScalar(t, p, "app", "SELECT conflict_id FROM pgactive.pgactive_conflict_history"); got != "1" {
			t.Errorf("conflict_id = %q, want 1", got)
		}
	})
}

// extCheckColumns compares the columns of pgactive.table, in order, as "name type, ...".
func extCheckColumns(t *testing.T, p *Postgres, db, table, want string) {
	t.Helper()
	got := extScalar(t, p, db, `SELECT string_agg(a.attname || ' ' || t.typname, ', ' ORDER BY a.attnum)
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = 'pgactive.`+table+`'::regclass AND a.attnum > 0 AND NOT a.attisdropped`)
	if got != want {
		t.Errorf("columns of pgactive.%s:\n%s\nwant\n%s", table, got, want)
	}
}

// TestExtensionCreateSchema checks the managed-PostgreSQL path: the same objects without CREATE
// EXTENSION, idempotent, and a no-op where the extension is installed.
func TestExtensionCreateSchema(t *testing.T) {
	p := StartPostgres(t)
	p.CreateDatabase(t, "managed")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := p.Connect(t, "managed")
	for i := range 2 {
		if err := extension.CreateSchema(ctx, conn); err != nil {
			t.Fatalf("CreateSchema, run %d: %v", i+1, err)
		}
	}
	const objects = `SELECT string_agg(o, E'\n' ORDER BY o) FROM (
		SELECT 'function ' || p.oid::regprocedure::text || ' ' || pg_get_function_result(p.oid) AS o
		FROM pg_proc p WHERE p.pronamespace = 'pgactive'::regnamespace
		UNION ALL SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
		FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
		WHERE c.relnamespace = 'pgactive'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
		UNION ALL SELECT 'relation ' || c.relname || ' ' || c.relkind::text FROM pg_class c WHERE c.relnamespace = 'pgactive'::regnamespace
		UNION ALL SELECT 'type ' || t.typname FROM pg_type t WHERE t.typnamespace = 'pgactive'::regnamespace AND t.typtype = 'e'
		UNION ALL SELECT 'wrapper ' || fdwname || ' ' || fdwvalidator::regproc::text FROM pg_foreign_data_wrapper) s`
	managed := extScalar(t, p, "managed", objects)
	if !strings.Contains(managed, "wrapper pgactive_fdw pgactive.pgactive_fdw_validator") ||
		!strings.Contains(managed, "function pgactive.pgactive_create_group(text,text,integer,text[]) void") {
		t.Errorf("CreateSchema made:\n%s", managed)
	}
	if extInstalled(t) {
		p.CreateDatabase(t, "app")
		extSetUp(t, p, "app")
		if got := extScalar(t, p, "app", objects); got != managed {
			t.Errorf("CREATE EXTENSION made:\n%s\n\nCreateSchema made:\n%s", got, managed)
		}
		// Where the extension is installed, CreateSchema leaves it alone.
		if err := extension.CreateSchema(ctx, p.Connect(t, "app")); err != nil {
			t.Errorf("CreateSchema where the extension is installed: %v", err)
		}
		if got := extScalar(t, p, "app", "SELECT count(*) FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgactive') AND deptype = 'e'"); got == "0" {
			t.Error("the extension has no member objects")
		}
	}

	// The objects work: the quick start's servers and create_group.
	p.Psql(t, "managed", strings.ReplaceAll(extServersSQL(p), "dbname 'app'", "dbname 'managed'"))
	extAttachAgent(t, p, "managed")
	p.Psql(t, "managed", extCreateGroupSQL)
	if got := extScalar(t, p, "managed", "SELECT node_group || ' ' || node_status::text FROM pgactive.pgactive_nodes"); got != "managed b" {
		t.Errorf("node row = %q, want %q", got, "managed b")
	}
}
