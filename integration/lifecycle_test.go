package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgactive-go/pgactive/stream"
)

// serversSQL creates a pgactive_fdw server and user mapping for each node.
func serversSQL(nodes []*Postgres) string {
	var b strings.Builder
	for i, p := range nodes {
		fmt.Fprintf(&b, `CREATE SERVER node%[1]d FOREIGN DATA WRAPPER pgactive_fdw OPTIONS (host '127.0.0.1', port '%[2]d', dbname 'app');
CREATE USER MAPPING FOR postgres SERVER node%[1]d OPTIONS (user 'postgres', password '%[3]s');
`, i+1, p.Port, p.Password)
	}
	return b.String()
}

// sqlGroup sets up n clusters with database app, an agent each, the
// extension and servers, and creates the group on the first node.
func sqlGroup(t *testing.T, n int, schema string) (*NATS, []*Postgres) {
	t.Helper()
	ns := StartNATS(t)
	nodes := make([]*Postgres, n)
	for i := range nodes {
		nodes[i] = StartPostgres(t)
		nodes[i].CreateDatabase(t, "app")
		StartController(t, ns.URL(), nodes[i].DSN("app"))
	}
	nodes[0].Exec(t, "app", schema)
	for _, p := range nodes {
		extSetUp(t, p, "app")
		p.Psql(t, "app", serversSQL(nodes))
		WaitFor(t, 30*time.Second, "agent attached", func() (bool, error) {
			return strings.TrimSpace(p.Psql(t, "app", "SELECT pgactive.pgactive_is_agent_attached();")) == "t", nil
		})
	}
	nodes[0].Psql(t, "app", `SELECT pgactive.pgactive_create_group(node_name := 'node1', node_dsn := 'user_mapping=postgres pgactive_foreign_server=node1');
SELECT pgactive.pgactive_wait_for_node_ready(60);`)
	return ns, nodes
}

func joinSQL(i, from int) string {
	return fmt.Sprintf(`SELECT pgactive.pgactive_join_group(node_name := 'node%[1]d',
    node_dsn := 'user_mapping=postgres pgactive_foreign_server=node%[1]d',
    join_using_dsn := 'user_mapping=postgres pgactive_foreign_server=node%[2]d');`, i, from)
}

// TestLifecycleThreeNodes: create on one node, join two more while all
// write, detach one; the others keep replicating, and remove plus DROP
// EXTENSION on the detached node leave nothing behind.
func TestLifecycleThreeNodes(t *testing.T) {
	ns, nodes := sqlGroup(t, 3, loadSchema)
	load1 := StartLoad(t, nodes[0].DSN("app"), 1_000_000_000, 1)
	load1.WaitCommitted(t, 200)
	nodes[1].Psql(t, "app", joinSQL(2, 1)+"\nSELECT pgactive.pgactive_wait_for_node_ready(120);")
	load2 := StartLoad(t, nodes[1].DSN("app"), 2_000_000_000, 1)
	load2.WaitCommitted(t, 200)
	nodes[2].Psql(t, "app", joinSQL(3, 2)+"\nSELECT pgactive.pgactive_wait_for_node_ready(120);")
	load3 := StartLoad(t, nodes[2].DSN("app"), 3_000_000_000, 1)
	load3.WaitCommitted(t, 200)
	load1.Stop()
	load2.Stop()
	load3.Stop()
	conns := []*pgxConn{nodes[0].Connect(t, "app"), nodes[1].Connect(t, "app"), nodes[2].Connect(t, "app")}
	checkLoads(t, conns, []*Load{load1, load2, load3}, false) // joined nodes copy rows, which the audit would count

	nodes[0].Psql(t, "app", "SELECT pgactive.pgactive_detach_nodes(ARRAY['node3']);")
	WaitFor(t, 30*time.Second, "node3 detached on node3", func() (bool, error) {
		s := nodes[2].Psql(t, "app", "SELECT node_status FROM pgactive.pgactive_nodes WHERE node_name = 'node3';")
		return strings.TrimSpace(s) == "k", nil
	})
	// The remaining nodes keep replicating; node3 no longer receives.
	mustExec(t, conns[0], `INSERT INTO items (id, val) VALUES (-100, 'after detach')`)
	mustExec(t, conns[1], `INSERT INTO items (id, val) VALUES (-200, 'after detach')`)
	WaitSameRows(t, time.Minute, "items", conns[0], conns[1])
	if got := count(t, conns[2], `SELECT count(*) FROM items WHERE id IN (-100, -200)`); got != 0 {
		t.Fatalf("rows written after the detach on node3: got %d, want 0", got)
	}

	// Origins belong to the cluster: one of group app_x, which a database
	// of node3's cluster could be a member of, is not node3's to drop.
	nodes[2].Exec(t, "postgres", "SELECT pg_replication_origin_create('pgactive_app_x_node1')")
	nodes[2].Psql(t, "app", "SELECT pgactive.pgactive_remove();")
	if extInstalled(t) {
		nodes[2].Psql(t, "app", "DROP EXTENSION pgactive;")
	}
	wantOutput(t, "slots on node3", nodes[2].Psql(t, "app", "SELECT count(*) FROM pg_replication_slots;"), "0")
	wantOutput(t, "origins on node3", nodes[2].Psql(t, "app", "SELECT string_agg(roname, ',') FROM pg_replication_origin;"), "pgactive_app_x_node1")
	_, js := ConnectNATS(t, ns.URL())
	WaitFor(t, 30*time.Second, "node3's stream and consumers deleted", func() (bool, error) {
		if _, err := js.Stream(context.Background(), stream.StreamName("app", "node3")); err == nil {
			return false, nil
		}
		for _, origin := range []string{"node1", "node2"} {
			if _, err := js.Consumer(context.Background(), stream.StreamName("app", origin), stream.ConsumerName("node3")); err == nil {
				return false, fmt.Errorf("consumer of node3 on %s still there", origin)
			}
		}
		return true, nil
	})
	mustExec(t, conns[1], `INSERT INTO items (id, val) VALUES (-300, 'still replicating')`)
	WaitSameRows(t, time.Minute, "items", conns[0], conns[1])
}

// TestLifecycleJoinErrors: a join the agent cannot carry out fails with a
// clear error from pgactive_wait_for_node_ready and leaves the database as
// it was, so the user can fix the cause and join again.
func TestLifecycleJoinErrors(t *testing.T) {
	_, nodes := sqlGroup(t, 2, itemsSchema)
	nodes[1].Psql(t, "app", `ALTER USER MAPPING FOR postgres SERVER node1 OPTIONS (SET password 'wrong');`)
	nodes[1].Psql(t, "app", joinSQL(2, 1))
	_, stderr, err := nodes[1].RunPsql("app", "SELECT pgactive.pgactive_wait_for_node_ready(60);")
	if err == nil || !strings.Contains(stderr, "authentication failed") || !strings.Contains(stderr, "check the password") {
		t.Fatalf("wait_for_node_ready after a join with a wrong password: err=%v, psql printed:\n%s", err, stderr)
	}
	if strings.Contains(stderr, nodes[0].Password) {
		t.Fatalf("the error reveals a password: %s", stderr)
	}
	wantOutput(t, "node rows after the failed join", nodes[1].Psql(t, "app", "SELECT count(*) FROM pgactive.pgactive_nodes;"), "0")
	wantOutput(t, "tables after the failed join", nodes[1].Psql(t, "app", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public';"), "0")

	// Fixed, the same join works.
	nodes[1].Psql(t, "app", fmt.Sprintf(`ALTER USER MAPPING FOR postgres SERVER node1 OPTIONS (SET password '%s');`, nodes[0].Password))
	nodes[1].Psql(t, "app", joinSQL(2, 1)+"\nSELECT pgactive.pgactive_wait_for_node_ready(120);")
	conns := []*pgxConn{nodes[0].Connect(t, "app"), nodes[1].Connect(t, "app")}
	mustExec(t, conns[0], `INSERT INTO items VALUES (1, 'x')`)
	WaitSameRows(t, time.Minute, "items", conns...)

	// Joining again, or reusing a node name, is refused at once, and
	// changes nothing: the same members and states, and replication goes on.
	const members = "SELECT string_agg(node_name || ':' || node_status::text, ',' ORDER BY node_name) FROM pgactive.pgactive_nodes;"
	before := [2]string{strings.TrimSpace(nodes[0].Psql(t, "app", members)), strings.TrimSpace(nodes[1].Psql(t, "app", members))}
	_, stderr, err = nodes[1].RunPsql("app", joinSQL(2, 1))
	if err == nil || !strings.Contains(stderr, "already a member of a pgactive group") {
		t.Fatalf("joining an already joined database: err=%v, psql printed %s", err, stderr)
	}
	for i := range before {
		wantOutput(t, fmt.Sprintf("node%d's members after the refused join", i+1), nodes[i].Psql(t, "app", members), before[i])
	}
	mustExec(t, conns[1], `INSERT INTO items VALUES (2, 'after the refused join')`)
	WaitSameRows(t, time.Minute, "items", conns...)
}

// TestReplicateDDL: pgactive_replicate_ddl_command runs the command on every
// node, in its place among the data changes.
func TestReplicateDDL(t *testing.T) {
	_, nodes := sqlGroup(t, 2, itemsSchema)
	nodes[1].Psql(t, "app", joinSQL(2, 1)+"\nSELECT pgactive.pgactive_wait_for_node_ready(120);")
	nodes[0].Psql(t, "app", `BEGIN;
INSERT INTO items VALUES (1, 'before');
SELECT pgactive.pgactive_replicate_ddl_command('ALTER TABLE public.items ADD COLUMN note text DEFAULT ''n/a''');
INSERT INTO items VALUES (2, 'after', 0, 'with note');
COMMIT;
SELECT pgactive.pgactive_replicate_ddl_command('CREATE TABLE public.more (id int PRIMARY KEY, v text)');`)
	conns := []*pgxConn{nodes[0].Connect(t, "app"), nodes[1].Connect(t, "app")}
	WaitSameRows(t, time.Minute, "items", conns...)
	WaitFor(t, time.Minute, "table more on node2", func() (bool, error) {
		return count(t, conns[1], `SELECT count(*) FROM pg_tables WHERE tablename = 'more'`) == 1, nil
	})
	mustExec(t, conns[1], `INSERT INTO more VALUES (1, 'from node2')`)
	WaitSameRows(t, time.Minute, "more", conns...)
	if got := count(t, conns[1], `SELECT count(*) FROM items WHERE note = 'with note'`); got != 1 {
		t.Fatalf("row written after the ALTER on node2: got %d, want 1", got)
	}
}

// TestWaitForNodeReadyWaitsForTheOutcome: the agent deletes the node row of
// a join it could not carry out before it records the failure;
// pgactive_wait_for_node_ready called in between waits for the outcome and
// reports the request's error, not "this database is not a pgactive node".
// The agent's part is played by the test, in a session named as the agent's
// (pgactive_is_agent_attached looks for it), so that no agent takes the
// request meanwhile.
func TestWaitForNodeReadyWaitsForTheOutcome(t *testing.T) {
	p := StartPostgres(t)
	p.CreateDatabase(t, "app")
	extSetUp(t, p, "app")
	agent := extAttachAgent(t, p, "app")
	// A join the agent is undoing: running, its node row already gone.
	mustExec(t, agent, `INSERT INTO pgactive.pgactive_requests (request, args, state) VALUES ('join_group', '{"node_name": "n2"}', 'running')`)
	type result struct {
		stderr string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		_, stderr, err := p.RunPsql("app", "SELECT pgactive.pgactive_wait_for_node_ready(60);")
		done <- result{stderr, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("wait_for_node_ready returned before the request finished: err=%v\n%s", r.err, r.stderr)
	case <-time.After(2 * time.Second):
	}
	mustExec(t, agent, `UPDATE pgactive.pgactive_requests SET state = 'failed', error = 'join_using_dsn: authentication failed', finished_at = now()`)
	r := <-done
	if r.err == nil || !strings.Contains(r.stderr, "join_using_dsn: authentication failed") {
		t.Fatalf("wait_for_node_ready after the join failed: err=%v, psql printed:\n%s", r.err, r.stderr)
	}
}
