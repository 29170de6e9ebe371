package integration

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/stream"
)

// TestBacklogInBatches replays a backlog of small transactions, as capture
// finds it when its agent comes back: capture reads them faster than one
// message each would carry, so many share a message. Inside those messages
// sit a conflict (the slow path, between pipelined transactions), updates,
// a delete of many rows and transactions that publish nothing. The stream
// must hold each transaction exactly once, in commit order, and every row
// version must be applied exactly once, also when the applying agent stops
// halfway through a message.
func TestBacklogInBatches(t *testing.T) {
	p := newPair(t, auditedLoadSchema, [2]string{"node1", "node2"}, [2]string{})
	conns := p.conns
	waitLinked(t, conns[:])
	p.agents[0].Stop()
	p.agents[1].Stop()

	// node2 inserts key 500 first; node1's insert of it, committed later,
	// wins on both nodes.
	mustExec(t, conns[1], `INSERT INTO items (id, val) VALUES (500, 'node2')`)
	// Transactions carrying another replication origin, which capture
	// drops, between the published ones.
	foreign := p.pgs[0].Connect(t, "app")
	mustExec(t, foreign, `CREATE TABLE local_notes (id int)`)
	mustExec(t, foreign, `SELECT pg_replication_origin_create('elsewhere')`)
	mustExec(t, foreign, `SELECT pg_replication_origin_session_setup('elsewhere')`)
	const rows = 3000
	published := 0
	for i := 1; i <= rows; i++ {
		mustExec(t, conns[0], `INSERT INTO items (id, val) VALUES ($1, 'node1')`, i)
		published++
		if i%10 == 0 {
			mustExec(t, conns[0], `UPDATE items SET n = n + 1, val = 'updated' WHERE id = $1`, i-5)
			published++
		}
		if i%100 == 0 {
			mustExec(t, foreign, `INSERT INTO local_notes VALUES ($1)`, i)
		}
	}
	mustExec(t, conns[0], `DELETE FROM items WHERE id > $1`, rows-100)
	published++
	var end pglogrepl.LSN
	if err := conns[0].QueryRow(context.Background(), `SELECT pg_current_wal_lsn()`).Scan(&end); err != nil {
		t.Fatal(err)
	}

	// node1 captures the backlog while node2 applies nothing: the stream
	// keeps every message.
	p.agents[0] = StartAgent(t, p.ns.URL(), p.cfgs[0])
	st := p.agents[0].Capture().Status()
	WaitFor(t, time.Minute, "node1's capture to store the backlog", func() (bool, error) {
		return pglogrepl.LSN(st.Confirmed.Load()) >= end, nil
	})
	txns, msgs := st.Transactions.Load(), st.Messages.Load()
	t.Logf("node1's capture published %d transactions in %d messages", txns, msgs)
	if txns != uint64(published) || msgs >= txns {
		t.Errorf("node1's capture published %d transactions in %d messages, want %d in fewer messages", txns, msgs, published)
	}
	stored, _, shared := checkStreamMessages(t, p.ns, "node1", 0)
	if stored != published || shared == 0 {
		t.Errorf("node1's stream holds %d transactions, %d messages of them shared; want %d, some shared", stored, shared, published)
	}

	p.agents[1] = StartAgent(t, p.ns.URL(), p.cfgs[1])
	// Stop node2's agent halfway through the backlog: its next session gets
	// again the messages it had applied in part.
	WaitFor(t, time.Minute, "node2 to apply part of the backlog", func() (bool, error) {
		return count(t, conns[1], `SELECT count(*) FROM items WHERE val = 'node1'`) > 500, nil
	})
	p.agents[1].Stop()
	p.agents[1] = StartAgent(t, p.ns.URL(), p.cfgs[1])
	WaitSameRows(t, convergeTimeout, "items", conns[0], conns[1])
	if got, want := count(t, conns[1], `SELECT count(*) FROM items WHERE id > 0`), rows-100; got != want {
		t.Fatalf("rows on node2: got %d, want %d", got, want)
	}
	if got := count(t, conns[1], `SELECT count(*) FROM items WHERE id = 500 AND val = 'node1'`); got != 1 {
		t.Fatalf("key 500 on node2: the later insert, node1's, should have won")
	}
	checkAppliedOnce(t, conns[:])
	var conflicts int
	for _, r := range conflictRows(t, conns[1]) {
		if r.Type == "insert_insert" && r.Resolution == "last_update_wins_keep_remote" && r.Table == "items" {
			conflicts++
		}
	}
	if conflicts != 1 {
		t.Fatalf("node2: %d insert_insert conflicts resolved keep_remote on items, want 1: %+v", conflicts, conflictRows(t, conns[1]))
	}
}

// checkStreamMessages reads every message of node's stream: each must decode
// to transactions of node, in commit order across messages (so none is
// stored twice), with headers naming the last one and how many it holds. It
// returns how many transactions and messages there are, and how many
// messages hold more than one transaction. Messages up to sequence after
// are left out.
func checkStreamMessages(t *testing.T, ns *NATS, node string, after uint64) (txns, msgs, shared int) {
	t.Helper()
	ctx := context.Background()
	st, info := nodeStream(t, ns, node)
	var prev stream.Txn
	for seq := max(info.State.FirstSeq, after+1); seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		held, err := stream.DecodeMsg(m.Data)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		msgs++
		txns += len(held)
		if len(held) > 1 {
			shared++
		}
		last := held[len(held)-1]
		if got, want := m.Header.Get(stream.HeaderTxns), strconv.Itoa(len(held)); got != want {
			t.Errorf("message %d: %s %q, want %q", seq, stream.HeaderTxns, got, want)
		}
		if got, want := m.Header.Get(stream.HeaderMsgID), last.MsgID(); got != want {
			t.Errorf("message %d: %s %q, want the last transaction's %q", seq, stream.HeaderMsgID, got, want)
		}
		for _, txn := range held {
			if txn.Origin != node || (txn.CommitLSN <= prev.CommitLSN && !(txn.CommitLSN == prev.CommitLSN && txn.Chunk == prev.Chunk+1)) {
				t.Fatalf("message %d: transaction %s of %q after %s", seq, txn.MsgID(), txn.Origin, prev.MsgID())
			}
			prev = *txn
		}
	}
	t.Logf("stream of %s: %d transactions in %d messages, %d of them shared", node, txns, msgs, shared)
	return txns, msgs, shared
}

// TestCaptureKilledMidBacklog kills node1's agent while its capture
// publishes a backlog, before the slot heard of most of what JetStream
// stored. The next session must not publish any of it again: it would group
// the transactions otherwise, and the stream would hold them twice.
func TestCaptureKilledMidBacklog(t *testing.T) {
	ns, _, procs, conns := processNodes(t, 2)
	procs[1].Kill(t) // node2 applies nothing: node1's stream keeps every message
	procs[0].Kill(t)
	before := streamLastSeq(t, ns, "node1")
	const rows = 50000
	mustExec(t, conns[0], `DO $$ BEGIN FOR i IN 1..`+strconv.Itoa(rows)+` LOOP
		INSERT INTO items (id, val) VALUES (i, 'backlog'); COMMIT; END LOOP; END $$`)
	var end pglogrepl.LSN
	if err := conns[0].QueryRow(context.Background(), `SELECT pg_current_wal_lsn()`).Scan(&end); err != nil {
		t.Fatal(err)
	}

	procs[0].Start(t)
	WaitFor(t, time.Minute, "node1's capture to store part of the backlog", func() (bool, error) {
		return streamLastSeq(t, ns, "node1") > before+2, nil
	})
	procs[0].Kill(t)
	stopped := streamLastSeq(t, ns, "node1")
	procs[0].Start(t)
	WaitFor(t, time.Minute, "node1's capture to store the backlog", func() (bool, error) {
		var done bool
		err := conns[0].QueryRow(context.Background(), `SELECT coalesce(bool_and(confirmed_flush_lsn >= $1::pg_lsn), false) FROM pg_replication_slots WHERE slot_name LIKE 'pgactive%'`, end).Scan(&done)
		return done, err
	})
	txns, msgs, _ := checkStreamMessages(t, ns, "node1", before)
	t.Logf("killed after message %d of %d", stopped-before, msgs)
	if txns != rows {
		t.Errorf("node1's stream holds %d transactions of the backlog, want each of the %d once", txns, rows)
	}
	procs[1].Start(t)
	WaitSameRows(t, convergeTimeout, "items", conns...)
	checkAppliedOnce(t, conns)
}

// execPublished runs sql on conn, a node agent a serves, and waits until a's
// capture has published its transaction: the next one then goes in a
// message of its own (capture puts in one message only the transactions it
// reads at once), for tests that count messages.
func execPublished(t *testing.T, conn *pgx.Conn, a *Agent, sql string, args ...any) {
	t.Helper()
	var before pglogrepl.LSN
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, sql, args...)
	WaitFor(t, 30*time.Second, "capture to publish the transaction", func() (bool, error) {
		return pglogrepl.LSN(a.Capture().Status().Published.Load()) > before, nil
	})
}

func streamLastSeq(t *testing.T, ns *NATS, node string) uint64 {
	t.Helper()
	_, info := nodeStream(t, ns, node)
	return info.State.LastSeq
}

// nodeStream finds the stream of node in group app, and its state now.
func nodeStream(t *testing.T, ns *NATS, node string) (jetstream.Stream, *jetstream.StreamInfo) {
	t.Helper()
	_, js := ConnectNATS(t, ns.URL())
	st, err := js.Stream(context.Background(), stream.StreamName("app", node))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st, info
}
