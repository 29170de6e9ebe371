package apply

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgactive-go/pgactive/stream"
)

const (
	// pipeMaxTxns and pipeMaxBytes bound the whole transactions sent to the
	// local database in one round trip.
	pipeMaxTxns  = 128
	pipeMaxBytes = 1 << 20
)

// queued is a whole remote transaction waiting in the pipeline.
type queued struct {
	txn  *stream.Txn
	held int // index in session.held of its message
	size int // bytes of its message
}

// pipeline collects whole single-message transactions and applies them
// together: each keeps its own local transaction (its own commit time and
// origin position), but all of them go to the server in one round trip.
type pipeline struct {
	txns  []queued
	bytes int
}

func (p *pipeline) add(q queued) {
	p.txns = append(p.txns, q)
	p.bytes += q.size
}

// covers reports whether a transaction committed at lsn is queued already
// (the pipeline holds transactions in commit order).
func (p *pipeline) covers(lsn pglogrepl.LSN) bool {
	return len(p.txns) > 0 && lsn <= p.txns[len(p.txns)-1].txn.CommitLSN
}

func (p *pipeline) full() bool { return len(p.txns) >= pipeMaxTxns || p.bytes >= pipeMaxBytes }

func (p *pipeline) reset() {
	clear(p.txns)
	p.txns, p.bytes = p.txns[:0], 0
}

// pipelined reports whether a message's transaction can go in the pipeline:
// complete in one message and without DDL, which runs statement by statement.
func pipelined(txn *stream.Txn) bool {
	return txn.Chunk == 0 && txn.Last && pipelinedChanges(txn)
}

// flushPipeline applies the queued transactions in order. A transaction
// whose rows are not in the state the fast path expects is rolled back and
// applied again with conflict resolution, and the pipeline goes on after it.
func (s *session) flushPipeline(ctx context.Context) error {
	defer s.pipe.reset()
	rest := s.pipe.txns
	for len(rest) > 0 {
		applied, err := s.sendPipeline(ctx, rest)
		for _, q := range rest[:applied] {
			s.w.status.countChanges(q.txn.Changes)
			s.done(q.txn, q.held)
		}
		rest = rest[applied:]
		if err == nil {
			continue
		}
		if len(rest) == 0 {
			return fmt.Errorf("apply transactions from %q: %w", s.w.cfg.Origin, err)
		}
		q := rest[0]
		if _, rerr := s.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
			return fmt.Errorf("roll back transaction %s from %q: %w", q.txn.CommitLSN, s.w.cfg.Origin, rerr)
		}
		if !errors.Is(err, errNeedsResolution) {
			err = s.recordAbort(ctx, q.txn, err)
			return fmt.Errorf("apply transaction %s from %q: %w", q.txn.CommitLSN, s.w.cfg.Origin, err)
		}
		if err := s.applyMsg(ctx, q.txn, q.held, true); err != nil {
			return err
		}
		rest = rest[1:]
	}
	return nil
}

// done records a transaction as committed locally; held is the index of
// its (last) message in session.held.
func (s *session) done(txn *stream.Txn, held int) {
	s.progress = txn.CommitLSN
	s.committed(held, txn.CommitLSN)
	s.w.status.committed(txn)
}

// sendPipeline sends txns as one batch — BEGIN, origin set-up, rows and
// COMMIT for each — and reports how many committed. When one fails, the
// error says why; errNeedsResolution when the fast path met a row it did
// not expect. The failed transaction is left open (aborted) for the caller
// to roll back.
func (s *session) sendPipeline(ctx context.Context, txns []queued) (int, error) {
	b := &pgconn.Batch{}
	// Statement indexes where each transaction's rows begin and its COMMIT is.
	type span struct{ rows, commit int }
	spans := make([]span, 0, len(txns))
	n := 0
	for i, q := range txns {
		err := s.queueBegin(ctx, b, q.txn)
		var k int
		if err == nil {
			k, err = s.queueChanges(ctx, b, q.txn, s.resolveTables(q.txn))
		}
		if err != nil {
			if i == 0 {
				return 0, err
			}
			// Send what came before; this one fails first in the next round.
			return s.sendPipeline(ctx, txns[:i])
		}
		if err := s.queueCommit(ctx, b); err != nil {
			return 0, err
		}
		spans = append(spans, span{rows: n + 2, commit: n + 2 + k})
		n += 2 + k + 1
	}
	ok, err := s.execBatch(ctx, b)
	if err == nil {
		return len(txns), nil
	}
	for i, sp := range spans {
		if ok > sp.commit {
			continue
		}
		if ok >= sp.rows && ok < sp.commit && isRowStateError(err) {
			err = errNeedsResolution
		}
		return i, err
	}
	// Every COMMIT completed; the error came after them.
	return len(txns), err
}

// execBatch sends b and reads its results, returning how many statements
// completed before the first error.
func (s *session) execBatch(ctx context.Context, b *pgconn.Batch) (int, error) {
	mrr := s.conn.PgConn().ExecBatch(ctx, b)
	n := 0
	var stmtErr error
	for mrr.NextResult() {
		if _, err := mrr.ResultReader().Close(); err != nil {
			stmtErr = err
			break
		}
		n++
	}
	if err := mrr.Close(); stmtErr == nil {
		stmtErr = err
	}
	return n, stmtErr
}

// queueBegin adds what opens the local transaction of a remote one: BEGIN,
// the shared join lock, and the transaction's origin position and commit
// time, which every applied transaction must set (PostgreSQL keeps the
// previous values otherwise).
//
// The shared lock lets a joining node read every origin's progress exactly
// as of its snapshot (it takes the lock exclusively); it is taken before the
// transaction has an xid, so it never delays the snapshot itself.
func (s *session) queueBegin(ctx context.Context, b *pgconn.Batch, txn *stream.Txn) error {
	pg := s.conn.PgConn()
	if err := s.stmts.queue(ctx, pg, b, "BEGIN", nil); err != nil {
		return err
	}
	s.locks.reset()
	return s.stmts.queueFormat(ctx, pg, b, originSetupSQL, originSetupParams(txn), binaryParams)
}

// queueCommit adds the COMMIT of a local transaction to b.
func (s *session) queueCommit(ctx context.Context, b *pgconn.Batch) error {
	return s.stmts.queue(ctx, s.conn.PgConn(), b, "COMMIT", nil)
}

// originSetupSQL opens an applied transaction; its parameters are a pg_lsn
// and a timestamptz in binary form (originSetupParams), which the server
// reads without parsing text.
const originSetupSQL = "SELECT pg_advisory_xact_lock_shared(" + joinLockSQL +
	"), pg_replication_origin_xact_setup($1, $2)"

// pgEpochMicros is PostgreSQL's timestamp epoch, 2000-01-01 UTC, in
// microseconds since the Unix epoch.
const pgEpochMicros = 946_684_800_000_000

// originSetupParams are the transaction's commit LSN and commit time in the
// binary forms of pg_lsn and timestamptz: 64-bit big-endian integers, the
// time in microseconds since 2000-01-01 UTC.
func originSetupParams(txn *stream.Txn) [][]byte {
	buf := make([]byte, 16)
	binary.BigEndian.PutUint64(buf, uint64(txn.CommitLSN))
	binary.BigEndian.PutUint64(buf[8:], uint64(txn.CommitTime-pgEpochMicros))
	return [][]byte{buf[:8], buf[8:]}
}
