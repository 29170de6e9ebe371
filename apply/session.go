package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	w          *Worker
	conn       *pgx.Conn
	originName string        // the replication origin this session applies under
	progress   pglogrepl.LSN // origin position applied (committed, maybe not yet flushed)
	tables     map[string]*table
	stmts      preparedStmts
	locks      txnLocks // advisory locks the open local transaction holds

	expected uint64    // next stream sequence to apply
	held     []heldMsg // delivered messages not yet acknowledged, in order
	toAck    int       // how many held messages are done
	lastWPI  time.Time
	flush    *flushWatcher
	pipe     pipeline

	roident    uint32                      // this worker's replication origin
	origins    map[uint32]conflicts.NodeID // replication origin id → node
	nodes      map[conflicts.NodeID]NodeID // node → its identity, with timeline
	copies     map[uint32]bool             // origins of an initial copy
	history    bool                        // pgactive_conflict_history exists
	tombstones bool                        // pgactive_tombstones exists

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
	var group []jetstream.Msg
	for {
		if ctx.Err() != nil {
			s.stop()
			return nil
		}
		select {
		case err := <-s.flush.errc:
			s.release()
			return err
		default:
		}
		if s.w.cfg.Paused != nil && s.w.cfg.Paused() && !s.open {
			if err := s.ackFlushed(); err != nil {
				s.release()
				return err
			}
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
		msgs := batch.Messages()
		for more := true; more; {
			group, more, err = s.gather(msgs, group[:0])
			if err != nil {
				s.abort(ctx, group, msgs)
				return err
			}
			if n, err := s.handleGroup(ctx, group); err != nil {
				s.abort(ctx, group[n:], msgs)
				return err
			}
			clear(group) // let the messages' bodies go before the next group
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrBatchCompleted) {
			s.release()
			return fmt.Errorf("fetch from %s: %w", stream.StreamName(s.w.cfg.Group, s.w.cfg.Origin), err)
		}
		if err := s.ackFlushed(); err != nil {
			s.release()
			return err
		}
		s.keepHeld()
	}
}

// gather waits for the next delivered message, acknowledging what is
// flushed meanwhile, then takes every message already delivered, up to a
// fetch batch. more is false once the fetch has ended.
func (s *session) gather(msgs <-chan jetstream.Msg, group []jetstream.Msg) (_ []jetstream.Msg, more bool, _ error) {
	for len(group) == 0 {
		select {
		case msg, ok := <-msgs:
			if !ok {
				return group, false, nil
			}
			group = append(group, msg)
		case <-s.flush.moved:
			if err := s.ackFlushed(); err != nil {
				return group, true, err
			}
		case err := <-s.flush.errc:
			return group, true, err
		}
	}
	for len(group) < fetchBatch {
		select {
		case msg, ok := <-msgs:
			if !ok {
				return group, false, nil
			}
			group = append(group, msg)
		default:
			return group, true, nil
		}
	}
	return group, true, nil
}

// handleGroup applies delivered messages in stream order: whole
// transactions go through the pipeline, chunks of large ones one by one. It
// returns how many messages it took charge of (held or acknowledged), even
// on error.
func (s *session) handleGroup(ctx context.Context, group []jetstream.Msg) (int, error) {
	for i, msg := range group {
		txns, idx, err := s.take(ctx, msg)
		if err != nil {
			if idx >= 0 {
				i++
			}
			if ferr := s.flushPipeline(ctx); ferr != nil {
				return i, ferr
			}
			return i, err
		}
		for j, txn := range txns {
			// The message is done with its last transaction.
			held := -1
			if j == len(txns)-1 {
				held = idx
			}
			if pipelined(txn) && !s.open {
				s.pipe.add(queued{txn: txn, held: held, size: len(msg.Data()) / len(txns)})
				if s.pipe.full() {
					if err := s.flushPipeline(ctx); err != nil {
						return i + 1, err
					}
				}
				continue
			}
			if err := s.flushPipeline(ctx); err != nil {
				return i + 1, err
			}
			if err := s.applyMsg(ctx, txn, held, false); err != nil {
				return i + 1, err
			}
			if err := s.ackFlushed(); err != nil {
				return i + 1, err
			}
		}
	}
	if err := s.flushPipeline(ctx); err != nil {
		return len(group), err
	}
	return len(group), s.ackFlushed()
}

// take checks one delivered message and holds it. It returns the
// transactions to apply, none when there is nothing to apply (applied
// before, parked, or delivered again while held), and the message's index
// in held (-1 when not held).
func (s *session) take(ctx context.Context, msg jetstream.Msg) ([]*stream.Txn, int, error) {
	meta, err := msg.Metadata()
	if err != nil {
		return nil, -1, fmt.Errorf("read message metadata: %w", err)
	}
	seq := meta.Sequence.Stream
	if seq < s.expected {
		return nil, -1, nil // delivered again while we held it
	}
	if seq > s.expected {
		// An earlier message is still out with a previous session; the
		// server delivers it again after AckWait, then this one.
		if err := s.checkRetention(ctx, seq); err != nil || seq > s.expected {
			return nil, -1, err
		}
	}
	s.expected = seq + 1

	txns, err := stream.DecodeMsg(msg.Data())
	if err == nil {
		err = s.checkOrder(txns[0])
	}
	if err != nil {
		idx := s.hold(msg.Reply(), !s.open)
		return nil, idx, s.park(ctx, msg, seq, err)
	}
	// Skip what was applied before: a re-delivery or a re-publish.
	todo := txns[:0]
	for _, txn := range txns {
		if txn.CommitLSN > s.progress && !s.pipe.covers(txn.CommitLSN) {
			todo = append(todo, txn)
		}
	}
	if len(todo) == 0 {
		return nil, s.hold(msg.Reply(), !s.open), nil
	}
	now := time.Now()
	for _, txn := range todo {
		if txn.Last {
			s.w.status.Delivered.Observe(txn.Time(), now)
		}
		if txn.Chunk == 0 {
			if ahead, warn := conflicts.FutureCommit(txn.Time(), now, conflicts.DefaultSkewTolerance); warn {
				s.w.log.Warn("remote commit time is ahead of this node's clock: check the clocks (NTP), last update wins depends on them",
					"lsn", txn.CommitLSN, "ahead", ahead)
			}
		}
		if err := s.matchKeys(ctx, txn); err != nil {
			return nil, -1, s.keyError(ctx, txn, err)
		}
	}
	return todo, s.hold(msg.Reply(), false), nil
}

// checkOrder checks that a message's first transaction is from the
// worker's origin and fits the chunks applied before it (DecodeMsg checks
// the transactions after it).
func (s *session) checkOrder(txn *stream.Txn) error {
	switch {
	case txn.Origin != s.w.cfg.Origin || txn.OriginSysID != s.w.cfg.OriginSysID:
		return fmt.Errorf("%w: message from node %q (sysid %d) on the stream of node %q", stream.ErrMalformed, txn.Origin, txn.OriginSysID, s.w.cfg.Origin)
	case s.open && (txn.CommitLSN != s.openLSN || txn.Chunk != s.nextChunk) && txn.Chunk != 0:
		return fmt.Errorf("%w: chunk %d of transaction %s out of order", stream.ErrMalformed, txn.Chunk, txn.CommitLSN)
	case !s.open && txn.Chunk != 0 && txn.CommitLSN > s.progress:
		return fmt.Errorf("%w: chunk %d of transaction %s without its start", stream.ErrMalformed, txn.Chunk, txn.CommitLSN)
	}
	return nil
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

// applyMsg applies one message's transaction or chunk of a large
// transaction inside one local transaction, and commits with the last
// chunk. With resolve set, rows go through conflict resolution at once.
func (s *session) applyMsg(ctx context.Context, txn *stream.Txn, held int, resolve bool) error {
	if txn.Chunk == 0 {
		if s.open { // the transaction was published again from its start
			if err := s.rollback(ctx); err != nil {
				return err
			}
		}
		b := &pgconn.Batch{}
		if err := s.queueBegin(ctx, b, txn); err != nil {
			return err
		}
		if _, err := s.execBatch(ctx, b); err != nil {
			_ = s.rollback(ctx)
			return fmt.Errorf("begin transaction %s from %q: %w", txn.CommitLSN, s.w.cfg.Origin, err)
		}
		s.open, s.openLSN, s.nextChunk = true, txn.CommitLSN, 0
	}
	if err := s.applyChanges(ctx, txn, resolve); err != nil {
		_ = s.rollback(ctx)
		err = s.recordAbort(ctx, txn, err)
		return fmt.Errorf("apply transaction %s from %q: %w", txn.CommitLSN, s.w.cfg.Origin, err)
	}
	s.w.status.countChanges(txn.Changes)
	s.nextChunk++
	if !txn.Last {
		return nil
	}
	s.open = false
	if _, err := s.conn.Exec(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit transaction %s from %q: %w", txn.CommitLSN, s.w.cfg.Origin, err)
	}
	s.done(txn, held)
	return nil
}

func (s *session) rollback(ctx context.Context) error {
	s.open = false
	if _, err := s.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

// park keeps an undecodable message in the parked stream, reports it and
// moves on. It is acknowledged with what comes after it.
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
	return nil
}

// stop ends the session at shutdown: what is flushed is acknowledged, the
// rest handed back.
func (s *session) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.open {
		_ = s.rollback(ctx)
	}
	if lsn, err := flushedProgress(ctx, s.conn, s.originName); err == nil {
		s.flush.advance(lsn)
	}
	_ = s.ackFlushed()
	s.release()
}

// abort ends the session after an error: the open transaction is rolled
// back and every message not applied goes back to the server, the ones not
// yet taken (rest, then what the fetch still delivers) included.
func (s *session) abort(ctx context.Context, rest []jetstream.Msg, msgs <-chan jetstream.Msg) {
	if s.open {
		_ = s.rollback(ctx)
	}
	for _, msg := range rest {
		s.held = append(s.held, heldMsg{reply: msg.Reply()})
	}
	for msg := range msgs {
		s.held = append(s.held, heldMsg{reply: msg.Reply()})
	}
	s.release()
}

// recordAbort records a transaction that could not be applied as an
// unhandled_tx_abort conflict, on a connection of its own, and returns
// cause, explained where a schema difference caused it (explainError).
func (s *session) recordAbort(ctx context.Context, txn *stream.Txn, cause error) error {
	cause = s.explainError(ctx, txn, cause)
	s.w.status.countConflict(string(conflicts.UnhandledTxAbort))
	if !s.history || ctx.Err() != nil {
		return cause
	}
	conn, err := s.w.connect(ctx)
	if err != nil {
		return cause
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var t *table
	var c *stream.Change
	if i := abortChange(txn, cause); i >= 0 {
		c = &txn.Changes[i]
		t = newTable(txn.Relations[c.Rel], s.roident)
	} else {
		t, c = &table{}, &stream.Change{}
	}
	if err := s.record(ctx, conn, txn, t, c, localRow{}, conflicts.Abort(), historyError(cause)); err != nil {
		s.w.log.Warn("could not record an apply error in the conflict history", "err", err)
	}
	return cause
}
