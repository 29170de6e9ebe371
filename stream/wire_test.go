package stream_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/pgactive-go/pgactive/stream"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func text(s string) stream.Datum { return stream.Datum{Kind: stream.DatumText, Data: []byte(s)} }

var (
	null      = stream.Datum{Kind: stream.DatumNull}
	unchanged = stream.Datum{Kind: stream.DatumUnchanged}
)

// accounts and audit are the relations of the fixture transactions.
var (
	accounts = stream.Relation{Schema: "public", Table: "accounts", Columns: []stream.Column{
		{Name: "id", TypeOID: 20, Key: true},
		{Name: "owner", TypeOID: 25},
		{Name: "doc", TypeOID: 3802},
	}}
	audit = stream.Relation{Schema: "app", Table: "audit", Columns: []stream.Column{
		{Name: "at", TypeOID: 1184, Key: true},
	}}
)

// fullTxn holds every op and every datum kind.
func fullTxn() *stream.Txn {
	return &stream.Txn{
		V:           stream.WireVersion,
		Origin:      "node-a",
		OriginSysID: 7301234567890123456,
		XID:         4711,
		CommitLSN:   0x1_016B3748,
		EndLSN:      0x1_016B3790,
		CommitTime:  1700000000123456,
		Chunk:       2,
		Last:        true,
		Relations:   []stream.Relation{accounts, audit},
		Changes: []stream.Change{
			{Op: stream.OpInsert, Rel: 0, New: stream.Tuple{text("1"), text(""), null}},
			{Op: stream.OpUpdate, Rel: 0, New: stream.Tuple{text("1"), text("bob"), unchanged}},
			{Op: stream.OpUpdate, Rel: 0, New: stream.Tuple{text("2"), text("bob"), unchanged}, Old: stream.Tuple{text("1"), null, null}},
			{Op: stream.OpUpdate, Rel: 0, New: stream.Tuple{text("2"), text("eve"), text("{}")}, Old: stream.Tuple{text("2"), text("bob"), text("{}")}, OldFull: true},
			{Op: stream.OpDelete, Rel: 1, Old: stream.Tuple{text("2024-01-01 00:00:00+00")}},
			{Op: stream.OpDelete, Rel: 0, Old: stream.Tuple{text("2"), text("eve"), null}, OldFull: true},
			{Op: stream.OpTruncate, Truncated: []int{1, 0}, TruncateFlags: stream.TruncateCascade | stream.TruncateRestartIdentity},
		},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	base := func(rels []stream.Relation, changes ...stream.Change) *stream.Txn {
		return &stream.Txn{
			V: stream.WireVersion, Origin: "n1", OriginSysID: 1, XID: 2,
			CommitLSN: 0x10, EndLSN: 0x18, CommitTime: 3, Last: true,
			Relations: rels, Changes: changes,
		}
	}
	one := []stream.Relation{accounts}
	tests := []struct {
		name string
		txn  *stream.Txn
	}{
		{"every op and datum kind", fullTxn()},
		{"insert with text, empty text and NULL", base(one,
			stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("1"), text(""), null}})},
		{"insert with unchanged TOAST", base(one,
			stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("1"), unchanged, unchanged}})},
		{"binary-unsafe text", base(one,
			stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("\x00\xff\xc0"), text(strings.Repeat("x", 70000)), text("é")}})},
		{"update without old key", base(one,
			stream.Change{Op: stream.OpUpdate, New: stream.Tuple{text("1"), text("a"), null}})},
		{"update with old key", base(one,
			stream.Change{Op: stream.OpUpdate, New: stream.Tuple{text("2"), text("a"), null}, Old: stream.Tuple{text("1"), null, null}})},
		{"update with old full row", base(one,
			stream.Change{Op: stream.OpUpdate, New: stream.Tuple{text("1"), text("b"), null}, Old: stream.Tuple{text("1"), text("a"), null}, OldFull: true})},
		{"delete by key", base(one,
			stream.Change{Op: stream.OpDelete, Old: stream.Tuple{text("1"), null, null}})},
		{"delete with old full row", base(one,
			stream.Change{Op: stream.OpDelete, Old: stream.Tuple{text("1"), text("a"), unchanged}, OldFull: true})},
		{"truncate without flags", base(one,
			stream.Change{Op: stream.OpTruncate, Truncated: []int{0}})},
		{"truncate cascade", base([]stream.Relation{accounts, audit},
			stream.Change{Op: stream.OpTruncate, Truncated: []int{0, 1}, TruncateFlags: stream.TruncateCascade})},
		{"truncate restart identity", base(one,
			stream.Change{Op: stream.OpTruncate, Truncated: []int{0}, TruncateFlags: stream.TruncateRestartIdentity})},
		{"no relations and no changes", base(nil)},
		{"first chunk, not last", func() *stream.Txn {
			txn := base(one, stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("1"), null, null}})
			txn.Chunk, txn.Last, txn.EndLSN = 0, false, 0
			return txn
		}()},
		{"middle chunk", func() *stream.Txn {
			txn := base(one, stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("1"), null, null}})
			txn.Chunk, txn.Last = 5, false
			return txn
		}()},
		{"largest values", func() *stream.Txn {
			txn := base([]stream.Relation{{Schema: "", Table: "t", Columns: []stream.Column{{Name: "c", TypeOID: ^uint32(0), Key: true}}}},
				stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("v")}})
			txn.OriginSysID, txn.XID, txn.CommitLSN, txn.EndLSN = ^uint64(0), ^uint32(0), ^pglogrepl.LSN(0), ^pglogrepl.LSN(0)
			txn.CommitTime, txn.Chunk = -1, 1<<40
			return txn
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := stream.Encode(tt.txn)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := stream.Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if want := tt.txn; !reflect.DeepEqual(got, want) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestEncodeStampsVersion(t *testing.T) {
	txn := fullTxn()
	txn.V = 0
	b, err := stream.Encode(txn)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	got, err := stream.Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got.V != stream.WireVersion {
		t.Errorf("got version %d, want %d", got.V, stream.WireVersion)
	}
}

// TestEmptyTextIsNotNull checks that an empty text value stays an empty
// string, whether its data is an empty slice or nil.
func TestEmptyTextIsNotNull(t *testing.T) {
	tests := []struct {
		name  string
		datum stream.Datum
	}{
		{"empty data", stream.Datum{Kind: stream.DatumText, Data: []byte{}}},
		{"nil data", stream.Datum{Kind: stream.DatumText}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txn := fullTxn()
			txn.Changes[0].New[1] = tt.datum
			b, err := stream.Encode(txn)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := stream.Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if d := got.Changes[0].New[1]; d.Kind != stream.DatumText || d.Data == nil || len(d.Data) != 0 {
				t.Errorf("got %#v, want an empty text value", d)
			}
		})
	}
}

// marshal writes v with msgpack directly, bypassing Encode's version stamp.
func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}

func encode(t *testing.T, mutate func(*stream.Txn)) []byte {
	t.Helper()
	txn := fullTxn()
	mutate(txn)
	b, err := stream.Encode(txn)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return b
}

func TestDecodeRejects(t *testing.T) {
	valid := encode(t, func(*stream.Txn) {})
	withVersion := func(v int) []byte {
		txn := fullTxn()
		txn.V = v
		return marshal(t, txn)
	}
	tests := []struct {
		name string
		body []byte
	}{
		{"version 0", withVersion(0)},
		{"version 3", withVersion(3)},
		{"negative version", withVersion(-1)},
		{"no version field", marshal(t, map[string]any{"on": "n1", "os": 1, "l": 16})},
		{"missing origin", encode(t, func(x *stream.Txn) { x.Origin = "" })},
		{"missing origin sysid", encode(t, func(x *stream.Txn) { x.OriginSysID = 0 })},
		{"missing commit LSN", encode(t, func(x *stream.Txn) { x.CommitLSN = 0 })},
		{"negative chunk", encode(t, func(x *stream.Txn) { x.Chunk = -1 })},
		{"relation without table", encode(t, func(x *stream.Txn) {
			x.Relations = append(x.Relations, stream.Relation{Schema: "s", Columns: accounts.Columns})
		})},
		{"relation without columns", encode(t, func(x *stream.Txn) {
			x.Relations = append(x.Relations, stream.Relation{Schema: "s", Table: "t"})
		})},
		{"relation index past the end", encode(t, func(x *stream.Txn) { x.Changes[0].Rel = 2 })},
		{"negative relation index", encode(t, func(x *stream.Txn) { x.Changes[0].Rel = -1 })},
		{"change without relations", encode(t, func(x *stream.Txn) { x.Relations = nil })},
		{"insert with too few values", encode(t, func(x *stream.Txn) { x.Changes[0].New = x.Changes[0].New[:2] })},
		{"insert with too many values", encode(t, func(x *stream.Txn) { x.Changes[0].New = append(x.Changes[0].New, null) })},
		{"insert without values", encode(t, func(x *stream.Txn) { x.Changes[0].New = nil })},
		{"update with short new row", encode(t, func(x *stream.Txn) { x.Changes[1].New = x.Changes[1].New[:1] })},
		{"update with short old key", encode(t, func(x *stream.Txn) { x.Changes[2].Old = x.Changes[2].Old[:1] })},
		{"delete with short old key", encode(t, func(x *stream.Txn) { x.Changes[4].Old = stream.Tuple{null, null} })},
		{"delete without old key", encode(t, func(x *stream.Txn) { x.Changes[5].Old = nil })},
		{"unknown op", encode(t, func(x *stream.Txn) { x.Changes[0].Op = 'X' })},
		{"zero op", encode(t, func(x *stream.Txn) { x.Changes[0].Op = 0 })},
		{"truncate of no relation", encode(t, func(x *stream.Txn) { x.Changes[6].Truncated = nil })},
		{"truncate relation past the end", encode(t, func(x *stream.Txn) { x.Changes[6].Truncated = []int{0, 2} })},
		{"truncate negative relation", encode(t, func(x *stream.Txn) { x.Changes[6].Truncated = []int{-1} })},
		{"tuple is not an array", marshal(t, map[string]any{
			"v": 1, "on": "n", "os": 1, "l": 1,
			"rs": []stream.Relation{audit},
			"cs": []map[string]any{{"o": 'I', "r": 0, "n": "abc"}},
		})},
		{"datum is a number", marshal(t, map[string]any{
			"v": 1, "on": "n", "os": 1, "l": 1,
			"rs": []stream.Relation{audit},
			"cs": []map[string]any{{"o": 'I', "r": 0, "n": []any{42}}},
		})},
		{"version is a string", marshal(t, map[string]any{"v": "1", "on": "n", "os": 1, "l": 1})},
		{"empty body", []byte{}},
		{"msgpack nil", []byte{0xc0}},
		{"msgpack empty map", []byte{0x80}},
		{"msgpack array", []byte{0x91, 0x01}},
		{"msgpack number", []byte{0x2a}},
		{"JSON", []byte(`{"v":1,"on":"n1","os":1,"l":16}`)},
		{"text", []byte("hello, world")},
		{"reserved code", []byte{0xc1}},
		{"truncated after map header", valid[:1]},
		{"truncated in the middle", valid[:len(valid)/2]},
		{"truncated by one byte", valid[:len(valid)-1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := stream.Decode(tt.body)
			if !errors.Is(err, stream.ErrMalformed) {
				t.Fatalf("got error %v, want one wrapping ErrMalformed", err)
			}
			if got != nil {
				t.Errorf("got %+v with the error, want nil", got)
			}
		})
	}
}

func TestDecodeRejectsEveryTruncation(t *testing.T) {
	valid := encode(t, func(*stream.Txn) {})
	for n := range len(valid) {
		if _, err := stream.Decode(valid[:n]); !errors.Is(err, stream.ErrMalformed) {
			t.Errorf("first %d of %d bytes: got error %v, want one wrapping ErrMalformed", n, len(valid), err)
		}
	}
}

// TestGolden pins the bytes of fixed message bodies: the wire format is a
// contract between versions, so a change here needs a new WireVersion, and
// bodies of every earlier version must still decode. Run with -update to
// rewrite the files of the current version after a deliberate change.
func TestGolden(t *testing.T) {
	v1 := fullTxn()
	v1.V = 1
	tests := []struct {
		file string
		// body encodes the fixture in the current version; nil for a file
		// of an earlier version.
		body func(t *testing.T) []byte
		want []*stream.Txn
	}{
		{"testdata/txn_v1.golden", nil, []*stream.Txn{v1}},
		{"testdata/txn_v2.golden", func(t *testing.T) []byte {
			b, err := stream.Encode(fullTxn())
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			return b
		}, []*stream.Txn{fullTxn()}},
		{"testdata/batch_v2.golden", func(t *testing.T) []byte {
			return batchBody(t, smallTxns()...)
		}, smallTxns()},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			if tt.body != nil {
				got := hexLines(tt.body(t))
				if *update {
					if err := os.WriteFile(tt.file, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				raw, err := os.ReadFile(tt.file)
				if err != nil {
					t.Fatalf("read golden file (run with -update to create it): %v", err)
				}
				if want := string(raw); got != want {
					t.Errorf("encoding of the fixture changed (a wire format change needs a new WireVersion):\n got %s\nwant %s", got, want)
				}
			}
			raw, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			body, err := hex.DecodeString(strings.ReplaceAll(string(raw), "\n", ""))
			if err != nil {
				t.Fatalf("golden file is not hex: %v", err)
			}
			got, err := stream.DecodeMsg(body)
			if err != nil {
				t.Fatalf("DecodeMsg: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("golden body decodes to\n%+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// hexLines formats b as lower-case hex, 32 bytes a line.
func hexLines(b []byte) string {
	var s strings.Builder
	for len(b) > 0 {
		n := min(len(b), 32)
		s.WriteString(hex.EncodeToString(b[:n]))
		s.WriteByte('\n')
		b = b[n:]
	}
	return s.String()
}

func TestMsgID(t *testing.T) {
	tests := []struct {
		name  string
		sysid uint64
		lsn   pglogrepl.LSN
		chunk int
		want  string
	}{
		{"whole transaction", 7301234567890123456, 0x1_016B3748, 0, "7301234567890123456:1/16B3748"},
		{"first chunk", 7, 0x16B3748, 0, "7:0/16B3748"},
		{"second chunk", 7, 0x16B3748, 1, "7:0/16B3748:1"},
		{"later chunk", 7, 0x16B3748, 42, "7:0/16B3748:42"},
		{"largest values", ^uint64(0), ^pglogrepl.LSN(0), 1 << 30, "18446744073709551615:FFFFFFFF/FFFFFFFF:1073741824"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txn := &stream.Txn{OriginSysID: tt.sysid, CommitLSN: tt.lsn, Chunk: tt.chunk}
			if got := txn.MsgID(); got != tt.want {
				t.Fatalf("MsgID: got %q, want %q", got, tt.want)
			}
			sysid, lsn, chunk, ok := stream.ParseMsgID(tt.want)
			if !ok || sysid != tt.sysid || lsn != tt.lsn || chunk != tt.chunk {
				t.Errorf("ParseMsgID(%q): got %d, %s, %d, %t; want %d, %s, %d, true",
					tt.want, sysid, lsn, chunk, ok, tt.sysid, tt.lsn, tt.chunk)
			}
		})
	}
}

func TestParseMsgIDRejects(t *testing.T) {
	parked := stream.ParkedMsg("g", "a", "b", 3, "s", nil, errors.New("x")).Header.Get(stream.HeaderMsgID)
	for _, id := range []string{
		"",
		"7",
		":",
		"7:",
		":0/1",
		"x:0/1",
		"-7:0/1",
		"18446744073709551616:0/1", // sysid overflows uint64
		"7:0",
		"7:/1",
		"7:G/1",
		"7:0/1:0", // chunk 0 has no suffix
		"7:0/1:-1",
		"7:0/1:x",
		"7:0/1:",
		"7:0/1:2:3",
		parked,
	} {
		t.Run(id, func(t *testing.T) {
			if sysid, lsn, chunk, ok := stream.ParseMsgID(id); ok {
				t.Errorf("ParseMsgID(%q): got %d, %s, %d, true; want ok false", id, sysid, lsn, chunk)
			}
		})
	}
}

// TestParseMsgIDRejectsNonCanonical checks that only the exact form MsgID
// writes is accepted: one id per message, so de-duplication cannot be fooled.
func TestParseMsgIDRejectsNonCanonical(t *testing.T) {
	for _, id := range []string{
		"7:0/1zz",       // trailing garbage after the LSN
		"7:0/1\n",       // trailing newline
		"7: 0/1",        // space before the LSN
		"7:0/ 1",        // space inside the LSN
		"7:0/100000000", // low half overflows into the high half: same LSN as 1/0
		"7:0/1:+2",      // sign on the chunk
	} {
		t.Run(id, func(t *testing.T) {
			if sysid, lsn, chunk, ok := stream.ParseMsgID(id); ok {
				t.Errorf("ParseMsgID(%q): got %d, %s, %d, true; want ok false (MsgID writes %q)",
					id, sysid, lsn, chunk, (&stream.Txn{OriginSysID: sysid, CommitLSN: lsn, Chunk: chunk}).MsgID())
			}
		})
	}
}

func TestNewMsg(t *testing.T) {
	pub := func(schema, table string) stream.Relation {
		return stream.Relation{Schema: schema, Table: table, Columns: []stream.Column{{Name: "id", TypeOID: 23, Key: true}}}
	}
	tests := []struct {
		name string
		txn  *stream.Txn
		want map[string]string // "" means the header is absent
	}{
		{
			name: "whole transaction",
			txn:  fullTxn(),
			want: map[string]string{
				stream.HeaderMsgID:      "7301234567890123456:1/16B3748:2",
				stream.HeaderOrigin:     "node-a",
				stream.HeaderCommitLSN:  "1/16B3748",
				stream.HeaderCommitTime: "2023-11-14T22:13:20.123456Z",
				stream.HeaderTables:     "app.audit,public.accounts",
				stream.HeaderChunk:      "2",
				stream.HeaderLastChunk:  "true",
				stream.HeaderTxns:       "1",
			},
		},
		{
			name: "first chunk with repeated relations",
			txn: &stream.Txn{
				Origin: "n1", OriginSysID: 9, CommitLSN: 0x2A, CommitTime: 0,
				Relations: []stream.Relation{pub("public", "b"), pub("public", "a"), pub("public", "b"), pub("a", "z")},
			},
			want: map[string]string{
				stream.HeaderMsgID:      "9:0/2A",
				stream.HeaderOrigin:     "n1",
				stream.HeaderCommitLSN:  "0/2A",
				stream.HeaderCommitTime: "1970-01-01T00:00:00Z",
				stream.HeaderTables:     "a.z,public.a,public.b",
				stream.HeaderChunk:      "0",
				stream.HeaderLastChunk:  "false",
				stream.HeaderTxns:       "1",
			},
		},
		{
			name: "no relations",
			txn: &stream.Txn{
				Origin: "n1", OriginSysID: 9, CommitLSN: 0x2A, CommitTime: 1_000_001, Last: true,
			},
			want: map[string]string{
				stream.HeaderMsgID:      "9:0/2A",
				stream.HeaderOrigin:     "n1",
				stream.HeaderCommitLSN:  "0/2A",
				stream.HeaderCommitTime: "1970-01-01T00:00:01.000001Z",
				stream.HeaderTables:     "",
				stream.HeaderChunk:      "0",
				stream.HeaderLastChunk:  "true",
				stream.HeaderTxns:       "1",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := stream.NewMsg("pgactive.g.n1.txn", tt.txn)
			if err != nil {
				t.Fatalf("NewMsg: %v", err)
			}
			if got, want := m.Subject, "pgactive.g.n1.txn"; got != want {
				t.Errorf("subject: got %q, want %q", got, want)
			}
			for name, want := range tt.want {
				if got := m.Header.Get(name); got != want {
					t.Errorf("header %s: got %q, want %q", name, got, want)
				}
				if _, ok := m.Header[name]; ok != (want != "") {
					t.Errorf("header %s present: got %t, want %t", name, ok, want != "")
				}
			}
			present := 0
			for _, v := range tt.want {
				if v != "" {
					present++
				}
			}
			if got := len(m.Header); got != present {
				t.Errorf("got %d headers, want %d: %v", got, present, m.Header)
			}
			body, err := stream.Encode(tt.txn)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !bytes.Equal(m.Data, body) {
				t.Errorf("body differs from Encode")
			}
			if _, err := time.Parse(time.RFC3339Nano, m.Header.Get(stream.HeaderCommitTime)); err != nil {
				t.Errorf("commit time header: %v", err)
			}
		})
	}
}

func TestParkedMsg(t *testing.T) {
	m := stream.ParkedMsg("g", "node a", "b", 42, "pgactive.g.node_a.txn", []byte{0xc1}, errors.New("bad body"))
	if got, want := m.Subject, stream.ParkedSubject("g", "node a", "b"); got != want {
		t.Errorf("subject: got %q, want %q", got, want)
	}
	if !bytes.Equal(m.Data, []byte{0xc1}) {
		t.Errorf("data: got %x, want c1", m.Data)
	}
	for name, want := range map[string]string{
		stream.HeaderParkedSubject: "pgactive.g.node_a.txn",
		stream.HeaderParkedSeq:     "42",
		stream.HeaderParkedError:   "bad body",
		stream.HeaderMsgID:         "parked:node_a:b:42",
	} {
		if got := m.Header.Get(name); got != want {
			t.Errorf("header %s: got %q, want %q", name, got, want)
		}
	}
}
