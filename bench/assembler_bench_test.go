package bench_test

import (
	"encoding/binary"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgactive-go/pgactive/capture"
)

// pgoutput builds pgoutput (protocol version 1) messages, as a walsender
// sends them in XLogData.
type pgoutput []byte

func (w pgoutput) u8(v uint8) pgoutput   { return append(w, v) }
func (w pgoutput) u16(v uint16) pgoutput { return binary.BigEndian.AppendUint16(w, v) }
func (w pgoutput) u32(v uint32) pgoutput { return binary.BigEndian.AppendUint32(w, v) }
func (w pgoutput) u64(v uint64) pgoutput { return binary.BigEndian.AppendUint64(w, v) }
func (w pgoutput) str(s string) pgoutput { return append(append(w, s...), 0) }

// pgEpoch is where pgoutput's timestamps count microseconds from.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func (w pgoutput) ts(t time.Time) pgoutput { return w.u64(uint64(t.Sub(pgEpoch).Microseconds())) }

const accountsRelID = 16384

// accountsRelationMsg is 'R' for the accounts table, replica identity default.
func accountsRelationMsg() []byte {
	w := pgoutput{'R'}.u32(accountsRelID).str("public").str("accounts").u8('d').u16(4)
	for _, c := range []struct {
		name string
		oid  uint32
		key  uint8
	}{{"id", 20, 1}, {"bid", 23, 0}, {"abalance", 23, 0}, {"filler", 25, 0}} {
		w = w.u8(c.key).str(c.name).u32(c.oid).u32(0xffffffff)
	}
	return w
}

func (w pgoutput) row(id int) pgoutput {
	w = w.u16(4)
	for _, v := range []string{strconv.Itoa(id), "1", "0", benchFiller} {
		w = append(w.u8('t').u32(uint32(len(v))), v...)
	}
	return w
}

func insertMsg(id int) []byte { return pgoutput{'I'}.u32(accountsRelID).u8('N').row(id) }
func updateMsg(id int) []byte { return pgoutput{'U'}.u32(accountsRelID).u8('N').row(id) }

func beginMsg(lsn pglogrepl.LSN, xid uint32, at time.Time) []byte {
	return pgoutput{'B'}.u64(uint64(lsn)).ts(at).u32(xid)
}

func commitMsg(lsn pglogrepl.LSN, at time.Time) []byte {
	return pgoutput{'C'}.u8(0).u64(uint64(lsn)).u64(uint64(lsn) + 0x30).ts(at)
}

// benchmarkAssembler feeds transactions of rows changes made by change
// and counts the changes assembled.
func benchmarkAssembler(b *testing.B, rows int, change func(id int) []byte) {
	a := capture.NewAssembler("node1", 7301234567890123456, 256<<10)
	if _, err := a.Add(accountsRelationMsg()); err != nil {
		b.Fatal(err)
	}
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	changes := make([][]byte, rows)
	for i := range changes {
		changes[i] = change(i + 1)
	}
	b.ReportAllocs()
	lsn := pglogrepl.LSN(0x1_0000_0000)
	assembled := 0
	for b.Loop() {
		lsn += 0x1000
		if _, err := a.Add(beginMsg(lsn, uint32(lsn), at)); err != nil {
			b.Fatal(err)
		}
		for _, c := range changes {
			ev, err := a.Add(c)
			if err != nil {
				b.Fatal(err)
			}
			if ev.Chunk != nil {
				assembled += len(ev.Chunk.Changes)
			}
		}
		ev, err := a.Add(commitMsg(lsn, at))
		if err != nil {
			b.Fatal(err)
		}
		if ev.Chunk == nil {
			b.Fatal("commit published nothing")
		}
		assembled += len(ev.Chunk.Changes)
	}
	if assembled != rows*b.N {
		b.Fatalf("assembled %d changes, want %d", assembled, rows*b.N)
	}
	b.ReportMetric(float64(assembled)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkAssembleInsertTxn assembles single-row insert transactions
// (begin, insert, commit), the throughput scenario's insert load.
func BenchmarkAssembleInsertTxn(b *testing.B) { benchmarkAssembler(b, 1, insertMsg) }

// BenchmarkAssembleUpdateTxn assembles single-row update transactions
// (replica identity default: no old key).
func BenchmarkAssembleUpdateTxn(b *testing.B) { benchmarkAssembler(b, 1, updateMsg) }

// BenchmarkAssembleLargeTxn assembles a transaction of 10,000 inserts,
// cut into chunks of 256 KiB as the agent does.
func BenchmarkAssembleLargeTxn(b *testing.B) { benchmarkAssembler(b, 10_000, insertMsg) }
