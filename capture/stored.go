package capture

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/stream"
)

// storedEnd is where this node's stream ended when a capture session began.
//
// A session restarts from the slot's confirmed position, which may be behind
// what the stream holds. What the stream holds is not published again: the
// messages of a session group transactions as they came, so a second session
// could group them otherwise, under other de-duplication ids, and JetStream
// would store them twice (apply would skip them, but the sequence the window
// expects next would be wrong whenever one such message turned out a
// duplicate after all).
type storedEnd struct {
	seq uint64 // the stream's last sequence
	// lsn is the commit LSN of the last transaction of this node in the
	// stream, whole when its last chunk is there; 0 when none is known.
	lsn   pglogrepl.LSN
	whole bool
}

// holds reports whether the stream holds txn (or its chunk) already.
func (e storedEnd) holds(txn *stream.Txn) bool {
	return txn.CommitLSN < e.lsn || (txn.CommitLSN == e.lsn && e.whole)
}

// storedScan bounds how many messages stored finds the last one of this node
// among; others (garbage published on the subject) are skipped.
const storedScan = 1000

// stored waits until no publish of an earlier session is still in flight
// (it could otherwise be stored after this session's first message), then
// reads where the stream ends. walEnd is the end of the WAL now: a stream
// holding transactions past it is not of this database's present history
// (a cluster restored from a backup keeps its system identifier), and is
// then only relied on for the sequence.
func (c *Capturer) stored(ctx context.Context, walEnd pglogrepl.LSN) (storedEnd, error) {
	select {
	case <-c.js.PublishAsyncComplete():
	case <-ctx.Done():
		return storedEnd{}, ctx.Err()
	case <-time.After(2 * pubAckTimeout):
		return storedEnd{}, errors.New("publishes of the previous session are still unanswered")
	}
	name := stream.StreamName(c.cfg.Group, c.cfg.Node)
	st, err := c.js.Stream(ctx, name)
	if err != nil {
		return storedEnd{}, fmt.Errorf("find stream %s: %w", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return storedEnd{}, fmt.Errorf("read stream %s: %w", name, err)
	}
	end := storedEnd{seq: info.State.LastSeq}
	subject := stream.TxnSubject(c.cfg.Group, c.cfg.Node)
	for seq := end.seq; seq >= max(info.State.FirstSeq, 1) && end.seq-seq < storedScan; seq-- {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return storedEnd{}, fmt.Errorf("read message %d of stream %s: %w", seq, name, err)
		}
		if m.Subject != subject {
			continue
		}
		txns, err := stream.DecodeMsg(m.Data)
		if err != nil || txns[0].Origin != c.cfg.Node || txns[0].OriginSysID != c.cfg.SysID {
			continue
		}
		last := txns[len(txns)-1]
		if last.CommitLSN > walEnd {
			c.log.Warn("the stream holds transactions past the end of this database's WAL: publishing from the slot's position, de-duplicated by message id",
				"seq", seq, "lsn", last.CommitLSN, "wal_end", walEnd)
			return end, nil
		}
		end.lsn, end.whole = last.CommitLSN, last.Last
		return end, nil
	}
	return end, nil
}
