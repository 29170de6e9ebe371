package apply

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// ackEvery is how often committed transactions are acknowledged: apply
// commits asynchronously (synchronous_commit = off, as PostgreSQL's own
// apply worker does) and a message is acknowledged only once the local
// commit of its transaction is flushed (flushWatcher). 200 ms is
// wal_writer_delay's default, so the WAL writer has usually flushed already.
const ackEvery = 200 * time.Millisecond

// heldMsg is a delivered message not yet acknowledged.
type heldMsg struct {
	reply string // the message's reply subject: where acknowledgements go
	// done is set once nothing is left to apply for the message; it may be
	// acknowledged when the local progress need is flushed.
	done bool
	need pglogrepl.LSN
}

// hold records a delivered message in stream order. Messages with nothing
// to apply (done) wait only for what was committed before them.
func (s *session) hold(reply string, done bool) int {
	s.held = append(s.held, heldMsg{reply: reply, done: done, need: s.progress})
	if done {
		s.toAck++
		s.flush.wait(s.progress)
	}
	return len(s.held) - 1
}

// committed marks every held message up to index last as done once the
// local commit of the transaction ending at lsn is flushed.
func (s *session) committed(last int, lsn pglogrepl.LSN) {
	for i := last; i >= 0 && !s.held[i].done; i-- {
		s.held[i].done, s.held[i].need = true, lsn
		s.toAck++
	}
	s.flush.wait(lsn)
}

// ackFlushed acknowledges, in one acknowledgement (the consumer acknowledges
// all before it), the longest run of held messages whose transactions are
// durably committed here, as far as the flush watcher knows.
func (s *session) ackFlushed() error {
	if s.toAck == 0 {
		return nil
	}
	flushed := pglogrepl.LSN(s.flush.flushed.Load())
	n := 0
	for n < len(s.held) && s.held[n].done && s.held[n].need <= flushed {
		n++
	}
	if n == 0 {
		return nil
	}
	s.w.status.Flushed.Store(uint64(flushed))
	if err := s.w.nc.Publish(s.held[n-1].reply, ackAll); err != nil {
		return fmt.Errorf("acknowledge: %w", err)
	}
	s.held = append(s.held[:0], s.held[n:]...)
	s.toAck -= n
	return nil
}

var (
	ackAll     = []byte("+ACK")
	ackWorking = []byte("+WPI")
	ackNak     = []byte("-NAK")
)

// keepHeld tells the server that held messages are still being worked on.
func (s *session) keepHeld() {
	if len(s.held) == 0 || time.Since(s.lastWPI) < progressEvery {
		return
	}
	s.lastWPI = time.Now()
	for _, h := range s.held {
		_ = s.w.nc.Publish(h.reply, ackWorking)
	}
}

// release hands held messages back for immediate redelivery, in order.
// Messages applied but not yet acknowledged come back too: the next session
// skips them by the origin's progress.
func (s *session) release() {
	for _, h := range s.held {
		_ = s.w.nc.Publish(h.reply, ackNak)
	}
	s.held = nil
	s.toAck = 0
}
