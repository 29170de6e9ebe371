package stream_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/pgactive-go/pgactive/stream"
)

// FuzzDecode checks that Decode never panics, that every error wraps
// ErrMalformed, and that whatever it accepts survives Encode and Decode
// unchanged.
func FuzzDecode(f *testing.F) {
	for _, txn := range fuzzSeeds() {
		b, err := stream.Encode(txn)
		if err != nil {
			f.Fatalf("Encode: %v", err)
		}
		f.Add(b)
	}
	for _, b := range [][]byte{
		nil,
		{0xc0},
		{0x80},
		{0x90},
		{0xc1},
		{0x81, 0xa1, 'v', 0x01},
		{0xdc, 0x00, 0x02, 0xc0},
		[]byte("hello, world"),
		[]byte(`{"v":1,"on":"n1","os":1,"l":16}`),
	} {
		f.Add(b)
	}
	for _, seed := range [][]*stream.Txn{smallTxns(), smallTxns()[1:]} {
		var batch stream.Batch
		for _, txn := range seed {
			if _, err := batch.Add(txn, 1<<20); err != nil {
				f.Fatalf("Add: %v", err)
			}
		}
		f.Add(batch.Msg("s").Data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecodeMsg(t, b)
		txn, err := stream.Decode(b)
		if err != nil {
			if !errors.Is(err, stream.ErrMalformed) {
				t.Fatalf("Decode error %v does not wrap ErrMalformed", err)
			}
			if strings.Contains(err.Error(), "runtime error") {
				t.Fatalf("Decode recovered from a panic: %v", err)
			}
			if txn != nil {
				t.Fatalf("Decode returned %+v with an error", txn)
			}
			return
		}
		again, err := stream.Encode(txn)
		if err != nil {
			t.Fatalf("Encode of an accepted body: %v", err)
		}
		txn2, err := stream.Decode(again)
		if err != nil {
			t.Fatalf("Decode of a re-encoded body: %v\nbody %x\nre-encoded %x", err, b, again)
		}
		if got, want := normalized(txn2), normalized(txn); !reflect.DeepEqual(got, want) {
			t.Fatalf("re-encoded body decodes differently:\n got %+v\nwant %+v\nbody %x", got, want, b)
		}
		third, err := stream.Encode(txn2)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		if !bytes.Equal(third, again) {
			t.Fatalf("encoding is not stable:\n%x\n%x", again, third)
		}
	})
}

// checkDecodeMsg checks that DecodeMsg accepts b or refuses it as
// malformed, and that what it accepts goes into one message again and reads
// back the same.
func checkDecodeMsg(t *testing.T, b []byte) {
	txns, err := stream.DecodeMsg(b)
	if err != nil {
		if !errors.Is(err, stream.ErrMalformed) || strings.Contains(err.Error(), "runtime error") || txns != nil {
			t.Fatalf("DecodeMsg: %v (%d transactions returned)", err, len(txns))
		}
		return
	}
	if len(txns) == 1 {
		return // Decode's checks below cover a body of one
	}
	var batch stream.Batch
	for _, txn := range txns {
		if ok, err := batch.Add(txn, len(b)+1<<20); err != nil || !ok {
			t.Fatalf("Add of an accepted transaction: %t, %v", ok, err)
		}
	}
	again, err := stream.DecodeMsg(batch.Msg("s").Data)
	if err != nil {
		t.Fatalf("DecodeMsg of a re-encoded body: %v\nbody %x", err, b)
	}
	for i := range txns {
		if got, want := normalized(again[i]), normalized(txns[i]); !reflect.DeepEqual(got, want) {
			t.Fatalf("transaction %d decodes differently when re-encoded:\n got %+v\nwant %+v", i, got, want)
		}
	}
}

func fuzzSeeds() []*stream.Txn {
	small := &stream.Txn{
		Origin: "n1", OriginSysID: 1, CommitLSN: 0x10, Last: true,
		Relations: []stream.Relation{audit},
		Changes:   []stream.Change{{Op: stream.OpInsert, New: stream.Tuple{null}}},
	}
	truncate := &stream.Txn{
		Origin: "n1", OriginSysID: 1, CommitLSN: 0x10, Chunk: 1,
		Relations: []stream.Relation{audit, accounts},
		Changes:   []stream.Change{{Op: stream.OpTruncate, Truncated: []int{1, 0}, TruncateFlags: stream.TruncateCascade}},
	}
	empty := &stream.Txn{Origin: "n1", OriginSysID: 1, CommitLSN: 0x10}
	return []*stream.Txn{fullTxn(), small, truncate, empty}
}

// normalized returns a copy of t in which empty slices are nil: omitempty
// fields cannot tell them apart, and neither can a reader of the value.
func normalized(t *stream.Txn) *stream.Txn {
	c := *t
	c.Relations = nil
	for _, r := range t.Relations {
		if len(r.Columns) == 0 {
			r.Columns = nil
		}
		c.Relations = append(c.Relations, r)
	}
	c.Changes = nil
	for _, ch := range t.Changes {
		if len(ch.New) == 0 {
			ch.New = nil
		}
		if len(ch.Old) == 0 {
			ch.Old = nil
		}
		if len(ch.Truncated) == 0 {
			ch.Truncated = nil
		}
		c.Changes = append(c.Changes, ch)
	}
	return &c
}
