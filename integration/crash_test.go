package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgactive-go/pgactive/node"
)

const loadSchema = `CREATE TABLE items (id bigint PRIMARY KEY, val text, n int NOT NULL DEFAULT 0)`

// auditedLoadSchema is loadSchema plus an audit of what apply writes: every
// row version applied from another node is recorded once in audit.applied
// (rows written inside a replication-origin session, which the capture of
// this node does not publish). A load writes each version (id, n, val)
// once, so a version recorded twice was applied twice.
const auditedLoadSchema = loadSchema + `;
CREATE SCHEMA audit;
CREATE TABLE audit.applied (id bigint NOT NULL, n int NOT NULL, val text);
CREATE FUNCTION audit.record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF pg_replication_origin_session_is_setup() THEN
		INSERT INTO audit.applied VALUES (NEW.id, NEW.n, NEW.val);
	END IF;
	RETURN NULL;
END $$;
CREATE TRIGGER record AFTER INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION audit.record();
ALTER TABLE items ENABLE ALWAYS TRIGGER record`

// convergeTimeout leaves room for messages held by a dead session to come
// back (the consumer's AckWait) and for backoff.
const convergeTimeout = 3 * time.Minute

// checkLoads waits for all nodes to hold the same rows and checks that every
// row a load committed is there, and nothing more than it may have written;
// and, on nodes set up with auditedLoadSchema, that nothing was applied twice.
func checkLoads(t *testing.T, conns []*pgx.Conn, loads []*Load, audited bool) {
	t.Helper()
	WaitSameRows(t, convergeTimeout, "items", conns...)
	var least, most int64
	for _, l := range loads {
		lo, hi := l.Bounds()
		least += lo
		most += hi
	}
	got := int64(count(t, conns[0], `SELECT count(*) FROM items WHERE id > 0`)) // probes have negative keys
	if got < least || got > most {
		t.Fatalf("rows on every node: got %d, want between %d and %d (committed by the loads)", got, least, most)
	}
	t.Logf("%d rows on each of %d nodes (loads committed %d, %d uncertain)", got, len(conns), least, most-least)
	if audited {
		checkAppliedOnce(t, conns)
	}
}

// checkAppliedOnce checks, on nodes set up with auditedLoadSchema, that no
// row version was applied twice, and that the audit saw what apply wrote.
func checkAppliedOnce(t *testing.T, conns []*pgx.Conn) {
	t.Helper()
	for i, c := range conns {
		if count(t, c, `SELECT count(*) FROM pg_class WHERE oid = to_regclass('audit.applied')`) == 0 {
			t.Fatalf("node%d: no audit.applied table: set the nodes up with auditedLoadSchema", i+1)
		}
		remote := count(t, c, `SELECT count(*) FROM items i WHERE (SELECT roident FROM pg_xact_commit_timestamp_origin(i.xmin)) <> 0`)
		applied := count(t, c, `SELECT count(*) FROM audit.applied`)
		if remote == 0 || applied < remote {
			t.Fatalf("node%d: %d row versions audited as applied, but %d rows were last written by apply", i+1, applied, remote)
		}
		if dup := count(t, c, `SELECT count(*) FROM (SELECT 1 FROM audit.applied GROUP BY id, n, val HAVING count(*) > 1) d`); dup != 0 {
			t.Fatalf("node%d: %d row versions applied more than once", i+1, dup)
		}
	}
}

func startLoads(t *testing.T, pgs []*Postgres, workers int) []*Load {
	loads := make([]*Load, len(pgs))
	for i, p := range pgs {
		loads[i] = StartLoad(t, p.DSN("app"), int64(i+1)*1_000_000_000, workers)
	}
	return loads
}

func stopLoads(loads []*Load) {
	for _, l := range loads {
		l.Stop()
	}
}

func TestThreeNodesConcurrentLoad(t *testing.T) {
	_, pgs, _, conns := startNodes(t, 3, auditedLoadSchema)
	loads := startLoads(t, pgs, 3)
	for _, l := range loads {
		l.WaitCommitted(t, 1500)
	}
	stopLoads(loads)
	checkLoads(t, conns, loads, true)
	for i, l := range loads {
		lo, hi := l.Bounds()
		if lo != hi {
			t.Fatalf("load %d: %d inserts with unknown outcome, want none without a crash", i, hi-lo)
		}
		got := count(t, conns[(i+1)%3], `SELECT count(*) FROM items WHERE id >= $1 AND id < $2`, int64(i+1)*1_000_000_000, int64(i+2)*1_000_000_000)
		if int64(got) != lo {
			t.Fatalf("rows of node%d on node%d: got %d, want exactly the %d it committed", i+1, (i+1)%3+1, got, lo)
		}
	}
}

// processNodes starts n nodes with their agents as separate processes.
func processNodes(t *testing.T, n int) (*NATS, []*Postgres, []*AgentProcess, []*pgx.Conn) {
	t.Helper()
	ns := StartNATS(t)
	pgs := make([]*Postgres, n)
	conns := make([]*pgx.Conn, n)
	procs := make([]*AgentProcess, n)
	for i := range pgs {
		pgs[i] = StartPostgres(t)
		pgs[i].CreateDatabase(t, "app")
		pgs[i].Exec(t, "app", auditedLoadSchema)
		conns[i] = pgs[i].Connect(t, "app")
	}
	for i := range pgs {
		procs[i] = StartAgentProcess(t, ns.URL(), node.Config{Group: "app", Node: fmt.Sprintf("node%d", i+1), DSN: pgs[i].DSN("app")})
	}
	waitLinked(t, conns)
	return ns, pgs, procs, conns
}

// waitLinked waits until a row written on each node is visible on all.
func waitLinked(t *testing.T, conns []*pgx.Conn) {
	t.Helper()
	for i, c := range conns {
		mustExec(t, c, `INSERT INTO items (id, val) VALUES ($1, 'probe')`, -int64(i+1))
	}
	WaitSameRows(t, time.Minute, "items", conns...)
}

func TestCrashAgentKilled(t *testing.T) {
	_, pgs, procs, conns := processNodes(t, 2)
	loads := startLoads(t, pgs, 2)
	loads[0].WaitCommitted(t, 500)
	for round := 0; round < 2; round++ {
		procs[round%2].Kill(t)
		loads[round%2].WaitCommitted(t, 500)
		procs[round%2].Start(t)
		loads[round%2].WaitCommitted(t, 300)
	}
	stopLoads(loads)
	checkLoads(t, conns, loads, true)
}

func TestCrashNATSRestarted(t *testing.T) {
	ns, pgs, _, conns := processNodes(t, 2)
	loads := startLoads(t, pgs, 2)
	loads[0].WaitCommitted(t, 500)
	ns.Shutdown()
	loads[0].WaitCommitted(t, 500)
	loads[1].WaitCommitted(t, 500)
	ns.Restart(t)
	loads[0].WaitCommitted(t, 500)
	stopLoads(loads)
	checkLoads(t, conns, loads, true)
}

func TestCrashPostgresImmediateStop(t *testing.T) {
	_, pgs, _, conns := processNodes(t, 3)
	loads := startLoads(t, pgs, 2)
	loads[1].WaitCommitted(t, 500)
	pgs[1].Stop(t, "immediate")
	loads[0].WaitCommitted(t, 500)
	pgs[1].Start(t)
	loads[1].WaitCommitted(t, 500)
	stopLoads(loads)
	conns[1] = pgs[1].Connect(t, "app")
	checkLoads(t, conns, loads, true)
}
