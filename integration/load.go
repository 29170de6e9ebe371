package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Load writes to table items (id bigint primary key, val text, n int) of one
// node from several workers until stopped, each worker on its own disjoint key
// range: it inserts a row, and every third step updates the row it inserted
// before. It survives the node going away and counts what it knows committed.
type Load struct {
	committed atomic.Int64 // inserts whose COMMIT was acknowledged
	ambiguous atomic.Int64 // inserts whose outcome is unknown (connection lost during commit)
	errors    atomic.Int64
	stopped   atomic.Bool
	wg        sync.WaitGroup
}

// StartLoad starts workers writing keys from keyBase on dsn.
func StartLoad(t testing.TB, dsn string, keyBase int64, workers int) *Load {
	t.Helper()
	l := &Load{}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func(base int64) {
			defer l.wg.Done()
			l.worker(dsn, base)
		}(keyBase + int64(w)*10_000_000)
	}
	t.Cleanup(func() { l.Stop() })
	return l
}

// worker runs statements to completion (stopping only between them), so
// that without a crash every insert's outcome is known.
func (l *Load) worker(dsn string, base int64) {
	ctx := context.Background()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	next := base
	for !l.stopped.Load() {
		if conn == nil {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				l.errors.Add(1)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			conn = c
		}
		var err error
		if next%3 == 2 && next > base {
			_, err = conn.Exec(ctx, `UPDATE items SET n = n + 1, val = $2 WHERE id = $1`, next-1, fmt.Sprintf("u%d", next))
		}
		if err == nil {
			_, err = conn.Exec(ctx, `INSERT INTO items (id, val) VALUES ($1, $2)`, next, fmt.Sprintf("v%d", next))
			if err == nil {
				l.committed.Add(1)
				next++
				continue
			}
			if conn.IsClosed() {
				l.ambiguous.Add(1)
				next++ // never reuse a key whose insert may have committed
			}
		}
		l.errors.Add(1)
		if conn.IsClosed() {
			conn = nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Committed is the number of inserts known committed so far.
func (l *Load) Committed() int64 { return l.committed.Load() }

// Stop stops the workers and waits for them.
func (l *Load) Stop() {
	l.stopped.Store(true)
	l.wg.Wait()
}

// Bounds returns the least and most rows the workers may have inserted.
func (l *Load) Bounds() (least, most int64) {
	return l.committed.Load(), l.committed.Load() + l.ambiguous.Load()
}

// WaitCommitted waits until the load committed at least n more inserts than now.
func (l *Load) WaitCommitted(t testing.TB, n int64) {
	t.Helper()
	target := l.Committed() + n
	WaitFor(t, 2*time.Minute, fmt.Sprintf("load to commit %d rows", n), func() (bool, error) {
		return l.Committed() >= target, nil
	})
}
