package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

// The least-privilege set-up of these tests: the application's objects
// belong to appOwner, which owns the database; the agent connects as
// agentRole, which deploy/sql/agent-role.sql creates and grants.
const (
	appOwner  = "app_owner"
	agentRole = "pgactive_agent"
)

// agentRoleSQL is deploy/sql/agent-role.sql, as shipped. It runs CREATE
// EXTENSION pgactive, so the extension's files must be installed.
func agentRoleSQL(t *testing.T) string {
	t.Helper()
	if !extInstalled(t) {
		t.Skip("deploy/sql/agent-role.sql runs CREATE EXTENSION pgactive, whose files could not be installed")
	}
	b, err := os.ReadFile("../deploy/sql/agent-role.sql")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// appDatabase creates appOwner (a role that is not a superuser) and the
// database app it owns, as a DBA would for an application.
func appDatabase(t *testing.T, p *Postgres) {
	t.Helper()
	p.Exec(t, "postgres", "CREATE ROLE "+pgx.Identifier{appOwner}.Sanitize())
	p.Exec(t, "postgres", "CREATE DATABASE app OWNER "+pgx.Identifier{appOwner}.Sanitize())
}

// grantAgentRole runs deploy/sql/agent-role.sql with psql on database db of
// p, as the documentation says, for role; then sets a random password for
// the role and returns it.
func grantAgentRole(t *testing.T, p *Postgres, db, role string) string {
	t.Helper()
	_, stderr, err := p.RunPsql(db, agentRoleSQL(t), "-q", "-v", "agent="+role, "-v", "owner="+appOwner)
	if err != nil {
		t.Fatalf("psql -f deploy/sql/agent-role.sql on %s (port %d): %v\n%s", db, p.Port, err, stderr)
	}
	password := randomPassword(t)
	p.Exec(t, "postgres", fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", pgx.Identifier{role}.Sanitize(), password))
	return password
}

// asOwner runs sql as appOwner on database app of p.
func asOwner(t *testing.T, p *Postgres, sql string) {
	t.Helper()
	p.Exec(t, "app", "SET ROLE "+pgx.Identifier{appOwner}.Sanitize()+"; "+sql+"; RESET ROLE")
}

// agentServersSQL creates a pgactive_fdw server per node and the user
// mapping of the agent's role on it, which the agent can read: its own,
// with USAGE on the server.
func agentServersSQL(nodes []*Postgres, passwords []string) string {
	var b strings.Builder
	for i, p := range nodes {
		fmt.Fprintf(&b, `CREATE SERVER node%[1]d FOREIGN DATA WRAPPER pgactive_fdw OPTIONS (host '127.0.0.1', port '%[2]d', dbname 'app');
CREATE USER MAPPING FOR %[3]s SERVER node%[1]d OPTIONS (user '%[3]s', password '%[4]s');
GRANT USAGE ON FOREIGN SERVER node%[1]d TO %[3]s;
`, i+1, p.Port, agentRole, passwords[i])
	}
	return b.String()
}

const privilegesSchema = `CREATE SCHEMA inventory;
CREATE TABLE inventory.products (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL, price numeric);
CREATE TABLE items (id serial PRIMARY KEY, val text, n int DEFAULT 0);
CREATE INDEX ON items (val);
CREATE TABLE events (id int PRIMARY KEY, what text)`

// TestPrivileges runs two nodes whose agents connect, with a password, as a
// role that is not a superuser and has exactly the grants of
// deploy/sql/agent-role.sql: the group is created, the second node joins
// with its initial copy (schema restored with its owners), and inserts,
// updates, deletes and TRUNCATE replicate both ways.
func TestPrivileges(t *testing.T) {
	ns := StartNATS(t)
	pgs := []*Postgres{StartPostgres(t), StartPostgres(t)}
	passwords := make([]string, len(pgs))
	for i, p := range pgs {
		appDatabase(t, p)
		passwords[i] = grantAgentRole(t, p, "app", agentRole)
	}
	asOwner(t, pgs[0], privilegesSchema)
	asOwner(t, pgs[0], `INSERT INTO items (val) SELECT 'before ' || g FROM generate_series(1, 50) g;
INSERT INTO inventory.products (name, price) VALUES ('soap', 1.5), ('shampoo', 3);
INSERT INTO events VALUES (1, 'old')`)
	log, logs := debugLogger()
	for i, p := range pgs {
		StartControllerWith(t, stream.ConnectOptions{URLs: ns.URL(), Name: fmt.Sprintf("pgactive test node%d", i+1)},
			node.ControllerConfig{DSN: p.RoleDSN("app", agentRole, passwords[i]), Replicas: 1, Log: log})
	}
	for _, p := range pgs {
		p.Psql(t, "app", agentServersSQL(pgs, passwords))
		WaitFor(t, 30*time.Second, "agent attached", func() (bool, error) {
			return strings.TrimSpace(p.Psql(t, "app", "SELECT pgactive.pgactive_is_agent_attached();")) == "t", nil
		})
	}
	pgs[0].Psql(t, "app", `SELECT pgactive.pgactive_create_group(node_name := 'node1',
    node_dsn := 'user_mapping=pgactive_agent pgactive_foreign_server=node1');
SELECT pgactive.pgactive_wait_for_node_ready(60);`)

	// A user mapping of another role hides its password from the agent:
	// the join says so and changes nothing.
	pgs[1].Psql(t, "app", fmt.Sprintf(`CREATE USER MAPPING FOR postgres SERVER node1 OPTIONS (user '%s', password '%s');`, agentRole, passwords[0]))
	pgs[1].Psql(t, "app", `SELECT pgactive.pgactive_join_group(node_name := 'node2',
    node_dsn := 'user_mapping=pgactive_agent pgactive_foreign_server=node2',
    join_using_dsn := 'user_mapping=postgres pgactive_foreign_server=node1');`)
	_, stderr, err := pgs[1].RunPsql("app", "SELECT pgactive.pgactive_wait_for_node_ready(60);")
	if err == nil || !strings.Contains(stderr, `cannot read the user mapping for "postgres"`) ||
		!strings.Contains(stderr, `GRANT USAGE ON FOREIGN SERVER "node1" TO "pgactive_agent"`) {
		t.Fatalf("join through a user mapping the agent cannot read: err=%v, psql printed:\n%s", err, stderr)
	}
	if strings.Contains(stderr, passwords[0]) {
		t.Fatalf("the error reveals a password: %s", stderr)
	}
	wantOutput(t, "node rows after the refused join", pgs[1].Psql(t, "app", "SELECT count(*) FROM pgactive.pgactive_nodes;"), "0")

	pgs[1].Psql(t, "app", `SELECT pgactive.pgactive_join_group(node_name := 'node2',
    node_dsn := 'user_mapping=pgactive_agent pgactive_foreign_server=node2',
    join_using_dsn := 'user_mapping=pgactive_agent pgactive_foreign_server=node1');
SELECT pgactive.pgactive_wait_for_node_ready(120);`)
	conns := []*pgx.Conn{pgs[0].Connect(t, "app"), pgs[1].Connect(t, "app")}
	for _, table := range []string{"items", "inventory.products", "events"} {
		WaitSameRows(t, time.Minute, table, conns...)
	}
	// The restore kept the owners, and the copy the sequences.
	wantOutput(t, "owners on node2", pgs[1].Psql(t, "app", `SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables
WHERE schemaname IN ('public', 'inventory');
SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'inventory';`), appOwner+"\n"+appOwner)
	mustExec(t, conns[1], `INSERT INTO items (val) VALUES ('node2 serial')`)
	if got := count(t, conns[1], `SELECT id FROM items WHERE val = 'node2 serial'`); got != 51 {
		t.Fatalf("serial id of the first insert on node2: got %d, want 51 (sequence copied)", got)
	}

	// Everything the agents do, they do as the agent's role.
	for i, p := range pgs {
		WaitFor(t, 30*time.Second, fmt.Sprintf("node%d's agent sessions and walsender", i+1), func() (bool, error) {
			got := strings.TrimSpace(p.Psql(t, "app", `SELECT pg_stat_clear_snapshot();
SELECT string_agg(DISTINCT usename::text, ',') FROM pg_stat_activity
WHERE application_name LIKE 'pgactive:%' OR backend_type = 'walsender';
SELECT count(*) FROM pg_stat_replication WHERE usename = 'pgactive_agent';`))
			if got != agentRole+"\n1" {
				return false, fmt.Errorf("roles of the agent's sessions, walsenders as %s: %q", agentRole, got)
			}
			return true, nil
		})
		wantOutput(t, "the agent's role", p.Psql(t, "app", `SELECT rolsuper FROM pg_roles WHERE rolname = 'pgactive_agent';`), "f")
		// Housekeeping puts the tombstone trigger on every table with a key.
		WaitFor(t, 30*time.Second, fmt.Sprintf("tombstone triggers on node%d", i+1), func() (bool, error) {
			n := strings.TrimSpace(p.Psql(t, "app", `SELECT count(*) FROM pg_trigger WHERE tgname = 'pgactive_tombstone';`))
			return n == "3", fmt.Errorf("%s triggers", n)
		})
	}

	// Writes both ways.
	mustExec(t, conns[0], `INSERT INTO items (id, val) SELECT g, 'node1 ' || g FROM generate_series(1001, 1100) g`)
	mustExec(t, conns[1], `INSERT INTO items (id, val) SELECT g, 'node2 ' || g FROM generate_series(2001, 2100) g`)
	WaitSameRows(t, time.Minute, "items", conns...) // what the updates and deletes below change is everywhere
	mustExec(t, conns[0], `UPDATE items SET val = 'updated on node1', n = n + 1 WHERE id BETWEEN 2001 AND 2050`)
	mustExec(t, conns[1], `UPDATE items SET val = 'updated on node2', n = n + 1 WHERE id BETWEEN 1 AND 25`)
	mustExec(t, conns[0], `DELETE FROM items WHERE id BETWEEN 2091 AND 2100`)
	// The application's own role deletes: the tombstone trigger must work
	// for roles that cannot write pgactive's tables.
	asOwner(t, pgs[1], `DELETE FROM items WHERE id BETWEEN 1091 AND 1100 OR id = 50`)
	mustExec(t, conns[1], `INSERT INTO inventory.products (name, price) VALUES ('conditioner', 4)`)
	mustExec(t, conns[0], `UPDATE inventory.products SET price = price * 2 WHERE name = 'soap'`)
	mustExec(t, conns[1], `TRUNCATE events`)
	WaitSameRows(t, time.Minute, "events", conns...)
	mustExec(t, conns[0], `INSERT INTO events VALUES (2, 'after the truncate')`)
	for _, table := range []string{"items", "inventory.products", "events"} {
		WaitSameRows(t, time.Minute, table, conns...)
	}
	for i, c := range conns {
		for _, check := range []struct {
			sql  string
			want int
		}{
			{`SELECT count(*) FROM items`, 50 + 1 + 100 + 100 - 10 - 11},
			{`SELECT count(*) FROM items WHERE val LIKE 'updated on node%'`, 50 + 25},
			{`SELECT count(*) FROM inventory.products WHERE price = 3 OR name = 'conditioner'`, 3},
			{`SELECT count(*) FROM events`, 1},
		} {
			if got := count(t, c, check.sql); got != check.want {
				t.Errorf("node%d: %s: got %d, want %d", i+1, check.sql, got, check.want)
			}
		}
	}

	// A table of a role the agent is not a member of gets no tombstone
	// trigger, and the agent says what to grant.
	pgs[0].Exec(t, "postgres", "CREATE ROLE other_owner")
	pgs[0].Exec(t, "app", "GRANT CREATE ON SCHEMA public TO other_owner")
	pgs[0].Exec(t, "app", "SET ROLE other_owner; CREATE TABLE other_things (id int PRIMARY KEY); RESET ROLE")
	// The log's text handler escapes the quotes of the error.
	warning := []string{`msg="housekeeping failed"`, `cannot put the tombstone trigger on tables the agent's role lacks TRIGGER on`,
		`TRIGGER and TRUNCATE on \"public\".\"other_things\", owned by \"other_owner\": GRANT \"other_owner\" TO \"pgactive_agent\"`}
	WaitFor(t, 30*time.Second, "the agent's warning about other_things", func() (bool, error) {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, warning[0]) && strings.Contains(line, warning[1]) && strings.Contains(line, warning[2]) {
				return true, nil
			}
		}
		return false, nil
	})
	for i, pw := range passwords {
		if strings.Contains(logs.String(), pw) {
			t.Errorf("the agents' log holds the password of node%d's agent role", i+1)
		}
	}
}

// runControllerOnce runs a controller for dsn and returns the error it
// stops with.
func runControllerOnce(t *testing.T, natsURL, dsn string) error {
	t.Helper()
	nc, js := ConnectNATS(t, natsURL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return node.NewController(node.ControllerConfig{DSN: dsn, NC: nc, JS: js, Replicas: 1, Log: TestLogger()}).Run(ctx)
}

// TestPrivilegesMissingGrant gives roles the grants of
// deploy/sql/agent-role.sql but one, and checks that the agent refuses each
// at start-up with an error naming the missing grant and the statement that
// gives it, and no password.
func TestPrivilegesMissingGrant(t *testing.T) {
	ns := StartNATS(t)
	p := StartPostgres(t)
	appDatabase(t, p)
	grantAgentRole(t, p, "app", agentRole) // extension and publication
	asOwner(t, p, `CREATE TABLE items (id int PRIMARY KEY, val text);
CREATE TABLE secrets (id int PRIMARY KEY, owner_name text);
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY`)

	for i, tc := range []struct {
		name       string
		take, undo string // statements run as a superuser: %[1]s is the role
		want       string
		controller bool // the controller refuses too (at its start)
	}{
		{name: "REPLICATION", take: `ALTER ROLE %[1]s NOREPLICATION`, want: `ALTER ROLE %[1]s REPLICATION`, controller: true},
		{name: "pg_read_all_data", take: `REVOKE pg_read_all_data FROM %[1]s`, want: `GRANT pg_read_all_data TO %[1]s`, controller: true},
		{name: "pg_write_all_data", take: `REVOKE pg_write_all_data FROM %[1]s`, want: `GRANT pg_write_all_data TO %[1]s`},
		{name: "EXECUTE on an origin function", take: `REVOKE EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) FROM %[1]s`,
			want: `GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_session_setup(text) TO %[1]s`, controller: true},
		{name: "membership in the owner", take: `REVOKE app_owner FROM %[1]s`, want: `GRANT "app_owner" TO %[1]s`},
		{name: "BYPASSRLS", take: `ALTER ROLE %[1]s NOBYPASSRLS`, want: `ALTER ROLE %[1]s BYPASSRLS`},
		{name: "publication", take: `DROP PUBLICATION pgactive_publication`, undo: `CREATE PUBLICATION pgactive_publication FOR ALL TABLES`,
			want: `CREATE PUBLICATION "pgactive_publication" FOR ALL TABLES`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			role := fmt.Sprintf("agent_%d", i+1)
			ident := pgx.Identifier{role}.Sanitize()
			password := grantAgentRole(t, p, "app", role)
			withRole := func(sql string) string { return strings.ReplaceAll(sql, "%[1]s", ident) }
			p.Exec(t, "app", withRole(tc.take))
			if tc.undo != "" {
				t.Cleanup(func() { p.Exec(t, "app", withRole(tc.undo)) })
			}
			dsn := p.RoleDSN("app", role, password)
			want := withRole(tc.want)
			errs := map[string]error{"agent": runAgentOnce(t, ns.URL(), node.Config{Group: "app", Node: "n1", DSN: dsn})}
			if tc.controller {
				errs["controller"] = runControllerOnce(t, ns.URL(), dsn)
			}
			for who, err := range errs {
				var pe *node.PrivilegeError
				if !errors.As(err, &pe) || !errors.Is(err, node.ErrNotReady) {
					t.Fatalf("%s: got %v, want a *node.PrivilegeError matching node.ErrNotReady", who, err)
				}
				if len(pe.Missing) != 1 || pe.Missing[0].Fix != want || pe.Role != role {
					t.Errorf("%s: role %q misses %+v, want only the grant %s", who, pe.Role, pe.Missing, want)
				}
				if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "A least-privilege role for the agent") {
					t.Errorf("%s: error %q does not say %q and where the grants are documented", who, err, want)
				}
				if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), p.Password) {
					t.Errorf("%s: error reveals a password: %v", who, err)
				}
				t.Logf("%s refused: %v", who, err)
			}
		})
	}

	// With every grant, the same database passes.
	password := grantAgentRole(t, p, "app", "agent_all")
	a := StartAgent(t, ns.URL(), node.Config{Group: "app", Node: "n1", DSN: p.RoleDSN("app", "agent_all", password)})
	a.Stop()
}
