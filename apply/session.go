package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/conflicts"
	"github.com/pgactive-go/pgactive/stream"
)

const (
	fetchBatch    = 256             // messages of at most 256 KiB: 64 MiB at most in flight
	progressEvery = 5 * time.Second // in-progress acknowledgements for held messages
)

// session is one connection to the local database and one pass over the
// consumer. It ends at the first error; Run starts another.
type session struct {
	w        *Worker
	conn     *pgx.Conn
	progress pglogrepl.LSN // origin position durably applied
	tables   map[string]*table

	expected uint64   // next stream sequence to apply
	held     []string // reply subjects of delivered messages not yet acknowledged, in order
	lastWPI  time.Time

	roident    uint32            // this worker's replication origin
	origins    map[uint32]uint64 // replication origin id → node sysid
	nodes      map[uint64]NodeID // node sysid → its identity
	copies     map[uint32]bool   // origins of an initial copy
	history    bool              // pgactive_conflict_history exists
	tombstones bool              // pgactive_tombstones exists

	open      bool // a chunked transaction is open locally
	openLSN   pglogrepl.LSN
	nextChunk int
}

func (s *session) run(ctx context.Context, cons jetstream.Consumer) error {
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read consumer state: %w", err)
	}
	s.expected = info.AckFloor.Stream + 1
	for {
		if ctx.Err() != nil {
			s.release()
			return nil
		}
		if s.w.cfg.Paused != nil && s.w.cfg.Paused() && !s.open {
			s.keepHeld()
			time.Sleep(200 * time.Millisecond)
			continue
		}
		// No byte limit: with replicated consumers, nats-server answers a
		// byte-limited pull with "batch completed" before the replicas
		// recorded the delivery, and the rest would wait for AckWait.
		batch, err := cons.Fetch(fetchBatch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			s.release()
			return fmt.Errorf("fetch from %s: %w", stream.StreamName(s.w.cfg.Group, s.w.cfg.Origin), err)
		}
		for msg := range batch.Messages() {
			if err := s.handle(ctx, msg); err != nil {
				s.abort(ctx, msg, batch)
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrBatchCompleted) {
			s.release()
			return fmt.Errorf("fetch from %s: %w", stream.StreamName(s.w.cfg.Group, s.w.cfg.Origin), err)
		}
		s.keepHeld()
	}
}

// handle applies one message, in stream order.
func (s *session) handle(ctx context.Context, msg jetstream.Msg) error {
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("read message metadata: %w", err)
	}
	seq := meta.Sequence.Stream
	if seq < s.expected {
		return nil // delivered again while we held it
	}
	if seq > s.expected {
		// An earlier message is still out with a previous session; the
		// server delivers it again after AckWait, then this one.
		if err := s.checkRetention(ctx, seq); err != nil || seq > s.expected {
			return err
		}
	}
	s.expected = seq + 1
	s.held = append(s.held, msg.Reply())

	txn, err := stream.Decode(msg.Data())
	if err == nil && (txn.Origin != s.w.cfg.Origin || txn.OriginSysID != s.w.cfg.OriginSysID) {
		err = fmt.Errorf("%w: message from node %q (sysid %d) on the stream of node %q", stream.ErrMalformed, txn.Origin, txn.OriginSysID, s.w.cfg.Origin)
	}
	if err != nil {
		return s.park(ctx, msg, seq, err)
	}
	if txn.CommitLSN <= s.progress {
		if !s.open {
			return s.ack(msg) // applied before: a re-delivery or a re-publish
		}
		return nil
	}
	return s.apply(ctx, msg, seq, txn)
}

// checkRetention moves past messages the stream no longer holds (removed by
// limits the operator set), reporting the loss loudly.
func (s *session) checkRetention(ctx context.Context, seq uint64) error {
	st, err := s.w.js.Stream(ctx, stream.StreamName(s.w.cfg.Group, s.w.cfg.Origin))
	if err != nil {
		return fmt.Errorf("read stream state: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream state: %w", err)
	}
	if first := info.State.FirstSeq; first > s.expected && first <= seq {
		s.w.log.Error("messages removed from the stream before they were applied; this node has lost changes and must be re-joined",
			"from_seq", s.expected, "to_seq", first-1)
		s.w.status.Errors.Add(1)
		s.expected = first
	}
	return nil
}

func (s *session) apply(ctx context.Context, msg jetstream.Msg, seq uint64, txn *stream.Txn) error {
	if txn.Chunk == 0 {
		if s.open { // the transaction was published again from its start
			if err := s.rollback(ctx); err != nil {
				return err
			}
		}
		// The shared lock lets a joining node read every origin's progress
		// exactly as of its snapshot (it takes the lock exclusively); it is
		// taken before the transaction has an xid, so it never delays the
		// snapshot itself.
		if _, err := s.conn.Exec(ctx, "BEGIN; SELECT pg_advisory_xact_lock_shared("+joinLockSQL+")"); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		s.open, s.openLSN, s.nextChunk = true, txn.CommitLSN, 0
	}
	if txn.Chunk == 0 {
		if ahead, warn := conflicts.FutureCommit(txn.Time(), time.Now(), conflicts.DefaultSkewTolerance); warn {
			s.w.log.Warn("remote commit time is ahead of this node's clock: check the clocks (NTP), last update wins depends on them",
				"lsn", txn.CommitLSN, "ahead", ahead)
		}
	}
	if !s.open || txn.CommitLSN != s.openLSN || txn.Chunk != s.nextChunk {
		return s.park(ctx, msg, seq, fmt.Errorf("%w: chunk %d of transaction %s out of order", stream.ErrMalformed, txn.Chunk, txn.CommitLSN))
	}
	if err := s.applyChanges(ctx, txn); err != nil {
		_ = s.rollback(ctx)
		s.recordAbort(ctx, txn, err)
		return fmt.Errorf("apply transaction %s from %q: %w", txn.CommitLSN, s.w.cfg.Origin, err)
	}
	s.nextChunk++
	if !txn.Last {
		return nil
	}
	if _, err := s.conn.Exec(ctx, "COMMIT"); err != nil {
		s.open = false
		return fmt.Errorf("commit transaction %s from %q: %w", txn.CommitLSN, s.w.cfg.Origin, err)
	}
	s.open = false
	s.progress = txn.CommitLSN
	s.w.status.Applied.Store(uint64(txn.CommitLSN))
	s.w.status.AppliedTime.Store(txn.CommitTime)
	s.w.status.Transactions.Add(1)
	s.w.status.setError(nil)
	return s.ack(msg)
}

func (s *session) rollback(ctx context.Context) error {
	s.open = false
	if _, err := s.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

// ack acknowledges msg and, the consumer acknowledging all, everything before it.
func (s *session) ack(msg jetstream.Msg) error {
	if err := msg.Ack(); err != nil {
		return fmt.Errorf("acknowledge: %w", err)
	}
	s.held = s.held[:0]
	return nil
}

// park keeps an undecodable message in the parked stream, reports it and
// moves on. It is acknowledged with the next transaction (or now, between
// transactions), so the stream does not keep it.
func (s *session) park(ctx context.Context, msg jetstream.Msg, seq uint64, cause error) error {
	s.w.status.Parked.Add(1)
	s.w.log.Error("parked a message that cannot be applied", "seq", seq, "subject", msg.Subject(), "err", cause)
	if _, err := s.w.layout.EnsureParked(ctx); err != nil {
		return err
	}
	p := stream.ParkedMsg(s.w.cfg.Group, s.w.cfg.Origin, s.w.cfg.Target, seq, msg.Subject(), msg.Data(), cause)
	if _, err := s.w.js.PublishMsg(ctx, p); err != nil {
		return fmt.Errorf("park message %d: %w", seq, err)
	}
	if !s.open {
		return s.ack(msg)
	}
	return nil
}

// keepHeld tells the server that held messages are still being worked on.
func (s *session) keepHeld() {
	if len(s.held) == 0 || time.Since(s.lastWPI) < progressEvery {
		return
	}
	s.lastWPI = time.Now()
	for _, reply := range s.held {
		_ = s.w.nc.Publish(reply, []byte("+WPI"))
	}
}

// release hands held messages back for immediate redelivery, in order.
func (s *session) release() {
	for _, reply := range s.held {
		_ = s.w.nc.Publish(reply, []byte("-NAK"))
	}
	s.held = nil
}

// abort ends the session after an error at msg: the open transaction is
// rolled back and every message not applied goes back to the server.
func (s *session) abort(ctx context.Context, failed jetstream.Msg, batch jetstream.MessageBatch) {
	if s.open {
		_ = s.rollback(ctx)
	}
	if n := len(s.held); n == 0 || s.held[n-1] != failed.Reply() {
		s.held = append(s.held, failed.Reply())
	}
	for msg := range batch.Messages() {
		s.held = append(s.held, msg.Reply())
	}
	s.release()
}

// recordAbort records a transaction that could not be applied as an
// unhandled_tx_abort conflict, on a connection of its own.
func (s *session) recordAbort(ctx context.Context, txn *stream.Txn, cause error) {
	s.w.status.countConflict(string(conflicts.UnhandledTxAbort))
	if !s.history || ctx.Err() != nil {
		return
	}
	conn, err := s.w.connect(ctx)
	if err != nil {
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var t *table
	var c *stream.Change
	if len(txn.Changes) > 0 && txn.Changes[0].Op != stream.OpTruncate {
		c = &txn.Changes[0]
		t = newTable(txn.Relations[c.Rel], s.roident)
	} else {
		t, c = &table{}, &stream.Change{}
	}
	if err := s.record(ctx, conn, txn, t, c, localRow{}, conflicts.Abort(), cause); err != nil {
		s.w.log.Warn("could not record an apply error in the conflict history", "err", err)
	}
}
