package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgactive-go/pgactive/monitor"
	"github.com/pgactive-go/pgactive/node"
)

// schemaCase is a difference between the tables of node1 and node2 that
// stops node2 from applying node1's changes, and its fix.
type schemaCase struct {
	name string
	// node1 and node2 run on their node only, before the write (not replicated).
	node1, node2 string
	// before, if set, is written on node1 and replicated before the difference bites.
	before string
	// write runs on node1; node2 cannot apply it.
	write string
	// want are parts of the error node2 reports: the table or column and the fix.
	want []string
	// fix1 and fix2 mend the difference on node1 (if set) and node2.
	fix1, fix2 string
	// table is compared across the nodes; after runs on node1 and node2 once fixed.
	table string
	after [2]string
}

var schemaCases = []schemaCase{{
	name:  "missing column",
	node1: `ALTER TABLE items ADD COLUMN extra int`,
	write: `INSERT INTO items (id, val, extra) VALUES (2, 'with extra', 42)`,
	want:  []string{`column "extra" of table "public"."items" does not exist on node "node2"`, `ADD COLUMN "extra" integer`},
	fix2:  `ALTER TABLE items ADD COLUMN extra int`,
	table: "items",
	after: [2]string{`INSERT INTO items (id, val, extra) VALUES (20, 'later', 1)`, `UPDATE items SET extra = 7 WHERE id = 2`},
}, {
	name:  "different type",
	node1: `ALTER TABLE items ADD COLUMN code text`,
	node2: `ALTER TABLE items ADD COLUMN code int`,
	write: `INSERT INTO items (id, val, code) VALUES (3, 'coded', 'abc')`,
	want: []string{`column type differs from node "node1"`, `column "code" of table "public"."items" is integer on node "node2" but text on node "node1"`,
		`ALTER TABLE "public"."items" ALTER COLUMN "code" TYPE text`},
	fix2:  `ALTER TABLE items ALTER COLUMN code TYPE text USING code::text`,
	table: "items",
	after: [2]string{`INSERT INTO items (id, val, code) VALUES (30, 'later', 'xyz')`, `UPDATE items SET code = 'def' WHERE id = 3`},
}, {
	name:  "missing table",
	node1: `CREATE TABLE gadgets (id int PRIMARY KEY, name text)`,
	write: `INSERT INTO gadgets VALUES (1, 'widget')`,
	want:  []string{`table "public"."gadgets" does not exist on node "node2"`, `create it with the same columns as on node "node1"`},
	fix2:  `CREATE TABLE gadgets (id int PRIMARY KEY, name text)`,
	table: "gadgets",
	after: [2]string{`INSERT INTO gadgets VALUES (2, 'later')`, `UPDATE gadgets SET name = 'sprocket' WHERE id = 1`},
}, {
	name:   "no primary key",
	node1:  `CREATE TABLE notes (id int, body text); ALTER TABLE notes REPLICA IDENTITY FULL`,
	node2:  `CREATE TABLE notes (id int, body text); ALTER TABLE notes REPLICA IDENTITY FULL`,
	before: `INSERT INTO notes VALUES (1, 'first')`,
	write:  `UPDATE notes SET body = 'changed' WHERE id = 1`,
	want: []string{`table "public"."notes" has no primary key on node "node2"`,
		`add one on every node (ALTER TABLE "public"."notes" ADD PRIMARY KEY`},
	fix1:  `ALTER TABLE notes ADD PRIMARY KEY (id)`,
	fix2:  `ALTER TABLE notes ADD PRIMARY KEY (id)`,
	table: "notes",
	// With REPLICA IDENTITY FULL the whole old row arrives as the key; the
	// primary key finds the row, even one holding a NULL.
	after: [2]string{`INSERT INTO notes VALUES (2, NULL); UPDATE notes SET body = 'was null' WHERE id = 2`,
		`UPDATE notes SET body = 'from node2' WHERE id = 1`},
}}

// schemaLag is the path node1 → node2 as node2's SQL and GET /lag show it.
type schemaLag struct {
	sqlError, httpError string
	pending             int64
	failing             float64
}

func readSchemaLag(conn *pgx.Conn, base string) (schemaLag, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	var l schemaLag
	err := conn.QueryRow(ctx, `SELECT coalesce(last_error, ''), pending_messages
		FROM pgactive.pgactive_get_replication_lag_info() WHERE node_name = 'node2'`).Scan(&l.sqlError, &l.pending)
	if err != nil {
		return l, fmt.Errorf("lag row of node1 → node2 on node2: %w", err)
	}
	code, body, err := httpGet(base + "/lag")
	if err != nil || code != http.StatusOK {
		return l, fmt.Errorf("GET /lag: %d %v", code, err)
	}
	var rows []monitor.Row
	if err := json.Unmarshal(body, &rows); err != nil {
		return l, fmt.Errorf("GET /lag: %w", err)
	}
	for _, r := range rows {
		if r.OriginNode == "node1" && r.TargetNode == "node2" {
			l.httpError = r.LastError
		}
	}
	fams, err := scrape(base)
	if err != nil {
		return l, err
	}
	l.failing, _ = metricValue(fams, "pgactive_apply_failing", map[string]string{"group": "app", "origin": "node1", "target": "node2"})
	return l, nil
}

// TestSchemaDifferences: a change node2 cannot apply because its table
// differs from node1's (missing column, other type, missing table, no
// primary key) is recorded on node2 as unhandled_tx_abort with an error that
// names the table or column and the fix, shows in the lag view (SQL, GET
// /lag, /metrics) while it blocks the path, and applies once the user fixes
// node2's schema, after which replication goes on both ways.
func TestSchemaDifferences(t *testing.T) {
	ns := StartNATS(t)
	set := &monitor.Set{}
	pgs := []*Postgres{StartPostgres(t), StartPostgres(t)}
	conns := make([]*pgx.Conn, 2)
	agents := make([]*Agent, 2)
	for i, p := range pgs {
		p.CreateDatabase(t, "app")
		p.Exec(t, "app", itemsSchema)
		conns[i] = p.Connect(t, "app")
		createSchema(t, conns[i])
	}
	for i, p := range pgs {
		agents[i] = StartAgent(t, ns.URL(), node.Config{Group: "app", Node: fmt.Sprintf("node%d", i+1), DSN: p.DSN("app"),
			Monitors: set, ApplyRetryMax: time.Second})
	}
	WaitAppliers(t, agents[0], "node2")
	WaitAppliers(t, agents[1], "node1")
	srv := httptest.NewServer(monitor.NewHandler(monitor.HandlerConfig{Monitors: set.List, Agents: 2, Log: TestLogger()}))
	t.Cleanup(srv.Close)
	node1, node2 := conns[0], conns[1]
	mustExec(t, node1, `INSERT INTO items VALUES (1, 'before')`)
	WaitSameRows(t, 30*time.Second, "items", node1, node2)

	for _, sc := range schemaCases {
		t.Run(sc.name, func(t *testing.T) {
			start := time.Now()
			for i, sql := range []string{sc.node1, sc.node2} {
				if sql != "" {
					mustExec(t, conns[i], sql)
				}
			}
			if sc.before != "" {
				mustExec(t, node1, sc.before)
				WaitSameRows(t, 30*time.Second, sc.table, node1, node2)
			}
			var since time.Time
			if err := node2.QueryRow(context.Background(), "SELECT now()").Scan(&since); err != nil {
				t.Fatal(err)
			}
			mustExec(t, node1, sc.write)

			var msg, table string
			WaitFor(t, 30*time.Second, "an unhandled_tx_abort row on node2", func() (bool, error) {
				err := node2.QueryRow(context.Background(), `SELECT object_name, error_message FROM pgactive.pgactive_conflict_history
					WHERE conflict_type = 'unhandled_tx_abort' AND local_conflict_time >= $1
					ORDER BY conflict_id DESC LIMIT 1`, since).Scan(&table, &msg)
				return err == nil, err
			})
			for _, w := range sc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error_message on node2:\n%s\nlacks %q", msg, w)
				}
			}
			if table != sc.table {
				t.Errorf("object_name of the abort: got %q, want %q", table, sc.table)
			}
			var lag schemaLag
			WaitFor(t, 30*time.Second, "the lag view to show the error", func() (bool, error) {
				var err error
				lag, err = readSchemaLag(node2, srv.URL)
				ok := err == nil && lag.pending > 0 && lag.failing == 1 &&
					strings.Contains(lag.sqlError, sc.want[0]) && strings.Contains(lag.httpError, sc.want[0])
				if err == nil && !ok {
					err = fmt.Errorf("lag %+v", lag)
				}
				return ok, err
			})
			for _, p := range pgs {
				if strings.Contains(lag.sqlError, p.Password) || strings.Contains(msg, p.Password) {
					t.Fatalf("the error shows a password: %s", lag.sqlError)
				}
			}
			t.Logf("last_error: %s", lag.sqlError)

			if sc.fix1 != "" {
				mustExec(t, node1, sc.fix1)
			}
			mustExec(t, node2, sc.fix2)
			WaitSameRows(t, 30*time.Second, sc.table, node1, node2)
			WaitFor(t, 30*time.Second, "the lag view to clear the error", func() (bool, error) {
				lag, err := readSchemaLag(node2, srv.URL)
				ok := err == nil && lag.sqlError == "" && lag.httpError == "" && lag.pending == 0 && lag.failing == 0
				if err == nil && !ok {
					err = fmt.Errorf("lag %+v", lag)
				}
				return ok, err
			})
			for i, sql := range sc.after {
				mustExec(t, conns[i], sql)
			}
			WaitSameRows(t, 30*time.Second, sc.table, node1, node2)
			t.Logf("%s: reported, fixed and caught up in %s", sc.name, time.Since(start).Round(100*time.Millisecond))
		})
	}
	WaitSameRows(t, 30*time.Second, "items", node1, node2)
}
