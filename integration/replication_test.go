package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgactive-go/pgactive/node"
)

// twoNodes starts two clusters with database app holding schema, one NATS
// server and an agent per node, linked both ways.
func startNodes(t *testing.T, n int, schema string) (*NATS, []*Postgres, []*Agent, []*pgx.Conn) {
	t.Helper()
	ns := StartNATS(t)
	pgs := make([]*Postgres, n)
	conns := make([]*pgx.Conn, n)
	agents := make([]*Agent, n)
	for i := range pgs {
		pgs[i] = StartPostgres(t)
		pgs[i].CreateDatabase(t, "app")
		if schema != "" {
			pgs[i].Exec(t, "app", schema)
		}
		conns[i] = pgs[i].Connect(t, "app")
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("node%d", i+1)
	}
	for i := range pgs {
		agents[i] = StartAgent(t, ns.URL(), node.Config{Group: "app", Node: names[i], DSN: pgs[i].DSN("app")})
	}
	for i, a := range agents {
		others := make([]string, 0, n-1)
		for j, name := range names {
			if j != i {
				others = append(others, name)
			}
		}
		WaitAppliers(t, a, others...)
	}
	return ns, pgs, agents, conns
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t *testing.T, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

const itemsSchema = `CREATE TABLE items (id int PRIMARY KEY, val text, n int DEFAULT 0)`

func TestTwoNodesBothWrite(t *testing.T) {
	_, _, _, c := startNodes(t, 2, itemsSchema)
	a, b := c[0], c[1]

	mustExec(t, a, `INSERT INTO items SELECT g, 'a'||g FROM generate_series(1, 100) g`)
	mustExec(t, b, `INSERT INTO items SELECT g, 'b'||g FROM generate_series(101, 200) g`)
	WaitSameRows(t, 30*time.Second, "items", a, b)
	if got := count(t, a, `SELECT count(*) FROM items`); got != 200 {
		t.Fatalf("rows on node1: got %d, want 200", got)
	}

	mustExec(t, a, `UPDATE items SET val = 'upd-a', n = n + 1 WHERE id BETWEEN 101 AND 150`)
	mustExec(t, b, `UPDATE items SET val = 'upd-b', n = n + 1 WHERE id BETWEEN 1 AND 50`)
	mustExec(t, a, `DELETE FROM items WHERE id BETWEEN 151 AND 160`)
	mustExec(t, b, `DELETE FROM items WHERE id BETWEEN 51 AND 60`)
	mustExec(t, a, `UPDATE items SET id = id + 1000 WHERE id = 170`) // key change
	WaitSameRows(t, 30*time.Second, "items", a, b)
	if got := count(t, b, `SELECT count(*) FROM items WHERE val LIKE 'upd-%' AND n = 1`); got != 100 {
		t.Fatalf("updated rows on node2: got %d, want 100", got)
	}
	if got := count(t, b, `SELECT count(*) FROM items`); got != 180 {
		t.Fatalf("rows on node2 after deletes: got %d, want 180", got)
	}

	// Each row was written once on each node: applied rows carry the origin,
	// and nothing came back to its origin.
	if got := count(t, a, `SELECT count(*) FROM items WHERE (pg_xact_commit_timestamp_origin(xmin)).roident <> 0 AND id BETWEEN 1 AND 50`); got != 50 {
		t.Fatalf("rows on node1 last written by node2's apply: got %d, want 50", got)
	}
	if got := count(t, a, `SELECT count(*) FROM items WHERE (pg_xact_commit_timestamp_origin(xmin)).roident = 0 AND id BETWEEN 101 AND 150`); got != 50 {
		t.Fatalf("rows node1 updated itself and kept as local writes: got %d, want 50 (an echo would mark them remote)", got)
	}
	// Applied rows carry their origin's commit time, to the microsecond:
	// last update wins compares them.
	commitTimes := func(conn *pgx.Conn) []string {
		rows, err := conn.Query(context.Background(), `SELECT id || ' ' || pg_xact_commit_timestamp(xmin)::text FROM items ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if ta, tb := commitTimes(a), commitTimes(b); !slices.Equal(ta, tb) || len(ta) != 180 {
		t.Fatalf("commit times of the rows differ between the nodes:\n%s", describeDiff(ta, tb))
	}

	mustExec(t, b, `TRUNCATE items`)
	WaitSameRows(t, 30*time.Second, "items", a, b)
	if got := count(t, a, `SELECT count(*) FROM items`); got != 0 {
		t.Fatalf("rows on node1 after truncate on node2: got %d, want 0", got)
	}
	mustExec(t, a, `INSERT INTO items VALUES (1, 'after truncate')`)
	WaitSameRows(t, 30*time.Second, "items", a, b)
}
