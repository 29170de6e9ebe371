package capture

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"

	"github.com/pgactive-go/pgactive/stream"
)

// OwnSchema is the schema of pgactive's own objects; its changes are never published.
const OwnSchema = "pgactive"

// Event is what the assembler hands back for one pgoutput message.
type Event struct {
	// Chunk, when not nil, is ready to publish: a whole transaction (Last set)
	// or one full chunk of a large one.
	Chunk *stream.Txn
	// Done is set when a transaction ended (published or dropped); EndLSN is
	// then the position after its commit record.
	Done   bool
	EndLSN pglogrepl.LSN
}

// Assembler turns pgoutput (protocol version 1) messages into transactions.
// It is pure: no I/O, no clock. Relations are remembered across transactions,
// as pgoutput sends each one only once per session.
type Assembler struct {
	node      string
	sysid     uint64
	chunkSize int // target encoded size of one chunk, in bytes

	relations map[uint32]*pglogrepl.RelationMessage

	inTxn    bool
	skip     bool // transaction carries a replication origin: applied from elsewhere
	begin    pglogrepl.BeginMessage
	cur      *stream.Txn
	relIndex map[uint32]int // relation id → index in cur.Relations
	size     int            // estimated encoded size of cur
	chunk    int            // index of cur
}

// NewAssembler returns an assembler for the node's transactions that cuts
// chunks of about chunkSize encoded bytes.
func NewAssembler(node string, sysid uint64, chunkSize int) *Assembler {
	return &Assembler{
		node:      node,
		sysid:     sysid,
		chunkSize: chunkSize,
		relations: make(map[uint32]*pglogrepl.RelationMessage),
	}
}

// InTxn reports whether a transaction has begun and not yet committed.
func (a *Assembler) InTxn() bool { return a.inTxn }

// Add feeds one pgoutput message (the WALData of an XLogData message).
func (a *Assembler) Add(walData []byte) (ev Event, err error) {
	defer func() {
		if r := recover(); r != nil { // pglogrepl's parser indexes without bounds checks
			err = fmt.Errorf("parse pgoutput message: %v", r)
		}
	}()
	if a.inTxn && a.skip && len(walData) > 0 && skippable(walData[0]) {
		return Event{}, nil // a row of a transaction that is not published
	}
	msg, err := pglogrepl.Parse(walData)
	if err != nil {
		return Event{}, fmt.Errorf("parse pgoutput message: %w", err)
	}
	return a.add(msg)
}

// skippable reports the pgoutput message types that only carry rows: inside a
// dropped transaction they need not be parsed.
func skippable(typ byte) bool {
	switch pglogrepl.MessageType(typ) {
	case pglogrepl.MessageTypeInsert, pglogrepl.MessageTypeUpdate, pglogrepl.MessageTypeDelete,
		pglogrepl.MessageTypeTruncate, pglogrepl.MessageTypeMessage:
		return true
	}
	return false
}

func (a *Assembler) add(msg pglogrepl.Message) (Event, error) {
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		if m.RelationName == "" {
			return Event{}, fmt.Errorf("relation %d without a name", m.RelationID)
		}
		a.relations[m.RelationID] = m
		if a.inTxn {
			// Redefined by DDL inside the transaction: later changes of
			// this chunk use the new definition.
			delete(a.relIndex, m.RelationID)
		}
		return Event{}, nil
	case *pglogrepl.BeginMessage:
		if a.inTxn {
			return Event{}, errors.New("begin inside a transaction")
		}
		a.inTxn, a.skip, a.begin, a.chunk = true, false, *m, 0
		a.reset()
		return Event{}, nil
	case *pglogrepl.OriginMessage:
		a.skip = true
		return Event{}, nil
	case *pglogrepl.CommitMessage:
		return a.commit(m)
	case *pglogrepl.TypeMessage:
		return Event{}, nil
	}
	if !a.inTxn {
		return Event{}, fmt.Errorf("%s message outside a transaction", msg.Type())
	}
	if a.skip {
		return Event{}, nil
	}
	return a.change(msg)
}

func (a *Assembler) reset() {
	a.cur = &stream.Txn{
		Origin:      a.node,
		OriginSysID: a.sysid,
		XID:         a.begin.Xid,
		CommitLSN:   a.begin.FinalLSN,
		CommitTime:  a.begin.CommitTime.UnixMicro(),
		Chunk:       a.chunk,
	}
	a.relIndex = make(map[uint32]int)
	a.size = 64
}

func (a *Assembler) commit(m *pglogrepl.CommitMessage) (Event, error) {
	if !a.inTxn {
		return Event{}, errors.New("commit outside a transaction")
	}
	a.inTxn = false
	ev := Event{Done: true, EndLSN: m.TransactionEndLSN}
	if a.skip || (len(a.cur.Changes) == 0 && a.chunk == 0) {
		a.cur = nil
		return ev, nil
	}
	a.cur.CommitLSN = m.CommitLSN
	a.cur.EndLSN = m.TransactionEndLSN
	a.cur.Last = true
	ev.Chunk, a.cur = a.cur, nil
	return ev, nil
}

func (a *Assembler) change(msg pglogrepl.Message) (Event, error) {
	var c stream.Change
	var relID uint32
	var err error
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage:
		relID, c.Op = m.RelationID, stream.OpInsert
		c.New, err = tuple(m.Tuple)
	case *pglogrepl.UpdateMessage:
		relID, c.Op = m.RelationID, stream.OpUpdate
		if c.New, err = tuple(m.NewTuple); err == nil && m.OldTuple != nil {
			c.Old, err = tuple(m.OldTuple)
			c.OldFull = m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld
		}
	case *pglogrepl.DeleteMessage:
		relID, c.Op = m.RelationID, stream.OpDelete
		c.Old, err = tuple(m.OldTuple)
		c.OldFull = m.OldTupleType == pglogrepl.DeleteMessageTupleTypeOld
	case *pglogrepl.TruncateMessage:
		return a.truncate(m)
	case *pglogrepl.LogicalDecodingMessage:
		if !m.Transactional || m.Prefix != stream.PrefixDDL {
			return Event{}, nil
		}
		// pglogrepl slices Content out of the receive buffer, which the
		// connection reuses for the next message: keep a copy.
		content := bytes.Clone(m.Content)
		return a.append(stream.Change{Op: stream.OpMessage, Prefix: m.Prefix, Content: content}, nil, len(content)+len(m.Prefix))
	default:
		return Event{}, nil // logical decoding messages and the like are not replicated
	}
	if err != nil {
		return Event{}, err
	}
	rel, ok := a.relations[relID]
	if !ok {
		return Event{}, fmt.Errorf("change for unknown relation %d", relID)
	}
	if rel.Namespace == OwnSchema {
		return Event{}, nil
	}
	return a.append(c, []uint32{relID}, tupleSize(c.New)+tupleSize(c.Old))
}

func (a *Assembler) truncate(m *pglogrepl.TruncateMessage) (Event, error) {
	ids := make([]uint32, 0, len(m.RelationIDs))
	for _, id := range m.RelationIDs {
		rel, ok := a.relations[id]
		if !ok {
			return Event{}, fmt.Errorf("truncate of unknown relation %d", id)
		}
		if rel.Namespace != OwnSchema {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return Event{}, nil
	}
	c := stream.Change{Op: stream.OpTruncate, TruncateFlags: m.Option}
	return a.append(c, ids, 8*len(ids))
}

// append adds c to the current chunk, first handing back the chunk when c
// would overflow it.
func (a *Assembler) append(c stream.Change, relIDs []uint32, size int) (Event, error) {
	var ev Event
	if len(a.cur.Changes) > 0 && a.size+size > a.chunkSize {
		ev.Chunk = a.cur
		a.chunk++
		a.reset()
	}
	idx := make([]int, len(relIDs))
	for i, id := range relIDs {
		idx[i] = a.relation(id)
	}
	switch c.Op {
	case stream.OpTruncate:
		c.Truncated = idx
	case stream.OpMessage:
	default:
		c.Rel = idx[0]
	}
	a.cur.Changes = append(a.cur.Changes, c)
	a.size += size + 8
	return ev, nil
}

// relation returns the index of relation id in the current chunk, adding it.
func (a *Assembler) relation(id uint32) int {
	if i, ok := a.relIndex[id]; ok {
		return i
	}
	rel := a.relations[id]
	r := stream.Relation{Schema: rel.Namespace, Table: rel.RelationName, Columns: make([]stream.Column, len(rel.Columns))}
	for i, col := range rel.Columns {
		r.Columns[i] = stream.Column{Name: col.Name, TypeOID: col.DataType, Key: col.Flags&1 != 0}
		a.size += len(col.Name) + 12
	}
	a.size += len(rel.Namespace) + len(rel.RelationName) + 8
	a.cur.Relations = append(a.cur.Relations, r)
	a.relIndex[id] = len(a.cur.Relations) - 1
	return len(a.cur.Relations) - 1
}

func tuple(td *pglogrepl.TupleData) (stream.Tuple, error) {
	if td == nil {
		return nil, errors.New("change without tuple data")
	}
	t := make(stream.Tuple, len(td.Columns))
	for i, col := range td.Columns {
		switch col.DataType {
		case pglogrepl.TupleDataTypeNull:
			t[i] = stream.Datum{Kind: stream.DatumNull}
		case pglogrepl.TupleDataTypeToast:
			t[i] = stream.Datum{Kind: stream.DatumUnchanged}
		case pglogrepl.TupleDataTypeText:
			t[i] = stream.Datum{Kind: stream.DatumText, Data: col.Data}
		default:
			return nil, fmt.Errorf("column %d in unsupported format %q", i, col.DataType)
		}
	}
	return t, nil
}

func tupleSize(t stream.Tuple) int {
	n := 1
	for _, d := range t {
		n += len(d.Data) + 5
	}
	return n
}
