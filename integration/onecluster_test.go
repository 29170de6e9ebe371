package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// oneClusterOrigins lists the replication origins named for the database
// (pgactive_<its OID>_<node>), the initial copy's left out.
const oneClusterOrigins = `SELECT string_agg(roname, ',' ORDER BY roname) FROM pg_replication_origin
	WHERE roname LIKE 'pgactive\_' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '\_%'
	  AND roname NOT LIKE '%\_copy.%';`

// TestLifecycleOneCluster: three members of one group are databases of one
// PostgreSQL cluster, so they share a system identifier and the catalog of
// replication origins. Each applies the others under origins of its own, all
// write, conflicts between them are seen and resolved alike, and removing
// one leaves the others' origins and replication alone.
func TestLifecycleOneCluster(t *testing.T) {
	ns := StartNATS(t)
	p := StartPostgres(t)
	dbs := []string{"app1", "app2", "app3"}
	var servers strings.Builder
	for i, db := range dbs {
		p.CreateDatabase(t, db)
		fmt.Fprintf(&servers, `CREATE SERVER node%[1]d FOREIGN DATA WRAPPER pgactive_fdw OPTIONS (host '127.0.0.1', port '%[2]d', dbname '%[3]s');
CREATE USER MAPPING FOR postgres SERVER node%[1]d OPTIONS (user 'postgres', password '%[4]s');
`, i+1, p.Port, db, p.Password)
	}
	p.Exec(t, "app1", loadSchema)
	for _, db := range dbs {
		StartController(t, ns.URL(), p.DSN(db))
		extSetUp(t, p, db)
		p.Psql(t, db, servers.String())
		WaitFor(t, 30*time.Second, "agent attached to "+db, func() (bool, error) {
			return strings.TrimSpace(p.Psql(t, db, "SELECT pgactive.pgactive_is_agent_attached();")) == "t", nil
		})
	}
	p.Psql(t, "app1", `SELECT pgactive.pgactive_create_group(node_name := 'node1', node_dsn := 'user_mapping=postgres pgactive_foreign_server=node1');
SELECT pgactive.pgactive_wait_for_node_ready(60);`)
	load1 := StartLoad(t, p.DSN("app1"), 1_000_000_000, 1)
	load1.WaitCommitted(t, 100)
	p.Psql(t, "app2", joinSQL(2, 1)+"\nSELECT pgactive.pgactive_wait_for_node_ready(120);")
	load2 := StartLoad(t, p.DSN("app2"), 2_000_000_000, 1)
	load2.WaitCommitted(t, 100)
	p.Psql(t, "app3", joinSQL(3, 2)+"\nSELECT pgactive.pgactive_wait_for_node_ready(120);")
	load3 := StartLoad(t, p.DSN("app3"), 3_000_000_000, 1)
	load3.WaitCommitted(t, 100)
	load1.Stop()
	load2.Stop()
	load3.Stop()
	conns := []*pgxConn{p.Connect(t, "app1"), p.Connect(t, "app2"), p.Connect(t, "app3")}
	checkLoads(t, conns, []*Load{load1, load2, load3}, false) // joined nodes copy rows, which the audit would count

	// Each database applies the two others under origins named for it.
	own := make([]string, len(dbs))
	for i, db := range dbs {
		oid := strings.TrimSpace(p.Psql(t, db, "SELECT oid FROM pg_database WHERE datname = current_database();"))
		var want []string
		for j := range dbs {
			if j != i {
				want = append(want, fmt.Sprintf("pgactive_%s_node%d", oid, j+1))
			}
		}
		own[i] = strings.Join(want, ",")
		wantOutput(t, db+"'s origins", p.Psql(t, db, oneClusterOrigins), own[i])
	}

	// A conflict between two databases of the cluster, seen on both: app2
	// updates a row in a transaction it commits only once app1's update of
	// the row has reached it and waits. The later update, app2's, wins on all
	// three.
	ctx := context.Background()
	tx, err := p.Connect(t, "app2").Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE items SET val = 'second' WHERE id = 1000000001`); err != nil {
		t.Fatal(err)
	}
	mustExec(t, conns[0], `UPDATE items SET val = 'first' WHERE id = 1000000001`)
	WaitFor(t, 30*time.Second, "app2's apply waits for the row", func() (bool, error) {
		return count(t, conns[1], `SELECT count(*) FROM pg_stat_activity
			WHERE datname = 'app2' AND application_name LIKE 'pgactive:%:apply' AND wait_event_type = 'Lock'`) > 0, nil
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	WaitSameRows(t, time.Minute, "items", conns...)
	if got := count(t, conns[2], `SELECT count(*) FROM items WHERE id = 1000000001 AND val = 'second'`); got != 1 {
		t.Fatalf("the later update did not win: got %d rows with it on app3", got)
	}
	const history = `SELECT string_agg(conflict_type || '/' || conflict_resolution || '/' || remote_node_dboid, ',') FROM pgactive.pgactive_conflict_history;`
	oid := func(db string) string {
		return strings.TrimSpace(p.Psql(t, db, "SELECT oid FROM pg_database WHERE datname = current_database();"))
	}
	wantOutput(t, "app1's conflicts", p.Psql(t, "app1", history), "update_update/last_update_wins_keep_remote/"+oid("app2"))
	wantOutput(t, "app2's conflicts", p.Psql(t, "app2", history), "update_update/last_update_wins_keep_local/"+oid("app1"))

	p.Psql(t, "app1", "SELECT pgactive.pgactive_detach_nodes(ARRAY['node3']);")
	WaitFor(t, 30*time.Second, "node3 detached on node3", func() (bool, error) {
		s := p.Psql(t, "app3", "SELECT node_status FROM pgactive.pgactive_nodes WHERE node_name = 'node3';")
		return strings.TrimSpace(s) == "k", nil
	})
	p.Psql(t, "app3", "SELECT pgactive.pgactive_remove();")
	wantOutput(t, "app3's origins after remove", p.Psql(t, "app3", `SELECT count(*) FROM pg_replication_origin
		WHERE roname LIKE 'pgactive\_' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '\_%';`), "0")
	for i, db := range dbs[:2] {
		wantOutput(t, db+"'s origins after node3's remove", p.Psql(t, db, oneClusterOrigins), own[i])
	}
	mustExec(t, conns[0], `INSERT INTO items (id, val) VALUES (-100, 'after remove')`)
	mustExec(t, conns[1], `INSERT INTO items (id, val) VALUES (-200, 'after remove')`)
	WaitSameRows(t, time.Minute, "items", conns[0], conns[1])
	if got := count(t, conns[2], `SELECT count(*) FROM items WHERE id IN (-100, -200)`); got != 0 {
		t.Fatalf("rows written after the remove on node3: got %d, want 0", got)
	}
}

// TestOriginLegacyNameTakenOver: a node upgraded from a version that named
// replication origins without the database (pgactive_<group>_<node>) keeps
// its progress: the apply worker's origin starts where the legacy one
// stands, and rows written under the legacy origin are still the origin
// node's, so its next update of them applies without a conflict.
func TestOriginLegacyNameTakenOver(t *testing.T) {
	p := newPair(t, itemsSchema, [2]string{"n1", "n2"}, [2]string{})
	for i := range 20 {
		mustExec(t, p.conns[0], `INSERT INTO items VALUES ($1, 'before', 0)`, i)
	}
	WaitSameRows(t, time.Minute, "items", p.conns[0], p.conns[1])

	// n2 as the earlier version left it: the progress under the legacy name,
	// and the rows applied under it.
	p.agents[1].Stop()
	oid := strings.TrimSpace(p.pgs[1].Psql(t, "app", "SELECT oid FROM pg_database WHERE datname = current_database();"))
	origin := "pgactive_" + oid + "_n1"
	progress := strings.TrimSpace(p.pgs[1].Psql(t, "app", fmt.Sprintf("SELECT pg_replication_origin_progress('%s', true);", origin)))
	p.pgs[1].Psql(t, "app", fmt.Sprintf(`SELECT pg_replication_origin_create('pgactive_app_n1');
SELECT pg_replication_origin_drop('%[1]s');
SELECT pg_replication_origin_session_setup('pgactive_app_n1');
BEGIN;
SELECT pg_replication_origin_xact_setup('%[2]s', now());
UPDATE items SET val = 'legacy' WHERE id < 10;
COMMIT;
SELECT pg_replication_origin_session_reset();`, origin, progress))

	p.agents[1] = StartAgent(t, p.ns.URL(), p.cfgs[1])
	WaitAppliers(t, p.agents[1], "n1")
	wantOutput(t, "n2's origin of n1 after the upgrade",
		p.pgs[1].Psql(t, "app", fmt.Sprintf("SELECT pg_replication_origin_progress('%s', false);", origin)), progress)
	mustExec(t, p.conns[0], `UPDATE items SET val = 'after' WHERE id < 10`)
	mustExec(t, p.conns[0], `INSERT INTO items VALUES (100, 'after', 0)`)
	WaitSameRows(t, time.Minute, "items", p.conns[0], p.conns[1])
	if got := count(t, p.conns[1], `SELECT count(*) FROM pgactive.pgactive_conflict_history`); got != 0 {
		t.Fatalf("n2 recorded %d conflicts for rows n1 last wrote under the legacy origin, want none", got)
	}
}
