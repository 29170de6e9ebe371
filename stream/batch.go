package stream

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// A message body is one encoded Txn, or (since wire version 2) several whole
// transactions of one origin encoded one after another, in commit order.
// Capture puts consecutive small transactions in one message when it has
// them at once (a backlog, a busy origin): JetStream's cost is per message.
// The headers of a message describe its last transaction, which is the one
// its de-duplication id names; HeaderTxns says how many it holds.

// HeaderTxns is how many transactions a message holds.
const HeaderTxns = "Pgactive-Txns"

// Batch collects the transactions of one message: whole transactions, or
// one chunk of a large transaction alone.
type Batch struct {
	body   []byte
	n      int
	last   Txn // the last transaction's fields, without its rows
	tables []string
}

// Len is how many transactions the batch holds.
func (b *Batch) Len() int { return b.n }

// Size is the encoded size of the batch's body.
func (b *Batch) Size() int { return len(b.body) }

// Add encodes t into the batch, stamping it with WireVersion, unless the
// body would then exceed limit bytes and the batch already holds something:
// then it reports false and the batch is unchanged. A chunk of a large
// transaction (not Last, or Chunk > 0) only goes in an empty batch, and
// nothing goes after it.
func (b *Batch) Add(t *Txn, limit int) (bool, error) {
	whole := t.Chunk == 0 && t.Last
	if b.n > 0 && (!whole || !b.whole()) {
		return false, nil
	}
	if b.n > 0 && (t.Origin != b.last.Origin || t.OriginSysID != b.last.OriginSysID || t.CommitLSN <= b.last.CommitLSN) {
		return false, fmt.Errorf("transaction %s cannot follow %s of node %q in one message", t.MsgID(), b.last.MsgID(), b.last.Origin)
	}
	t.V = WireVersion
	size, err := encodedSize(t)
	if err != nil {
		return false, fmt.Errorf("encode transaction %s: %w", t.MsgID(), err)
	}
	if b.n > 0 && len(b.body)+size > limit {
		return false, nil
	}
	if b.body == nil {
		b.body = make([]byte, 0, size)
	}
	b.body = appendTxn(b.body, t)
	b.n++
	b.last = Txn{V: t.V, Origin: t.Origin, OriginSysID: t.OriginSysID, XID: t.XID, CommitLSN: t.CommitLSN,
		EndLSN: t.EndLSN, CommitTime: t.CommitTime, Chunk: t.Chunk, Last: t.Last}
	for i := range t.Relations {
		b.tables = append(b.tables, t.Relations[i].QualifiedName())
	}
	return true, nil
}

func (b *Batch) whole() bool { return b.last.Chunk == 0 && b.last.Last }

// Last is the last transaction added, without its rows.
func (b *Batch) Last() *Txn { return &b.last }

// Msg builds the JetStream message of the batch on subject and empties the
// batch; the message owns the body.
func (b *Batch) Msg(subject string) *nats.Msg {
	t := &b.last
	// The header names are in canonical form already: set the map directly
	// rather than through Header.Set, which canonicalises each name again.
	h := make(nats.Header, 8)
	h[HeaderMsgID] = []string{t.MsgID()}
	h[HeaderOrigin] = []string{t.Origin}
	h[HeaderCommitLSN] = []string{t.CommitLSN.String()}
	h[HeaderCommitTime] = []string{t.Time().Format(time.RFC3339Nano)}
	if len(b.tables) > 0 {
		slices.Sort(b.tables)
		h[HeaderTables] = []string{strings.Join(slices.Compact(b.tables), ",")}
	}
	h[HeaderChunk] = []string{strconv.Itoa(t.Chunk)}
	h[HeaderLastChunk] = []string{strconv.FormatBool(t.Last)}
	h[HeaderTxns] = []string{strconv.Itoa(b.n)}
	m := &nats.Msg{Subject: subject, Header: h, Data: b.body}
	*b = Batch{tables: b.tables[:0]}
	return m
}

// NewMsg builds the JetStream message holding t alone: body plus headers.
func NewMsg(subject string, t *Txn) (*nats.Msg, error) {
	var b Batch
	if _, err := b.Add(t, 0); err != nil {
		return nil, err
	}
	return b.Msg(subject), nil
}

// DecodeMsg parses a message body: one transaction or chunk, or several
// whole transactions of one origin in commit order. It never panics; every
// error wraps ErrMalformed, and the transactions do not alias b.
func DecodeMsg(b []byte) (ts []*Txn, err error) {
	defer func() {
		if r := recover(); r != nil {
			ts, err = nil, fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	d := decoder{b: b}
	for len(ts) == 0 || d.left() > 0 {
		t := new(Txn)
		if err := d.txn(t); err != nil {
			return nil, fmt.Errorf("%w: transaction %d of the message: %w", ErrMalformed, len(ts), err)
		}
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("%w: transaction %d of the message: %w", ErrMalformed, len(ts), err)
		}
		ts = append(ts, t)
	}
	if len(ts) > 1 {
		if err := validateBatch(ts); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
	}
	return ts, nil
}

func validateBatch(ts []*Txn) error {
	for i, t := range ts {
		if t.V < 2 {
			return fmt.Errorf("transaction %d of a message of %d is of wire version %d, which holds one transaction a message", i, len(ts), t.V)
		}
		if t.Chunk != 0 || !t.Last {
			return fmt.Errorf("transaction %d of a message of %d is a chunk of a large transaction", i, len(ts))
		}
		if i == 0 {
			continue
		}
		if t.Origin != ts[0].Origin || t.OriginSysID != ts[0].OriginSysID {
			return errors.New("one message holds transactions of different nodes")
		}
		if t.CommitLSN <= ts[i-1].CommitLSN {
			return fmt.Errorf("transaction %d of a message commits at %s, not after %s", i, t.CommitLSN, ts[i-1].CommitLSN)
		}
	}
	return nil
}
