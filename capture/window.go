package capture

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pubAckTimeout bounds the wait for one publish acknowledgement; past it the
// capture session restarts from the slot and re-publishes (de-duplicated).
const pubAckTimeout = 30 * time.Second

// asyncPublisher is the part of jetstream.JetStream the window needs.
type asyncPublisher interface {
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

var _ asyncPublisher = (jetstream.JetStream)(nil)

type pending struct {
	fut  jetstream.PubAckFuture // nil for a transaction that published nothing
	end  pglogrepl.LSN          // end of the transaction this entry completes; 0 for a non-final chunk
	size int
}

// window publishes asynchronously with a bounded number and size of
// outstanding messages, and tracks the end LSN of the last transaction whose
// every message JetStream acknowledged, in commit order.
type window struct {
	pub      asyncPublisher
	stream   string
	maxCount int
	maxBytes int

	q         []pending
	bytes     int
	confirmed pglogrepl.LSN
	// lastSeq is the stream sequence the next publish expects to follow, so
	// that no message is ever stored after one that was lost (apply would
	// skip the lost one as older). Until the first message that is not a
	// duplicate is stored, publishes go one at a time: a duplicate does not
	// advance the stream, so later expectations cannot be predicted.
	lastSeq uint64
	fresh   bool
}

func newWindow(pub asyncPublisher, stream string, maxCount, maxBytes int, confirmed pglogrepl.LSN, lastSeq uint64) *window {
	return &window{pub: pub, stream: stream, maxCount: maxCount, maxBytes: maxBytes, confirmed: confirmed, lastSeq: lastSeq}
}

// publish sends m, first waiting for acknowledgements while the window is full.
// end is the transaction's end LSN when m is its last message, else 0.
func (w *window) publish(ctx context.Context, m *nats.Msg, end pglogrepl.LSN) error {
	size := len(m.Data)
	for len(w.q) > 0 && (len(w.q) >= w.maxCount || w.bytes+size > w.maxBytes) {
		if err := w.waitHead(ctx); err != nil {
			return err
		}
	}
	id := m.Header.Get(nats.MsgIdHdr)
	fut, err := w.pub.PublishMsgAsync(m, jetstream.WithExpectStream(w.stream), jetstream.WithExpectLastSequence(w.lastSeq))
	if err != nil {
		return fmt.Errorf("publish %s: %w", id, err)
	}
	w.q = append(w.q, pending{fut: fut, end: end, size: size})
	w.bytes += size
	if !w.fresh {
		return w.waitHead(ctx)
	}
	w.lastSeq++
	return nil
}

// done records a transaction that published nothing, so that the confirmed
// position can pass it once everything before it is acknowledged.
func (w *window) done(end pglogrepl.LSN) {
	if len(w.q) == 0 {
		w.confirmed = max(w.confirmed, end)
		return
	}
	w.q = append(w.q, pending{end: end})
}

func (w *window) empty() bool { return len(w.q) == 0 }

// drain pops every acknowledged message at the head without blocking.
func (w *window) drain() error {
	for len(w.q) > 0 {
		h := w.q[0]
		if h.fut != nil {
			select {
			case ack := <-h.fut.Ok():
				w.acked(ack)
			case err := <-h.fut.Err():
				return w.failed(h, err)
			default:
				return nil
			}
		}
		w.pop()
	}
	return nil
}

// waitHead blocks until the oldest outstanding message is acknowledged.
func (w *window) waitHead(ctx context.Context) error {
	h := w.q[0]
	if h.fut != nil {
		timer := time.NewTimer(pubAckTimeout)
		defer timer.Stop()
		select {
		case ack := <-h.fut.Ok():
			w.acked(ack)
		case err := <-h.fut.Err():
			return w.failed(h, err)
		case <-timer.C:
			return w.failed(h, errors.New("no acknowledgement in time"))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	w.pop()
	return nil
}

// acked notes where a message was stored; the first one that is not a
// duplicate anchors the sequence expectations of pipelined publishes.
func (w *window) acked(ack *jetstream.PubAck) {
	if !w.fresh && !ack.Duplicate {
		w.fresh = true
		w.lastSeq = ack.Sequence
	}
}

func (w *window) pop() {
	h := w.q[0]
	w.q[0] = pending{}
	w.q = w.q[1:]
	w.bytes -= h.size
	if h.end > w.confirmed {
		w.confirmed = h.end
	}
}

func (w *window) failed(h pending, err error) error {
	return fmt.Errorf("publish %s: %w", h.fut.Msg().Header.Get(nats.MsgIdHdr), err)
}
