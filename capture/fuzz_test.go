package capture_test

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/pgactive-go/pgactive/capture"
	"github.com/pgactive-go/pgactive/stream"
)

// frame joins pgoutput messages into one fuzz input, each behind a 2-byte
// big-endian length.
func frame(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m)))
		b = append(b, m...)
	}
	return b
}

// unframe splits what frame joined; a short last message keeps what is left.
func unframe(b []byte) [][]byte {
	var msgs [][]byte
	for len(b) >= 2 {
		n := min(int(binary.BigEndian.Uint16(b)), len(b)-2)
		msgs = append(msgs, b[2:2+n])
		b = b[2+n:]
	}
	return msgs
}

func fuzzFixtures() [][][]byte {
	rows := [][]byte{accountsRel(), ordersRel(), ownRel(), begin()}
	for i := range 12 {
		id := fmt.Sprint(i)
		rows = append(rows,
			insertMsg(relAccounts, txt(id), txt(strings.Repeat("o", i*7)), nul),
			updateMsg(relOrders, 'O', vals(txt(id), txt("1")), vals(txt(id), txt("2"))))
	}
	rows = append(rows, commit())
	return [][][]byte{
		{accountsRel(), begin(), insertMsg(relAccounts, txt("1"), txt("alice"), nul), commit()},
		{
			accountsRel(), ordersRel(), begin(), typeMsg(90000, "public", "mood"),
			insertMsg(relOrders, txt("1"), txt("10")),
			updateMsg(relAccounts, 0, nil, vals(txt("1"), txt("bob"), toast)),
			updateMsg(relAccounts, 'K', vals(txt("1"), nul, nul), vals(txt("2"), txt("bob"), toast)),
			updateMsg(relOrders, 'O', vals(txt("1"), txt("10")), vals(txt("1"), txt("11"))),
			deleteMsg(relAccounts, 'K', txt("2"), nul, nul),
			deleteMsg(relOrders, 'O', txt("1"), txt("11")),
			truncateMsg(3, relAccounts, relOrders, relOwn),
			commit(),
		},
		{accountsRel(), begin(), originMsg(0x5000, "pgactive_n2"), insertMsg(relAccounts, txt("1"), nul, nul), commit()},
		{ownRel(), begin(), insertMsg(relOwn, txt("n2")), truncateMsg(0, relOwn), commit()},
		rows,
		{
			relationMsg(relAccounts, "public", "accounts", 'd', col{name: "id", oid: 23, key: true}),
			beginMsg(0x900, commitTime, 699), insertMsg(relAccounts, txt("1")), commitMsg(0, 0x900, 0x930, commitTime),
			accountsRel(), begin(), insertMsg(relAccounts, txt("2"), txt("b"), nul), commit(),
		},
	}
}

// FuzzAssembler feeds sequences of arbitrary pgoutput messages. Add must
// never panic and never hide a panic of the assembler's own code; on
// message sequences PostgreSQL could send, every chunk it hands back must be
// a valid message, numbered in order, with the transaction's commit LSN.
func FuzzAssembler(f *testing.F) {
	for _, msgs := range fuzzFixtures() {
		f.Add(frame(msgs...))
	}
	f.Add([]byte{})
	f.Add(frame([]byte{}))
	f.Add(frame([]byte{'B'}))
	f.Fuzz(func(t *testing.T, data []byte) {
		a := capture.NewAssembler(testNode, testSysID, 256)
		s := &streamModel{cols: make(map[uint32]int)}
		for i, m := range unframe(data) {
			if !boundedLengths(m) {
				return // a length PostgreSQL never sends, that pglogrepl would allocate
			}
			msg, parsePanic := parse(m)
			if !s.plausible(msg) {
				return
			}
			ev, err := a.Add(m)
			if err != nil {
				if parsePanic == "" && strings.Contains(err.Error(), "runtime error") {
					t.Fatalf("message %d %x: Add recovered from a panic of the assembler: %v", i, m, err)
				}
				return // capture restarts its session on any error
			}
			if parsePanic != "" && !s.skipped(m) {
				t.Fatalf("message %d %x: pglogrepl panics (%s) but Add returned no error", i, m, parsePanic)
			}
			s.check(t, msg, ev)
		}
	})
}

// parse runs pglogrepl's parser, reporting a panic instead of raising it.
func parse(m []byte) (msg pglogrepl.Message, panicked string) {
	defer func() {
		if r := recover(); r != nil {
			msg, panicked = nil, fmt.Sprint(r)
		}
	}()
	msg, _ = pglogrepl.Parse(m)
	return msg, ""
}

// streamModel is what the fuzz target knows of the stream so far.
type streamModel struct {
	cols      map[uint32]int // relation id → column count
	finalLSN  pglogrepl.LSN
	nextChunk int
	// dropping is set inside a transaction that carries an origin: the
	// assembler drops it without parsing its rows.
	dropping bool
}

// skipped reports a row message the assembler need not parse: one of a
// transaction it drops.
func (s *streamModel) skipped(m []byte) bool {
	if !s.dropping || len(m) == 0 {
		return false
	}
	switch pglogrepl.MessageType(m[0]) {
	case pglogrepl.MessageTypeInsert, pglogrepl.MessageTypeUpdate, pglogrepl.MessageTypeDelete,
		pglogrepl.MessageTypeTruncate, pglogrepl.MessageTypeMessage:
		return true
	}
	return false
}

// plausible reports whether PostgreSQL could send msg next: tuples match
// their relation's columns, tables have columns, and the commit LSN is the
// begin's final LSN. Unparsable messages are plausible: Add must reject them.
func (s *streamModel) plausible(msg pglogrepl.Message) bool {
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		if len(m.Columns) == 0 {
			// A table without columns is legal, but stream.Decode rejects
			// a relation without columns, so its changes cannot travel.
			return false
		}
		s.cols[m.RelationID] = len(m.Columns)
	case *pglogrepl.BeginMessage:
		s.finalLSN, s.dropping = m.FinalLSN, false
	case *pglogrepl.OriginMessage:
		s.dropping = true
	case *pglogrepl.CommitMessage:
		s.dropping = false
		return m.CommitLSN == s.finalLSN
	case *pglogrepl.InsertMessage:
		return s.fits(m.RelationID, m.Tuple)
	case *pglogrepl.UpdateMessage:
		return s.fits(m.RelationID, m.NewTuple) && (m.OldTuple == nil || s.fits(m.RelationID, m.OldTuple))
	case *pglogrepl.DeleteMessage:
		return s.fits(m.RelationID, m.OldTuple)
	}
	return true
}

func (s *streamModel) fits(rel uint32, td *pglogrepl.TupleData) bool {
	n, ok := s.cols[rel]
	return !ok || td == nil || len(td.Columns) == n
}

// check verifies the event Add returned for msg.
func (s *streamModel) check(t *testing.T, msg pglogrepl.Message, ev capture.Event) {
	t.Helper()
	switch msg.(type) {
	case *pglogrepl.BeginMessage:
		s.nextChunk = 0
	case *pglogrepl.CommitMessage:
		if !ev.Done {
			t.Fatalf("commit: got event %+v, want Done", ev)
		}
	default:
		if ev.Done {
			t.Fatalf("%T: got Done", msg)
		}
	}
	x := ev.Chunk
	if x == nil {
		return
	}
	if x.Chunk != s.nextChunk {
		t.Fatalf("got chunk %d, want %d", x.Chunk, s.nextChunk)
	}
	s.nextChunk++
	if x.Last != ev.Done {
		t.Fatalf("chunk %d: Last %t on an event with Done %t", x.Chunk, x.Last, ev.Done)
	}
	if x.CommitLSN != s.finalLSN || x.Origin != testNode || x.OriginSysID != testSysID {
		t.Fatalf("chunk %d: got %s from %s/%d, want commit LSN %s", x.Chunk, x.CommitLSN, x.Origin, x.OriginSysID, s.finalLSN)
	}
	if len(x.Changes) == 0 {
		t.Fatalf("chunk %d has no changes", x.Chunk)
	}
	b, err := stream.Encode(x)
	if err != nil {
		t.Fatalf("Encode chunk %d: %v", x.Chunk, err)
	}
	if _, err := stream.Decode(b); err != nil {
		t.Fatalf("chunk %d is not a valid message: %v\n%s", x.Chunk, err, fmtTxn(x))
	}
}

// boundedLengths reports whether every length a tuple or truncate message
// declares fits in the message. pglogrepl allocates what the length says
// before it reads the bytes (up to 4 GiB for a value, 16 GiB for a
// truncate), which a fuzzer must not ask of a shared machine.
func boundedLengths(m []byte) bool {
	if len(m) < 5 {
		return true
	}
	body := m[5:]
	switch m[0] {
	case 'T':
		return int(binary.BigEndian.Uint32(m[1:5])) <= len(m)/4
	case 'I', 'D':
		if len(body) < 1 {
			return true
		}
		_, ok := tupleEnd(body[1:])
		return ok
	case 'U':
		if len(body) < 1 {
			return true
		}
		rest := body[1:]
		if body[0] == 'K' || body[0] == 'O' {
			n, ok := tupleEnd(rest)
			if !ok {
				return false
			}
			if n+1 > len(rest) {
				return true
			}
			rest = rest[n+1:]
		}
		_, ok := tupleEnd(rest)
		return ok
	}
	return true
}

// tupleEnd walks tuple data, returning its length and false when a value
// declares more bytes than remain.
func tupleEnd(b []byte) (int, bool) {
	if len(b) < 2 {
		return len(b), true
	}
	n, off := int(binary.BigEndian.Uint16(b)), 2
	for range n {
		if off >= len(b) {
			return off, true
		}
		kind := b[off]
		off++
		if kind != 't' && kind != 'b' {
			continue
		}
		if off+4 > len(b) {
			return off, true
		}
		l := int(binary.BigEndian.Uint32(b[off:]))
		off += 4
		if l > len(b)-off {
			return off, false
		}
		off += l
	}
	return off, true
}
