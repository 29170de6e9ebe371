package bench_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgactive-go/pgactive/stream"
)

// accountsRelation is a pgbench_accounts-like table, as the throughput
// scenario writes it.
var accountsRelation = stream.Relation{Schema: "public", Table: "accounts", Columns: []stream.Column{
	{Name: "id", TypeOID: 20, Key: true},
	{Name: "bid", TypeOID: 23},
	{Name: "abalance", TypeOID: 23},
	{Name: "filler", TypeOID: 25},
}}

var benchFiller = strings.Repeat("x", 84)

func textDatum(s string) stream.Datum { return stream.Datum{Kind: stream.DatumText, Data: []byte(s)} }

// insertsTxn is a transaction of n single-row inserts into accounts.
func insertsTxn(n int) *stream.Txn {
	t := &stream.Txn{Origin: "node1", OriginSysID: 7301234567890123456, XID: 1234,
		CommitLSN: 0x1_0000_1000, EndLSN: 0x1_0000_1030, CommitTime: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC).UnixMicro(),
		Last: true, Relations: []stream.Relation{accountsRelation}}
	for i := range n {
		t.Changes = append(t.Changes, stream.Change{Op: stream.OpInsert, New: stream.Tuple{
			textDatum(strconv.Itoa(i + 1)), textDatum("1"), textDatum("0"), textDatum(benchFiller)}})
	}
	return t
}

func benchmarkEncode(b *testing.B, rows int) {
	t := insertsTxn(rows)
	body, err := stream.Encode(t)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := stream.Encode(t); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

func benchmarkDecode(b *testing.B, rows int) {
	body, err := stream.Encode(insertsTxn(rows))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := stream.Decode(body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkEncodeOneRow encodes a single-row transaction, the unit of the
// throughput scenario.
func BenchmarkEncodeOneRow(b *testing.B) { benchmarkEncode(b, 1) }

// BenchmarkDecodeOneRow decodes a single-row transaction, as apply does for
// every message.
func BenchmarkDecodeOneRow(b *testing.B) { benchmarkDecode(b, 1) }

// BenchmarkEncodeChunk encodes a transaction of 1,000 rows (about 120 kB),
// the size of a big transaction's chunks.
func BenchmarkEncodeChunk(b *testing.B) { benchmarkEncode(b, 1000) }

// BenchmarkDecodeChunk decodes a transaction of 1,000 rows.
func BenchmarkDecodeChunk(b *testing.B) { benchmarkDecode(b, 1000) }

// BenchmarkNewMsgOneRow builds the NATS message of a single-row transaction:
// the body and the headers capture publishes with.
func BenchmarkNewMsgOneRow(b *testing.B) {
	t := insertsTxn(1)
	subject := stream.TxnSubject("bench", "node1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := stream.NewMsg(subject, t); err != nil {
			b.Fatal(err)
		}
	}
}

// oneRowTxns are n single-row transactions in commit order, as a backlog
// of the throughput scenario holds them.
func oneRowTxns(n int) []*stream.Txn {
	out := make([]*stream.Txn, n)
	for i := range out {
		t := insertsTxn(1)
		t.CommitLSN += 0x100 * pglogrepl.LSN(i)
		t.EndLSN += 0x100 * pglogrepl.LSN(i)
		out[i] = t
	}
	return out
}

// BenchmarkBatchMsg256 builds the message of 256 single-row transactions
// decoded at once (capture's largest batch): the cost of publishing a
// backlog, per transaction.
func BenchmarkBatchMsg256(b *testing.B) {
	txns := oneRowTxns(256)
	subject := stream.TxnSubject("bench", "node1")
	var batch stream.Batch
	b.ReportAllocs()
	for b.Loop() {
		for _, t := range txns {
			if _, err := batch.Add(t, 1<<20); err != nil {
				b.Fatal(err)
			}
		}
		batch.Msg(subject)
	}
	b.ReportMetric(float64(len(txns))*float64(b.N)/b.Elapsed().Seconds(), "txns/s")
}

// BenchmarkDecodeMsg256 decodes the message of 256 single-row transactions,
// as apply does.
func BenchmarkDecodeMsg256(b *testing.B) {
	var batch stream.Batch
	for _, t := range oneRowTxns(256) {
		if _, err := batch.Add(t, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
	body := batch.Msg("s").Data
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := stream.DecodeMsg(body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(256*float64(b.N)/b.Elapsed().Seconds(), "txns/s")
}
