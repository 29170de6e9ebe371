package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgactive-go/pgactive/extension"
	"github.com/pgactive-go/pgactive/node"
)

const productsSchema = `
CREATE SCHEMA inventory;
CREATE TABLE inventory.products (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  product_name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);`

// createSchema creates the pgactive objects (conflict history and the rest)
// in a database, as `pgactive run --create-schema` does.
func createSchema(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	if err := extension.CreateSchema(context.Background(), conn); err != nil {
		t.Fatalf("create pgactive schema: %v", err)
	}
}

type conflictRow struct {
	Type, Resolution, Schema, Table string
	LocalTuple, RemoteTuple         map[string]any
	RemoteSysID, LocalSysID         string
	LocalOrigin                     *string
}

func conflictRows(t *testing.T, conn *pgx.Conn) []conflictRow {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT conflict_type::text, conflict_resolution::text, object_schema, object_name,
		coalesce(local_tuple::text, 'null'), coalesce(remote_tuple::text, 'null'), remote_node_sysid, local_node_sysid, local_tuple_origin_sysid
		FROM pgactive.pgactive_conflict_history ORDER BY conflict_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []conflictRow
	for rows.Next() {
		var r conflictRow
		var lt, rt string
		if err := rows.Scan(&r.Type, &r.Resolution, &r.Schema, &r.Table, &lt, &rt, &r.RemoteSysID, &r.LocalSysID, &r.LocalOrigin); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal([]byte(lt), &r.LocalTuple)
		_ = json.Unmarshal([]byte(rt), &r.RemoteTuple)
		out = append(out, r)
	}
	return out
}

// pair is two linked nodes whose agents can be stopped, so that both write
// while they cannot reach each other.
type pair struct {
	ns     *NATS
	pgs    [2]*Postgres
	conns  [2]*pgx.Conn
	cfgs   [2]node.Config
	agents [2]*Agent
}

// newPair starts two nodes named names holding schema and the pgactive
// objects; before[i], if set, runs on node i before its agent starts.
func newPair(t *testing.T, schema string, names [2]string, before [2]string) *pair {
	t.Helper()
	p := &pair{ns: StartNATS(t)}
	for i := range p.pgs {
		p.pgs[i] = StartPostgres(t)
		p.pgs[i].CreateDatabase(t, "app")
		p.pgs[i].Exec(t, "app", schema)
		p.conns[i] = p.pgs[i].Connect(t, "app")
		createSchema(t, p.conns[i])
		if before[i] != "" {
			p.pgs[i].Exec(t, "app", before[i])
		}
		p.cfgs[i] = node.Config{Group: "app", Node: names[i], DSN: p.pgs[i].DSN("app")}
	}
	for i := range p.agents {
		p.agents[i] = StartAgent(t, p.ns.URL(), p.cfgs[i])
	}
	WaitAppliers(t, p.agents[0], names[1])
	WaitAppliers(t, p.agents[1], names[0])
	return p
}

// apart runs sql[0] on the first node, then sql[1] on the second, with both
// agents stopped, then starts the agents again and waits until table is the
// same on both.
func (p *pair) apart(t *testing.T, table string, sql [2]string) {
	t.Helper()
	p.agents[0].Stop()
	p.agents[1].Stop()
	for i := range sql {
		mustExec(t, p.conns[i], sql[i])
	}
	for i := range p.agents {
		p.agents[i] = StartAgent(t, p.ns.URL(), p.cfgs[i])
	}
	WaitSameRows(t, time.Minute, table, p.conns[0], p.conns[1])
}

// TestConflictSeedExample is the quick start's conflict: endpoint1 renames
// soap to sapone, then endpoint2 renames it to savon while the two cannot
// reach each other. When replication resumes both hold savon, and each node
// recorded the conflict from its side.
func TestConflictSeedExample(t *testing.T) {
	p := newPair(t, productsSchema, [2]string{"endpoint1-app", "endpoint2-app"}, [2]string{})
	conns := p.conns
	mustExec(t, conns[0], `INSERT INTO inventory.products (product_name) VALUES ('soap'), ('shampoo'), ('conditioner')`)
	WaitSameRows(t, 30*time.Second, "inventory.products", conns[0], conns[1])

	p.apart(t, "inventory.products", [2]string{
		`UPDATE inventory.products SET product_name = 'sapone' WHERE product_name = 'soap'`,
		`UPDATE inventory.products SET product_name = 'savon' WHERE product_name = 'soap'`,
	})
	if got := count(t, conns[0], `SELECT count(*) FROM inventory.products WHERE product_name = 'savon'`); got != 1 {
		t.Fatalf("rows named savon on endpoint1: got %d, want 1 (the later update wins)", got)
	}
	a1, a2 := p.agents[0], p.agents[1]

	sysid := func(a *Agent) string { return itoa(a.Identity().SysID) }
	checks := []struct {
		conn       *pgx.Conn
		resolution string
		local      string
		remote     string
		remoteNode string
		localNode  string
	}{
		{conns[0], "last_update_wins_keep_remote", "sapone", "savon", sysid(a2), sysid(a1)},
		{conns[1], "last_update_wins_keep_local", "savon", "sapone", sysid(a1), sysid(a2)},
	}
	for i, c := range checks {
		var rows []conflictRow
		WaitFor(t, 30*time.Second, "the conflict recorded", func() (bool, error) {
			rows = conflictRows(t, c.conn)
			return len(rows) > 0, nil
		})
		if len(rows) != 1 {
			t.Fatalf("endpoint%d: got %d conflict rows, want 1: %+v", i+1, len(rows), rows)
		}
		r := rows[0]
		if r.Type != "update_update" || r.Resolution != c.resolution {
			t.Errorf("endpoint%d: got %s/%s, want update_update/%s", i+1, r.Type, r.Resolution, c.resolution)
		}
		if r.Schema != "inventory" || r.Table != "products" {
			t.Errorf("endpoint%d: object %s.%s, want inventory.products", i+1, r.Schema, r.Table)
		}
		if r.LocalTuple["product_name"] != c.local || r.RemoteTuple["product_name"] != c.remote {
			t.Errorf("endpoint%d: tuples local=%v remote=%v, want product_name %s and %s", i+1, r.LocalTuple, r.RemoteTuple, c.local, c.remote)
		}
		filled := count(t, c.conn, `SELECT count(*) FROM pgactive.pgactive_conflict_history WHERE remote_node_timeline IS NOT NULL
			AND remote_node_dboid IS NOT NULL AND local_tuple_origin_timeline IS NOT NULL AND local_tuple_origin_dboid IS NOT NULL
			AND local_commit_time IS NOT NULL AND local_tuple_xmin IS NOT NULL AND remote_txid IS NOT NULL AND error_message IS NULL`)
		if filled != 1 {
			t.Errorf("endpoint%d: the conflict row leaves identity or time columns empty", i+1)
		}
		if r.RemoteSysID != c.remoteNode || r.LocalSysID != c.localNode || r.LocalOrigin == nil || *r.LocalOrigin != c.localNode {
			t.Errorf("endpoint%d: sysids remote=%s local=%s local origin=%v, want %s, %s, %s", i+1, r.RemoteSysID, r.LocalSysID, r.LocalOrigin, c.remoteNode, c.localNode, c.localNode)
		}
	}
}

// TestConflictInsertInsert: both nodes insert the same key while apart; the
// later insert wins on both.
func TestConflictInsertInsert(t *testing.T) {
	p := newPair(t, itemsSchema, [2]string{"n1", "n2"}, [2]string{})
	conns := p.conns
	p.apart(t, "items", [2]string{`INSERT INTO items VALUES (1, 'first', 1)`, `INSERT INTO items VALUES (1, 'second', 2)`})
	if got := count(t, conns[0], `SELECT n FROM items WHERE id = 1`); got != 2 {
		t.Fatalf("winner: got n=%d, want 2 (the later insert)", got)
	}
	for _, c := range conns {
		WaitFor(t, 30*time.Second, "insert_insert recorded", func() (bool, error) {
			rows := conflictRows(t, c)
			return len(rows) == 1 && rows[0].Type == "insert_insert", nil
		})
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

// TestConflictSettings: pgactive.log_conflicts_to_table and
// pgactive.conflict_logging_include_tuples, set with ALTER DATABASE, change
// what the history records.
func TestConflictSettings(t *testing.T) {
	p := newPair(t, itemsSchema, [2]string{"n1", "n2"}, [2]string{
		`ALTER DATABASE app SET pgactive.conflict_logging_include_tuples = off`,
		`ALTER DATABASE app SET pgactive.log_conflicts_to_table = off`,
	})
	conns := p.conns
	p.apart(t, "items", [2]string{`INSERT INTO items VALUES (1, 'first', 1)`, `INSERT INTO items VALUES (1, 'second', 2)`})
	b := p.agents[1]
	WaitFor(t, 30*time.Second, "the conflict recorded on n1 without tuples", func() (bool, error) {
		rows := conflictRows(t, conns[0])
		return len(rows) == 1 && rows[0].LocalTuple == nil && rows[0].RemoteTuple == nil, nil
	})
	WaitFor(t, 30*time.Second, "the conflict counted on n2", func() (bool, error) {
		return b.Appliers()["n1"].Status().Conflicts()["insert_insert"] == 1, nil
	})
	if rows := conflictRows(t, conns[1]); len(rows) != 0 {
		t.Fatalf("n2 logs conflicts although pgactive.log_conflicts_to_table = off: %+v", rows)
	}
}

// TestConflictHistoryRetention: pgactive.conflict_history_retention, set
// with ALTER DATABASE, bounds how long history rows are kept; the agent
// deletes older ones. A node with the default (30 days) keeps its row.
func TestConflictHistoryRetention(t *testing.T) {
	p := newPair(t, itemsSchema, [2]string{"n1", "n2"}, [2]string{})
	conns := p.conns
	p.apart(t, "items", [2]string{`INSERT INTO items VALUES (1, 'first', 1)`, `INSERT INTO items VALUES (1, 'second', 2)`})
	for _, c := range conns {
		WaitFor(t, 30*time.Second, "insert_insert recorded", func() (bool, error) {
			return len(conflictRows(t, c)) == 1, nil
		})
	}
	mustExec(t, conns[0], `ALTER DATABASE app SET pgactive.conflict_history_retention = '1 second'`)
	WaitFor(t, time.Minute, "n1's history row deleted after its retention", func() (bool, error) {
		return len(conflictRows(t, conns[0])) == 0, nil
	})
	if rows := conflictRows(t, conns[1]); len(rows) != 1 {
		t.Fatalf("n2, default retention: %d history rows, want its 1", len(rows))
	}
}

// TestConflictSecondaryUnique: two nodes insert different keys with the same
// value of a secondary unique column while apart. The later row wins on both
// nodes, the earlier is removed, and both nodes record the conflict: no row
// is overwritten silently and no apply stalls.
func TestConflictSecondaryUnique(t *testing.T) {
	p := newPair(t, `CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL UNIQUE, name text)`, [2]string{"n1", "n2"}, [2]string{})
	conns := p.conns
	p.apart(t, "users", [2]string{
		`INSERT INTO users VALUES (1, 'x@example.com', 'first')`,
		`INSERT INTO users VALUES (2, 'x@example.com', 'second')`,
	})
	if got := TableRows(t, conns[0], "users"); len(got) != 1 || got[0] != "(2,x@example.com,second)" {
		t.Fatalf("users after the collision: got %v, want only the later row (2,x@example.com,second)", got)
	}
	for i, c := range conns {
		WaitFor(t, 30*time.Second, "the unique conflict recorded", func() (bool, error) {
			rows := conflictRows(t, c)
			return len(rows) == 1 && rows[0].Type == "insert_insert", nil
		})
		rows := conflictRows(t, c)
		want := []string{"last_update_wins_keep_remote", "last_update_wins_keep_local"}[i]
		if rows[0].Resolution != want {
			t.Errorf("n%d: resolution %s, want %s", i+1, rows[0].Resolution, want)
		}
	}
}

// TestConflictsInsidePipeline: a backlog of single-row transactions reaches
// apply as pipelines of many transactions; conflicts in the middle of one
// (update_update, update_delete, insert_insert) are resolved one by one and
// the transactions around them still apply, each once.
func TestConflictsInsidePipeline(t *testing.T) {
	p := newPair(t, itemsSchema, [2]string{"n1", "n2"}, [2]string{})
	conns := p.conns
	mustExec(t, conns[0], `INSERT INTO items SELECT g, 'initial', 0 FROM generate_series(1, 300) g`)
	WaitSameRows(t, time.Minute, "items", conns[0], conns[1])
	// n1 commits 300 transactions, one row each; n2, later, changes rows
	// that some of them change too.
	p.apart(t, "items", [2]string{
		`DO $$ BEGIN
			FOR i IN 1..300 LOOP
				UPDATE items SET val = 'n1', n = n + 1 WHERE id = i;
				COMMIT;
			END LOOP;
			INSERT INTO items VALUES (1000, 'n1', 1);
		END $$`,
		`UPDATE items SET val = 'n2' WHERE id IN (50, 120, 299);
		 DELETE FROM items WHERE id = 77;
		 INSERT INTO items VALUES (1000, 'n2', 2)`,
	})
	for i, c := range conns {
		for _, check := range []struct {
			sql  string
			want int
		}{
			{`SELECT count(*) FROM items`, 300},
			{`SELECT count(*) FROM items WHERE val = 'n1' AND n = 1`, 300 - 4},
			{`SELECT count(*) FROM items WHERE val = 'n2' AND id IN (50, 120, 299, 1000)`, 4},
			{`SELECT count(*) FROM items WHERE id = 77`, 0},
		} {
			if got := count(t, c, check.sql); got != check.want {
				t.Errorf("node n%d: %s: got %d, want %d", i+1, check.sql, got, check.want)
			}
		}
	}
	// n2 applied n1's backlog and met every conflict; its own changes won.
	WaitFor(t, 30*time.Second, "the conflicts recorded on n2", func() (bool, error) {
		byType := map[string]int{}
		for _, r := range conflictRows(t, conns[1]) {
			if r.Resolution == "last_update_wins_keep_local" || r.Type == "update_delete" {
				byType[r.Type]++
			}
		}
		return byType["update_update"] == 3 && byType["update_delete"] == 1 && byType["insert_insert"] == 1,
			fmt.Errorf("conflicts by type: %v", byType)
	})
	st := p.agents[1].Appliers()["n1"].Status()
	if got := st.Transactions.Load(); got < 301 {
		t.Errorf("n2 applied %d transactions of n1, want at least 301", got)
	}
	// n1's 300 updates, those that lost to n2's included, are counted.
	if got := st.Updates.Load(); got < 300 {
		t.Errorf("n2 counted %d updates from n1, want at least 300", got)
	}
}

// TestConflictHostileNames resolves conflicts (the slow path, tombstones,
// the history row) on a table whose schema, name and key column hold quotes,
// spaces, semicolons, comment markers and non-ASCII letters.
func TestConflictHostileNames(t *testing.T) {
	const schema = `CREATE SCHEMA "s; DROP TABLE x; --";
		CREATE TABLE "s; DROP TABLE x; --"."t ""x"" ✓" ("k'ey"" --" int PRIMARY KEY, "v al;" text)`
	const table = `"s; DROP TABLE x; --"."t ""x"" ✓"`
	p := newPair(t, schema, [2]string{"n1", "n2"}, [2]string{})
	conns := p.conns
	mustExec(t, conns[0], `INSERT INTO `+table+` VALUES (1, 'one'), (2, 'two'), (3, 'three')`)
	WaitSameRows(t, time.Minute, table, conns[0], conns[1])
	p.apart(t, table, [2]string{
		`UPDATE ` + table + ` SET "v al;" = 'n1' WHERE "k'ey"" --" IN (1, 2); INSERT INTO ` + table + ` VALUES (4, 'n1')`,
		`UPDATE ` + table + ` SET "v al;" = 'n2' WHERE "k'ey"" --" = 1; DELETE FROM ` + table + ` WHERE "k'ey"" --" = 2;
		 INSERT INTO ` + table + ` VALUES (4, 'n2')`,
	})
	for i, c := range conns {
		if got := count(t, c, `SELECT count(*) FROM `+table+` WHERE ("k'ey"" --", "v al;") IN ((1, 'n2'), (3, 'three'), (4, 'n2'))`); got != 3 {
			t.Errorf("node n%d: got %d of the expected rows, want 3", i+1, got)
		}
		if got := count(t, c, `SELECT count(*) FROM `+table); got != 3 {
			t.Errorf("node n%d: %d rows, want 3", i+1, got)
		}
	}
	WaitFor(t, 30*time.Second, "the conflicts recorded on n2 under the table's name", func() (bool, error) {
		n := 0
		for _, r := range conflictRows(t, conns[1]) {
			if r.Schema == "s; DROP TABLE x; --" && r.Table == `t "x" ✓` {
				n++
			}
		}
		return n == 3, fmt.Errorf("%d conflict rows for the table", n)
	})
}
