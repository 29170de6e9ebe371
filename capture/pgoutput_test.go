package capture_test

import (
	"encoding/binary"
	"time"

	"github.com/jackc/pglogrepl"
)

// Builders of pgoutput protocol version 1 messages, as a walsender sends them
// in the WALData of XLogData ("Logical Replication Message Formats" in the
// PostgreSQL documentation).

// pgEpoch is the origin of PostgreSQL timestamps.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

type wal []byte

func (w wal) u8(v uint8) wal   { return append(w, v) }
func (w wal) u16(v uint16) wal { return binary.BigEndian.AppendUint16(w, v) }
func (w wal) u32(v uint32) wal { return binary.BigEndian.AppendUint32(w, v) }
func (w wal) u64(v uint64) wal { return binary.BigEndian.AppendUint64(w, v) }
func (w wal) str(s string) wal { return append(append(w, s...), 0) }
func (w wal) lsn(l pglogrepl.LSN) wal {
	return w.u64(uint64(l))
}
func (w wal) time(t time.Time) wal {
	return w.u64(uint64(t.Sub(pgEpoch).Microseconds()))
}

// col is one column of a relation message.
type col struct {
	name   string
	oid    uint32
	typmod int32
	key    bool
}

// relationMsg is 'R': relation id, namespace, name, replica identity
// ('d' default, 'f' full, 'i' index, 'n' nothing) and columns.
func relationMsg(id uint32, namespace, name string, identity byte, cols ...col) []byte {
	w := wal{'R'}.u32(id).str(namespace).str(name).u8(identity).u16(uint16(len(cols)))
	for _, c := range cols {
		var flags uint8
		if c.key {
			flags = 1
		}
		w = w.u8(flags).str(c.name).u32(c.oid).u32(uint32(c.typmod))
	}
	return w
}

// beginMsg is 'B': final LSN, commit time, xid.
func beginMsg(final pglogrepl.LSN, at time.Time, xid uint32) []byte {
	return wal{'B'}.lsn(final).time(at).u32(xid)
}

// originMsg is 'O': the commit LSN on the origin and the origin's name.
func originMsg(lsn pglogrepl.LSN, name string) []byte {
	return wal{'O'}.lsn(lsn).str(name)
}

// commitMsg is 'C': flags, commit LSN, end LSN, commit time.
func commitMsg(flags uint8, commit, end pglogrepl.LSN, at time.Time) []byte {
	return wal{'C'}.u8(flags).lsn(commit).lsn(end).time(at)
}

// typeMsg is 'Y': a type's oid, namespace and name.
func typeMsg(oid uint32, namespace, name string) []byte {
	return wal{'Y'}.u32(oid).str(namespace).str(name)
}

// value is one column of tuple data.
type value struct {
	kind byte // 'n' null, 'u' unchanged TOAST, 't' text, 'b' binary
	data string
}

func txt(s string) value { return value{kind: 't', data: s} }

var (
	nul   = value{kind: 'n'}
	toast = value{kind: 'u'}
)

func (w wal) tuple(vals []value) wal {
	w = w.u16(uint16(len(vals)))
	for _, v := range vals {
		w = w.u8(v.kind)
		if v.kind == 't' || v.kind == 'b' {
			w = append(w.u32(uint32(len(v.data))), v.data...)
		}
	}
	return w
}

// insertMsg is 'I': relation id, 'N' and the new tuple.
func insertMsg(rel uint32, vals ...value) []byte {
	return wal{'I'}.u32(rel).u8('N').tuple(vals)
}

// updateMsg is 'U': relation id, optionally 'K' (old key) or 'O' (old row)
// with the old tuple, then 'N' and the new tuple. old is ignored when
// oldKind is 0.
func updateMsg(rel uint32, oldKind byte, old, new []value) []byte {
	w := wal{'U'}.u32(rel)
	if oldKind != 0 {
		w = w.u8(oldKind).tuple(old)
	}
	return w.u8('N').tuple(new)
}

// deleteMsg is 'D': relation id, 'K' or 'O' and the old tuple.
func deleteMsg(rel uint32, kind byte, old ...value) []byte {
	return wal{'D'}.u32(rel).u8(kind).tuple(old)
}

// truncateMsg is 'T': relation count, option flags, relation ids.
func truncateMsg(flags uint8, rels ...uint32) []byte {
	w := wal{'T'}.u32(uint32(len(rels))).u8(flags)
	for _, r := range rels {
		w = w.u32(r)
	}
	return w
}

func vals(v ...value) []value { return v }
