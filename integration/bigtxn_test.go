package integration

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

// bigTxnRows is the size of the single transaction; PGACTIVE_BIG_TXN_ROWS
// overrides it (the benchmark runs it at 1,000,000).
func bigTxnRows() int {
	if n, err := strconv.Atoi(os.Getenv("PGACTIVE_BIG_TXN_ROWS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

// rssBound is far below what holding the transaction would take (1,000,000
// rows decoded, encoded and applied are several GiB), with room for the race
// detector's overhead.
const rssBound = 256 << 20

// TestBigTransaction replicates one transaction of a million rows between
// agents running as processes, and checks that neither agent's peak memory
// grew with the transaction: capture sends it in chunks as it decodes and
// apply streams the chunks into one local transaction.
func TestBigTransaction(t *testing.T) {
	_, _, procs, conns := processNodes(t, 2)
	rows := bigTxnRows()
	start := time.Now()
	mustExec(t, conns[0], `INSERT INTO items (id, val) SELECT g, 'row ' || g || repeat('x', 20) FROM generate_series(1, $1) g`, rows)
	committed := time.Since(start)
	WaitFor(t, 10*time.Minute, "the big transaction on node2", func() (bool, error) {
		var n int
		err := conns[1].QueryRow(context.Background(), `SELECT count(*) FROM items WHERE id > 0`).Scan(&n)
		return n == rows, err
	})
	visible := time.Since(start)
	WaitSameRows(t, time.Minute, "items", conns...)
	for i, p := range procs {
		rss, err := p.PeakRSS()
		if err != nil {
			t.Fatalf("peak RSS of agent %d: %v", i+1, err)
		}
		t.Logf("agent node%d peak RSS: %d MiB", i+1, rss>>20)
		if rss > rssBound {
			t.Errorf("agent node%d peak RSS %d MiB, want under %d MiB: memory grows with the transaction", i+1, rss>>20, rssBound>>20)
		}
	}
	t.Logf("%d rows in one transaction: committed on node1 in %s, visible on node2 after %s", rows, committed.Round(time.Millisecond), visible.Round(time.Millisecond))

}
