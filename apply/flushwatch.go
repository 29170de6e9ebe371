package apply

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// flushWatcher learns, on a connection of its own, how far the local commits
// of an origin's transactions are flushed to disk, so that apply acknowledges
// only durable transactions without ever waiting for a WAL flush itself.
type flushWatcher struct {
	conn   *pgx.Conn
	origin string // replication origin name
	// want is the highest origin position apply waits to see flushed;
	// flushed is the last one seen.
	want    atomic.Uint64
	flushed atomic.Uint64
	// moved receives a value when flushed advanced; errc the error that
	// stopped the watcher.
	moved chan struct{}
	errc  chan error
}

func newFlushWatcher(conn *pgx.Conn, origin string, progress pglogrepl.LSN) *flushWatcher {
	f := &flushWatcher{conn: conn, origin: origin, moved: make(chan struct{}, 1), errc: make(chan error, 1)}
	f.want.Store(uint64(progress))
	f.flushed.Store(uint64(progress))
	return f
}

// wait asks to learn when lsn is flushed.
func (f *flushWatcher) wait(lsn pglogrepl.LSN) {
	for {
		cur := f.want.Load()
		if uint64(lsn) <= cur || f.want.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// run polls every ackEvery while apply waits for something, until ctx ends.
// Reading the origin's progress with flush set flushes the WAL up to the
// local commit of the last applied transaction: once for all the
// transactions of the interval, usually already done by the WAL writer.
func (f *flushWatcher) run(ctx context.Context) {
	t := time.NewTicker(ackEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if f.want.Load() <= f.flushed.Load() {
			continue
		}
		lsn, err := flushedProgress(ctx, f.conn, f.origin)
		if err != nil {
			if ctx.Err() == nil {
				f.errc <- err
			}
			return
		}
		f.advance(lsn)
	}
}

// advance records lsn as flushed if it is further than what is known, and
// signals moved then. The watcher and the session's stop may both call it.
func (f *flushWatcher) advance(lsn pglogrepl.LSN) {
	for {
		cur := f.flushed.Load()
		if uint64(lsn) <= cur {
			return
		}
		if f.flushed.CompareAndSwap(cur, uint64(lsn)) {
			break
		}
	}
	select {
	case f.moved <- struct{}{}:
	default:
	}
}

// flushedProgress returns the origin position whose local commit is flushed,
// flushing the WAL up to it first.
func flushedProgress(ctx context.Context, conn *pgx.Conn, origin string) (pglogrepl.LSN, error) {
	var text *string
	if err := conn.QueryRow(ctx, "SELECT pg_replication_origin_progress($1, true)::text", origin).Scan(&text); err != nil {
		return 0, fmt.Errorf("read flushed progress of origin %q: %w", origin, err)
	}
	if text == nil {
		return 0, nil
	}
	lsn, err := pglogrepl.ParseLSN(*text)
	if err != nil {
		return 0, fmt.Errorf("flushed progress of origin %q: %w", origin, err)
	}
	return lsn, nil
}
