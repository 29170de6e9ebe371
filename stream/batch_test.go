package stream_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/pgactive-go/pgactive/stream"
)

// smallTxns are three whole single-row transactions of one origin, in
// commit order, as a busy origin commits them.
func smallTxns() []*stream.Txn {
	var out []*stream.Txn
	for i, rel := range []stream.Relation{accounts, audit, accounts} {
		row := stream.Tuple{text("1"), text("ann"), null}
		if rel.Table == "audit" {
			row = stream.Tuple{text("2024-01-01 00:00:00+00")}
		}
		out = append(out, &stream.Txn{
			V: stream.WireVersion, Origin: "n1", OriginSysID: 9, XID: uint32(700 + i),
			CommitLSN: 0x100 + 0x40*pglogrepl.LSN(i), EndLSN: 0x130 + 0x40*pglogrepl.LSN(i), CommitTime: 1_700_000_000_000_000 + int64(i),
			Last: true, Relations: []stream.Relation{rel},
			Changes: []stream.Change{{Op: stream.OpInsert, New: row}},
		})
	}
	return out
}

// batchBody adds txns to one batch and returns the message body.
func batchBody(t *testing.T, txns ...*stream.Txn) []byte {
	t.Helper()
	var b stream.Batch
	for _, txn := range txns {
		ok, err := b.Add(txn, 1<<20)
		if err != nil || !ok {
			t.Fatalf("Add %s: %t, %v", txn.MsgID(), ok, err)
		}
	}
	return b.Msg("pgactive.g.n1.txn").Data
}

func TestBatchRoundTrip(t *testing.T) {
	txns := smallTxns()
	var b stream.Batch
	for _, txn := range txns {
		if ok, err := b.Add(txn, 1<<20); err != nil || !ok {
			t.Fatalf("Add %s: %t, %v", txn.MsgID(), ok, err)
		}
	}
	if b.Len() != 3 {
		t.Fatalf("Len: got %d, want 3", b.Len())
	}
	m := b.Msg("pgactive.g.n1.txn")
	if b.Len() != 0 || b.Size() != 0 {
		t.Errorf("batch not empty after Msg: %d transactions, %d bytes", b.Len(), b.Size())
	}
	want := map[string]string{
		stream.HeaderMsgID:      "9:0/180", // the last transaction's
		stream.HeaderOrigin:     "n1",
		stream.HeaderCommitLSN:  "0/180",
		stream.HeaderCommitTime: "2023-11-14T22:13:20.000002Z",
		stream.HeaderTables:     "app.audit,public.accounts",
		stream.HeaderChunk:      "0",
		stream.HeaderLastChunk:  "true",
		stream.HeaderTxns:       "3",
	}
	for name, v := range want {
		if got := m.Header.Get(name); got != v {
			t.Errorf("header %s: got %q, want %q", name, got, v)
		}
	}
	got, err := stream.DecodeMsg(m.Data)
	if err != nil {
		t.Fatalf("DecodeMsg: %v", err)
	}
	if !reflect.DeepEqual(got, smallTxns()) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, smallTxns())
	}
	// A body of one transaction is what Encode writes, and Decode reads it.
	one := batchBody(t, smallTxns()[0])
	if enc, _ := stream.Encode(smallTxns()[0]); string(enc) != string(one) {
		t.Errorf("a batch of one differs from Encode")
	}
	if _, err := stream.Decode(m.Data); err == nil {
		t.Errorf("Decode accepted a body of three transactions")
	}
}

func TestBatchAdd(t *testing.T) {
	txns := smallTxns()
	chunk := func(n int, last bool) *stream.Txn {
		c := *txns[2]
		c.Chunk, c.Last = n, last
		return &c
	}
	t.Run("limit", func(t *testing.T) {
		var b stream.Batch
		if ok, err := b.Add(txns[0], 1); err != nil || !ok {
			t.Fatalf("the first transaction goes in whatever the limit: %t, %v", ok, err)
		}
		size := b.Size()
		if ok, err := b.Add(txns[1], size+1); err != nil || ok {
			t.Fatalf("Add over the limit: %t, %v; want false, nil", ok, err)
		}
		if b.Len() != 1 || b.Size() != size {
			t.Errorf("a refused Add changed the batch")
		}
	})
	t.Run("chunks go alone", func(t *testing.T) {
		var b stream.Batch
		mustAdd(t, &b, txns[0])
		if ok, err := b.Add(chunk(0, false), 1<<20); err != nil || ok {
			t.Errorf("a first chunk after a whole transaction: %t, %v; want false, nil", ok, err)
		}
		b = stream.Batch{}
		mustAdd(t, &b, chunk(1, true))
		if ok, err := b.Add(txns[0], 1<<20); err != nil || ok {
			t.Errorf("a transaction after a last chunk: %t, %v; want false, nil", ok, err)
		}
	})
	t.Run("order and origin", func(t *testing.T) {
		var b stream.Batch
		mustAdd(t, &b, txns[1])
		if _, err := b.Add(txns[0], 1<<20); err == nil {
			t.Errorf("an earlier commit after a later one was accepted")
		}
		other := *txns[2]
		other.OriginSysID = 10
		if _, err := b.Add(&other, 1<<20); err == nil {
			t.Errorf("another node's transaction was accepted")
		}
	})
}

func mustAdd(t *testing.T, b *stream.Batch, txn *stream.Txn) {
	t.Helper()
	if ok, err := b.Add(txn, 1<<20); err != nil || !ok {
		t.Fatalf("Add %s: %t, %v", txn.MsgID(), ok, err)
	}
}

// TestDecodeMsgRejects covers bodies a writer of this format never
// produces: each must be refused as malformed, never half applied.
func TestDecodeMsgRejects(t *testing.T) {
	enc := func(mutate func(*stream.Txn), i int) []byte {
		txn := smallTxns()[i]
		mutate(txn)
		b, err := stream.Encode(txn)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		return b
	}
	keep := func(*stream.Txn) {}
	marshalV1 := func(i int) []byte {
		txn := smallTxns()[i]
		txn.V = 1
		b, err := msgpack.Marshal(txn)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name string
		body []byte
	}{
		{"empty body", nil},
		{"version 1 transactions together", cat(marshalV1(0), marshalV1(1))},
		{"a chunk among transactions", cat(enc(keep, 0), enc(func(x *stream.Txn) { x.Chunk = 1 }, 1))},
		{"a first chunk among transactions", cat(enc(keep, 0), enc(func(x *stream.Txn) { x.Last = false }, 1))},
		{"two nodes", cat(enc(keep, 0), enc(func(x *stream.Txn) { x.OriginSysID = 10 }, 1))},
		{"two node names", cat(enc(keep, 0), enc(func(x *stream.Txn) { x.Origin = "n2" }, 1))},
		{"commits out of order", cat(enc(keep, 1), enc(keep, 0))},
		{"the same commit twice", cat(enc(keep, 0), enc(keep, 0))},
		{"trailing garbage", cat(enc(keep, 0), enc(keep, 1), []byte{0xc1})},
		{"a transaction cut short", func() []byte { b := cat(enc(keep, 0), enc(keep, 1)); return b[:len(b)-1] }()},
		{"an invalid transaction after a valid one", cat(enc(keep, 0), enc(func(x *stream.Txn) { x.CommitLSN = 0 }, 1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := stream.DecodeMsg(tt.body)
			if err == nil {
				t.Fatalf("DecodeMsg accepted it: %+v", got)
			}
			if !errors.Is(err, stream.ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			if got != nil {
				t.Errorf("DecodeMsg returned transactions with an error")
			}
		})
	}
	// A version 1 body alone is a message written before batches.
	if _, err := stream.DecodeMsg(marshalV1(0)); err != nil {
		t.Errorf("a version 1 body: %v", err)
	}
}
