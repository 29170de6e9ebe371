package stream

import (
	"bytes"
	"encoding"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/vmihailenco/msgpack/v5"
)

// The lib types mirror Txn, Relation, Column and Change field for field, tag
// for tag, with no methods: msgpack encodes them by reflection, whatever
// methods the real types gain, and so defines the bytes appendTxn must write.
// Tuple keeps its EncodeMsgpack and DecodeMsgpack, which are the format.
type libTxn struct {
	V           int           `msgpack:"v"`
	Origin      string        `msgpack:"on"`
	OriginSysID uint64        `msgpack:"os"`
	XID         uint32        `msgpack:"x"`
	CommitLSN   pglogrepl.LSN `msgpack:"l"`
	EndLSN      pglogrepl.LSN `msgpack:"e"`
	CommitTime  int64         `msgpack:"ct"`
	Chunk       int           `msgpack:"ch,omitempty"`
	Last        bool          `msgpack:"la"`
	Relations   []libRelation `msgpack:"rs"`
	Changes     []libChange   `msgpack:"cs"`
}

type libRelation struct {
	Schema  string      `msgpack:"s"`
	Table   string      `msgpack:"t"`
	Columns []libColumn `msgpack:"c"`
}

type libColumn struct {
	Name    string `msgpack:"n"`
	TypeOID uint32 `msgpack:"t"`
	Key     bool   `msgpack:"k,omitempty"`
}

type libChange struct {
	Op            Op     `msgpack:"o"`
	Rel           int    `msgpack:"r"`
	New           Tuple  `msgpack:"n,omitempty"`
	Old           Tuple  `msgpack:"x,omitempty"`
	OldFull       bool   `msgpack:"f,omitempty"`
	Truncated     []int  `msgpack:"tr,omitempty"`
	TruncateFlags uint8  `msgpack:"tf,omitempty"`
	Prefix        string `msgpack:"p,omitempty"`
	Content       []byte `msgpack:"m,omitempty"`
}

func toLib(t *Txn) *libTxn {
	l := &libTxn{V: t.V, Origin: t.Origin, OriginSysID: t.OriginSysID, XID: t.XID, CommitLSN: t.CommitLSN,
		EndLSN: t.EndLSN, CommitTime: t.CommitTime, Chunk: t.Chunk, Last: t.Last}
	if t.Relations != nil {
		l.Relations = make([]libRelation, len(t.Relations))
		for i, r := range t.Relations {
			l.Relations[i] = libRelation{Schema: r.Schema, Table: r.Table}
			if r.Columns != nil {
				l.Relations[i].Columns = make([]libColumn, len(r.Columns))
				for j, c := range r.Columns {
					l.Relations[i].Columns[j] = libColumn(c)
				}
			}
		}
	}
	if t.Changes != nil {
		l.Changes = make([]libChange, len(t.Changes))
		for i, c := range t.Changes {
			l.Changes[i] = libChange(c)
		}
	}
	return l
}

func fromLib(l *libTxn) *Txn {
	t := &Txn{V: l.V, Origin: l.Origin, OriginSysID: l.OriginSysID, XID: l.XID, CommitLSN: l.CommitLSN,
		EndLSN: l.EndLSN, CommitTime: l.CommitTime, Chunk: l.Chunk, Last: l.Last}
	if l.Relations != nil {
		t.Relations = make([]Relation, len(l.Relations))
		for i, r := range l.Relations {
			t.Relations[i] = Relation{Schema: r.Schema, Table: r.Table}
			if r.Columns != nil {
				t.Relations[i].Columns = make([]Column, len(r.Columns))
				for j, c := range r.Columns {
					t.Relations[i].Columns[j] = Column(c)
				}
			}
		}
	}
	if l.Changes != nil {
		t.Changes = make([]Change, len(l.Changes))
		for i, c := range l.Changes {
			t.Changes[i] = Change(c)
		}
	}
	return t
}

// libMarshal is msgpack.Marshal(t) through the library's reflection.
func libMarshal(t testing.TB, txn *Txn) []byte {
	t.Helper()
	b, err := msgpack.Marshal(toLib(txn))
	if err != nil {
		t.Fatalf("msgpack.Marshal: %v", err)
	}
	return b
}

// canonical returns what decoding t's encoding yields: omitempty cannot tell
// an empty tuple, list or content from none, and a text value is never nil.
func canonical(t *Txn) *Txn {
	c := fromLib(toLib(t)) // a copy with the same nil and empty slices
	for i := range c.Changes {
		ch := &c.Changes[i]
		ch.New, ch.Old = canonicalTuple(ch.New), canonicalTuple(ch.Old)
		if len(ch.Truncated) == 0 {
			ch.Truncated = nil
		}
		if len(ch.Content) == 0 {
			ch.Content = nil
		}
	}
	return c
}

func canonicalTuple(t Tuple) Tuple {
	if len(t) == 0 {
		return nil
	}
	out := make(Tuple, len(t))
	for i, d := range t {
		switch d.Kind {
		case DatumNull, DatumUnchanged:
			out[i] = Datum{Kind: d.Kind}
		default:
			out[i] = Datum{Kind: DatumText, Data: append([]byte{}, d.Data...)}
		}
	}
	return out
}

// TestMirrorUsesReflection checks that nothing in the lib types but Tuple has
// a method msgpack would call instead of reflecting.
func TestMirrorUsesReflection(t *testing.T) {
	custom := []reflect.Type{
		reflect.TypeFor[msgpack.CustomEncoder](), reflect.TypeFor[msgpack.Marshaler](),
		reflect.TypeFor[encoding.BinaryMarshaler](), reflect.TypeFor[encoding.TextMarshaler](),
	}
	var check func(typ reflect.Type)
	check = func(typ reflect.Type) {
		if typ == reflect.TypeFor[Tuple]() {
			return
		}
		for _, c := range custom {
			if typ.Implements(c) || reflect.PointerTo(typ).Implements(c) {
				t.Errorf("%s implements %s: msgpack would not use reflection for it", typ, c)
			}
		}
		switch typ.Kind() {
		case reflect.Struct:
			for i := range typ.NumField() {
				check(typ.Field(i).Type)
			}
		case reflect.Slice:
			if typ.Elem().Kind() != reflect.Uint8 {
				check(typ.Elem())
			}
		}
	}
	check(reflect.TypeFor[libTxn]())
}

// lengths are the string and value lengths around msgpack's header limits.
var lengths = []int{0, 1, 31, 32, 255, 256, 300, 65535, 65536, 70000}

// ints are the integers around msgpack's encoding limits.
var ints = []int64{0, 1, -1, 127, 128, -32, -33, 255, 256, -128, -129, 65535, 65536, -32768, -32769,
	math.MaxUint32, math.MaxUint32 + 1, math.MinInt32, math.MinInt32 - 1, math.MaxInt64, math.MinInt64}

// edgeTxns are transactions at the edges of the format, most of them not
// valid for Decode's checks.
func edgeTxns() map[string]*Txn {
	cols20 := make([]Column, 20)
	row20 := make(Tuple, 20)
	for i := range cols20 {
		cols20[i] = Column{Name: "c" + string(rune('a'+i)), TypeOID: uint32(i * 1000), Key: i%3 == 0}
		row20[i] = Datum{Kind: DatumKind(i % 3), Data: []byte(strings.Repeat("v", i*5))}
	}
	wide := Relation{Schema: "wide", Table: "twenty", Columns: cols20}
	base := func() *Txn {
		return &Txn{V: 1, Origin: "n1", OriginSysID: 1, CommitLSN: 16, Relations: []Relation{wide}}
	}
	with := func(f func(*Txn)) *Txn { t := base(); f(t); return t }
	txns := map[string]*Txn{
		"zero":                   {},
		"empty lists":            {Relations: []Relation{}, Changes: []Change{}},
		"relation without lists": {Relations: []Relation{{}, {Columns: []Column{}}}},
		"largest values": {V: math.MaxInt, Origin: "ü", OriginSysID: math.MaxUint64, XID: math.MaxUint32,
			CommitLSN: math.MaxUint64, EndLSN: math.MaxUint64, CommitTime: math.MinInt64, Chunk: math.MinInt, Last: true},
		"negative commit time": with(func(t *Txn) { t.CommitTime = -1_700_000_000_000_000 }),
		"later chunk":          with(func(t *Txn) { t.Chunk, t.Last = 3, true }),
		"unicode": with(func(t *Txn) {
			t.Origin = "nœud-日本-🚀"
			t.Relations[0].Schema, t.Relations[0].Table = "схема", "表"
		}),
		"every op": with(func(t *Txn) {
			t.Changes = []Change{
				{Op: OpInsert, New: row20},
				{Op: OpUpdate, New: row20, Old: row20, OldFull: true},
				{Op: OpUpdate, New: row20, Old: Tuple{}},
				{Op: OpDelete, Old: row20},
				{Op: OpTruncate, Truncated: []int{0, 0}, TruncateFlags: TruncateCascade | TruncateRestartIdentity},
				{Op: OpTruncate, Truncated: []int{}},
				{Op: OpMessage, Prefix: PrefixDDL, Content: []byte("CREATE TABLE t ()")},
				{Op: OpMessage, Prefix: "x", Content: []byte{}},
				{Op: Op(255), Rel: -1},
			}
		}),
		"text without data": with(func(t *Txn) {
			t.Changes = []Change{{Op: OpInsert, New: Tuple{{Kind: DatumText}, {Kind: DatumText, Data: []byte{}}, {Kind: 7}}}}
		}),
		"70,000 columns and indexes": with(func(t *Txn) {
			t.Changes = []Change{{Op: OpInsert, New: make(Tuple, 70000), Truncated: make([]int, 70000)}}
		}),
	}
	for _, n := range lengths {
		s := strings.Repeat("é", n/2) + strings.Repeat("x", n%2)
		txns["strings of "+strconv.Itoa(n)] = with(func(t *Txn) {
			t.Origin, t.Relations[0].Schema, t.Relations[0].Columns[0].Name = s, s, s
			t.Changes = []Change{
				{Op: OpInsert, New: Tuple{{Data: []byte(s)}}},
				{Op: OpMessage, Prefix: s, Content: []byte(s)},
			}
		})
	}
	for _, v := range ints {
		txns["integer "+strconv.Itoa(int(v))] = with(func(t *Txn) {
			t.V, t.Chunk, t.CommitTime = int(v), int(v), v
			t.OriginSysID, t.CommitLSN, t.XID = uint64(v), pglogrepl.LSN(v), uint32(v)
			t.Changes = []Change{{Op: Op(v), Rel: int(v), Truncated: []int{int(v), 0}, TruncateFlags: uint8(v)}}
		})
	}
	return txns
}

// randomTxn returns a transaction with random values of every field, not
// necessarily valid.
func randomTxn(r *rand.Rand) *Txn {
	t := &Txn{V: int(randomInt(r)), Origin: randomString(r), OriginSysID: r.Uint64(), XID: r.Uint32(),
		CommitLSN: pglogrepl.LSN(r.Uint64()), EndLSN: pglogrepl.LSN(r.Uint64()), CommitTime: randomInt(r),
		Last: r.IntN(2) == 0}
	if r.IntN(2) == 0 {
		t.Chunk = int(randomInt(r))
	}
	if n := r.IntN(5) - 1; n >= 0 {
		t.Relations = make([]Relation, n)
		for i := range t.Relations {
			t.Relations[i] = randomRelation(r)
		}
	}
	if n := r.IntN(8) - 1; n >= 0 {
		t.Changes = make([]Change, n)
		for i := range t.Changes {
			t.Changes[i] = randomChange(r)
		}
	}
	return t
}

func randomRelation(r *rand.Rand) Relation {
	rel := Relation{Schema: randomString(r), Table: randomString(r)}
	if n := r.IntN(22) - 1; n >= 0 {
		rel.Columns = make([]Column, n)
		for i := range rel.Columns {
			rel.Columns[i] = Column{Name: randomString(r), TypeOID: r.Uint32() >> r.IntN(32), Key: r.IntN(3) == 0}
		}
	}
	return rel
}

func randomChange(r *rand.Rand) Change {
	ops := []Op{OpInsert, OpUpdate, OpDelete, OpTruncate, OpMessage, Op(1 + r.IntN(255))}
	c := Change{Op: ops[r.IntN(len(ops))], Rel: int(randomInt(r)), OldFull: r.IntN(2) == 0,
		New: randomTuple(r), Old: randomTuple(r)}
	if r.IntN(2) == 0 {
		c.Truncated = make([]int, r.IntN(20))
		for i := range c.Truncated {
			c.Truncated[i] = int(randomInt(r))
		}
	}
	if r.IntN(2) == 0 {
		c.TruncateFlags = uint8(r.IntN(256))
	}
	if r.IntN(2) == 0 {
		c.Prefix, c.Content = randomString(r), []byte(randomString(r))
	}
	return c
}

func randomTuple(r *rand.Rand) Tuple {
	n := r.IntN(22) - 1
	if n < 0 {
		return nil
	}
	t := make(Tuple, n)
	for i := range t {
		switch r.IntN(6) {
		case 0:
			t[i].Kind = DatumNull
		case 1:
			t[i].Kind = DatumUnchanged
		case 2:
			t[i].Kind = DatumText // nil data: an empty value
		default:
			t[i] = Datum{Kind: DatumText, Data: []byte(randomString(r))}
		}
	}
	return t
}

func randomInt(r *rand.Rand) int64 {
	if r.IntN(2) == 0 {
		return ints[r.IntN(len(ints))]
	}
	return r.Int64() >> r.IntN(64)
}

func randomString(r *rand.Rand) string {
	n := lengths[r.IntN(len(lengths)-3)] // long strings are rare
	if r.IntN(50) == 0 {
		n = lengths[r.IntN(len(lengths))]
	}
	n = r.IntN(n + 1)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if r.IntN(3) == 0 {
		return strings.ToValidUTF8(string(b), "ä")
	}
	return string(b)
}

// testTxns returns the edge cases and count random transactions.
func testTxns(count int) map[string]*Txn {
	txns := edgeTxns()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range count {
		txns["random "+strconv.Itoa(i)] = randomTxn(r)
	}
	return txns
}

// TestAppendTxnMatchesLibrary checks that appendTxn writes the library's
// bytes, and that encodedSize is their length.
func TestAppendTxnMatchesLibrary(t *testing.T) {
	for name, txn := range testTxns(2000) {
		want := libMarshal(t, txn)
		got := appendTxn(nil, txn)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: appendTxn differs from msgpack.Marshal at byte %d of %d\n got %x\nwant %x",
				name, firstDiff(got, want), len(want), head(got), head(want))
		}
		size, err := encodedSize(txn)
		if err != nil || size != len(want) {
			t.Errorf("%s: encodedSize = %d, %v; want %d, nil", name, size, err, len(want))
		}
		if prefixed := appendTxn([]byte("prefix"), txn); !bytes.Equal(prefixed[6:], want) {
			t.Errorf("%s: appendTxn to a non-empty slice differs", name)
		}
	}
}

// TestDecodeLibraryBytes checks that the decoder reads the library's bytes
// into the original transaction.
func TestDecodeLibraryBytes(t *testing.T) {
	for name, txn := range testTxns(2000) {
		txn = decodable(txn)
		got, err := decodeTxn(libMarshal(t, txn))
		if err != nil {
			t.Fatalf("%s: decode: %v", name, err)
		}
		if want := canonical(txn); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: decoded\n%+v\nwant %+v", name, got, want)
		}
	}
}

// decodable returns a copy of t without what the decoder rejects early,
// because validate would: a relation without a name or columns, a change
// without an op.
func decodable(t *Txn) *Txn {
	c := fromLib(toLib(t))
	for i := range c.Relations {
		r := &c.Relations[i]
		if r.Table == "" {
			r.Table = "t"
		}
		if len(r.Columns) == 0 {
			r.Columns = []Column{{Name: "c"}}
		}
	}
	for i := range c.Changes {
		if c.Changes[i].Op == 0 {
			c.Changes[i].Op = OpInsert
		}
	}
	return c
}

// TestLibraryDecodesAppendTxn checks that the library reads appendTxn's bytes
// into the original transaction.
func TestLibraryDecodesAppendTxn(t *testing.T) {
	for name, txn := range testTxns(2000) {
		var l libTxn
		if err := msgpack.Unmarshal(appendTxn(nil, txn), &l); err != nil {
			t.Fatalf("%s: msgpack.Unmarshal: %v", name, err)
		}
		if got, want := fromLib(&l), canonical(txn); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: library decoded\n%+v\nwant %+v", name, got, want)
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func head(b []byte) []byte { return b[:min(len(b), 64)] }

// validTxn returns a random transaction that Decode accepts.
func validTxn(r *rand.Rand) *Txn {
	t := decodable(randomTxn(r))
	t.V = WireVersion
	if t.Origin == "" {
		t.Origin = "n1"
	}
	t.OriginSysID |= 1
	t.CommitLSN |= 1
	t.Chunk = max(t.Chunk, 0)
	for i := range t.Changes {
		validChange(r, t, &t.Changes[i])
	}
	return t
}

func validChange(r *rand.Rand, t *Txn, c *Change) {
	ops := []Op{OpInsert, OpUpdate, OpDelete, OpTruncate, OpMessage}
	c.Op = ops[r.IntN(len(ops))]
	if len(t.Relations) == 0 {
		c.Op = OpMessage
	}
	switch c.Op {
	case OpMessage:
		if c.Prefix == "" {
			c.Prefix = PrefixDDL
		}
		return
	case OpTruncate:
		c.Truncated = make([]int, 1+r.IntN(3))
		for i := range c.Truncated {
			c.Truncated[i] = r.IntN(len(t.Relations))
		}
		return
	}
	c.Rel = r.IntN(len(t.Relations))
	n := len(t.Relations[c.Rel].Columns)
	c.New, c.Old = fit(c.New, n), fit(c.Old, n)
	if c.Op == OpUpdate && r.IntN(2) == 0 {
		c.Old = nil
	}
}

// fit returns t cut or padded with NULLs to n values.
func fit(t Tuple, n int) Tuple {
	out := make(Tuple, n)
	for i := range out {
		if i < len(t) {
			out[i] = t[i]
		} else {
			out[i] = Datum{Kind: DatumNull}
		}
	}
	return out
}

// checkRoundTrip checks that Encode writes the library's bytes for txn and
// that Decode reads them back.
func checkRoundTrip(t *testing.T, txn *Txn) {
	t.Helper()
	b, err := Encode(txn)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if want := libMarshal(t, txn); !bytes.Equal(b, want) {
		t.Fatalf("Encode differs from msgpack.Marshal at byte %d of %d", firstDiff(b, want), len(want))
	}
	if len(b) != cap(b) {
		t.Errorf("Encode returned %d bytes with capacity %d", len(b), cap(b))
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if want := canonical(txn); !reflect.DeepEqual(got, want) {
		t.Fatalf("Decode(Encode(x)):\n got %+v\nwant %+v", got, want)
	}
	again, err := Encode(got)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if !bytes.Equal(again, b) {
		t.Fatalf("Encode(Decode(b)) differs from b at byte %d", firstDiff(again, b))
	}
}

// TestEncodeDecodeProperty checks Decode(Encode(x)) == x for random valid
// transactions.
func TestEncodeDecodeProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		checkRoundTrip(t, validTxn(r))
	}
}

// FuzzEncodeDecode explores the random valid transactions further:
// go test -run '^$' -fuzz FuzzEncodeDecode ./stream/
func FuzzEncodeDecode(f *testing.F) {
	for i := range uint64(8) {
		f.Add(i, i*i)
	}
	f.Fuzz(func(t *testing.T, seed1, seed2 uint64) {
		checkRoundTrip(t, validTxn(rand.New(rand.NewPCG(seed1, seed2))))
	})
}

// FuzzDecodeMatchesLibrary checks that whatever the decoder accepts, the
// library reads to the same transaction, and that it re-encodes as the
// library would.
func FuzzDecodeMatchesLibrary(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 8 {
		txn := validTxn(r)
		if b := libMarshal(f, txn); len(b) < 4096 {
			f.Add(b)
			f.Add(compactMarshal(f, txn))
		}
	}
	for _, b := range equivalentBodies(f) {
		f.Add(b.body)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeTxn(b)
		if err != nil {
			return
		}
		var l libTxn
		if err := msgpack.Unmarshal(b, &l); err != nil {
			t.Fatalf("decoder accepts %x, the library does not: %v", b, err)
		}
		if want := canonical(fromLib(&l)); !reflect.DeepEqual(got, want) {
			t.Fatalf("decoded %x to\n%+v\nthe library to\n%+v", b, got, want)
		}
		if again, want := appendTxn(nil, got), libMarshal(t, got); !bytes.Equal(again, want) {
			t.Fatalf("re-encoding differs from the library's at byte %d", firstDiff(again, want))
		}
	})
}

// compactMarshal encodes txn with the library's smallest integers, where
// Encode writes uint8, uint32, uint64 and int64 at full width.
func compactMarshal(t testing.TB, txn *Txn) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(toLib(txn)); err != nil {
		t.Fatalf("encode: %v", err)
	}
	return buf.Bytes()
}

// mapBody encodes key, value pairs in order as a msgpack map. A
// msgpack.RawMessage value is written as it is.
func mapBody(t testing.TB, kv ...any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	err := enc.EncodeMapLen(len(kv) / 2)
	for i := 0; i+1 < len(kv) && err == nil; i += 2 {
		if err = enc.EncodeString(kv[i].(string)); err == nil {
			err = enc.Encode(kv[i+1])
		}
	}
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return buf.Bytes()
}

// raw is msgpack bytes to embed in a mapBody.
func raw(b ...byte) msgpack.RawMessage { return b }

type equivalentBody struct {
	name string
	body []byte
	want *Txn
}

// equivalentBodies are bodies the library encoder does not write for a Txn
// but decodes to one: other integer widths, strings for binaries and back,
// nil for empty values, unknown fields.
func equivalentBodies(t testing.TB) []equivalentBody {
	minimal := &Txn{V: 1, Origin: "n1", OriginSysID: 1, CommitLSN: 16}
	audit := Relation{Schema: "app", Table: "audit", Columns: []Column{{Name: "at", TypeOID: 1184, Key: true}}}
	withAudit := func(changes ...Change) *Txn {
		return &Txn{V: 1, Origin: "n1", OriginSysID: 1, CommitLSN: 16, Relations: []Relation{audit}, Changes: changes}
	}
	ts := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	auditBody := []any{map[string]any{"s": "app", "t": "audit", "c": []any{map[string]any{"n": "at", "t": 1184, "k": true}}}}
	bodies := []equivalentBody{
		{"minimal", mapBody(t, "v", 1, "on", "n1", "os", 1, "l", 16), minimal},
		{"integers of every width", mapBody(t, "v", int64(1), "on", "n1", "os", uint8(1), "x", int16(300),
			"l", int32(16), "e", uint16(17), "ct", int8(-100), "ch", uint64(2)),
			&Txn{V: 1, Origin: "n1", OriginSysID: 1, XID: 300, CommitLSN: 16, EndLSN: 17, CommitTime: -100, Chunk: 2}},
		{"wide integers", mapBody(t, "v", raw(0xd3, 0, 0, 0, 0, 0, 0, 0, 1), "on", "n1", "os", raw(0xcf, 0, 0, 0, 0, 0, 0, 0, 1),
			"l", raw(0xd2, 0, 0, 0, 16), "ct", raw(0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), "x", raw(0xd1, 0x7f, 0xff)),
			&Txn{V: 1, Origin: "n1", OriginSysID: 1, CommitLSN: 16, CommitTime: math.MaxInt64, XID: 0x7fff}},
		{"negative fixint and int64", mapBody(t, "v", 1, "on", "n1", "os", 1, "l", 16, "ct", raw(0xe0)),
			&Txn{V: 1, Origin: "n1", OriginSysID: 1, CommitLSN: 16, CommitTime: -32}},
		{"nil for zero values", mapBody(t, "v", 1, "on", "n1", "os", 1, "l", 16, "x", nil, "e", nil, "ct", nil, "ch", nil,
			"la", nil, "rs", nil, "cs", nil), minimal},
		{"binary strings and str32", mapBody(t, "v", 1, "on", []byte("n1"), "os", 1, "l", 16,
			"rs", []any{map[string]any{"s": []byte("app"), "t": raw(0xdb, 0, 0, 0, 5, 'a', 'u', 'd', 'i', 't'),
				"c": []any{map[string]any{"n": raw(0xc4, 2, 'a', 't'), "t": uint16(1184), "k": true}}}}),
			&Txn{V: 1, Origin: "n1", OriginSysID: 1, CommitLSN: 16, Relations: []Relation{audit}}},
		{"map16 and array32 headers", append(raw(0xde, 0, 5), mapBody(t, "v", 1, "on", "n1", "os", 1, "l", 16,
			"cs", raw(0xdd, 0, 0, 0, 0))[1:]...), &Txn{V: 1, Origin: "n1", OriginSysID: 1, CommitLSN: 16, Changes: []Change{}}},
		{"unknown fields of every type", mapBody(t, "zz", map[string]any{"a": []any{nil, true, 1.5, float32(2), ts, "s", []byte{1}}},
			"v", 1, "on", "n1", "os", 1, "l", 16, "", raw(0xc7, 1, 5, 0), "q", raw(0xc9, 0, 0, 0, 0, 1), "w", raw(0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
			"rs", []any{map[string]any{"s": "app", "t": "audit", "x": []any{[]any{[]any{}}}, "c": []any{map[string]any{"n": "at", "t": 1184, "k": true, "y": -1}}}},
			"cs", []any{map[string]any{"o": 'M', "p": PrefixDDL, "zz": map[string]any{}}}),
			&Txn{V: 1, Origin: "n1", OriginSysID: 1, CommitLSN: 16, Relations: []Relation{audit}, Changes: []Change{{Op: OpMessage, Prefix: PrefixDDL}}}},
		{"tuple values as strings, true for unchanged", mapBody(t, "v", 1, "on", "n1", "os", 1, "l", 16, "rs", auditBody,
			"cs", []any{
				map[string]any{"o": 'I', "n": []any{"2024"}},
				map[string]any{"o": 'U', "n": []any{true}, "x": []any{nil}, "f": true},
				map[string]any{"o": 'D', "x": []any{raw(0xd9, 0)}},
			}),
			withAudit(
				Change{Op: OpInsert, New: Tuple{{Kind: DatumText, Data: []byte("2024")}}},
				Change{Op: OpUpdate, New: Tuple{{Kind: DatumUnchanged}}, Old: Tuple{{Kind: DatumNull}}, OldFull: true},
				Change{Op: OpDelete, Old: Tuple{{Kind: DatumText, Data: []byte{}}}})},
		{"empty tuples, lists and content", mapBody(t, "v", 1, "on", "n1", "os", 1, "l", 16, "rs", auditBody,
			"cs", []any{
				map[string]any{"o": 'I', "n": []any{"x"}, "x": []any{}, "tr": nil, "m": []byte{}, "p": nil},
				map[string]any{"o": 'T', "tr": []any{int8(0), nil}, "tf": int64(3), "n": nil},
				map[string]any{"o": 'M', "p": []byte("pre"), "m": "content"},
			}),
			withAudit(
				Change{Op: OpInsert, New: Tuple{{Kind: DatumText, Data: []byte("x")}}},
				Change{Op: OpTruncate, Truncated: []int{0, 0}, TruncateFlags: 3},
				Change{Op: OpMessage, Prefix: "pre", Content: []byte("content")})},
	}
	return bodies
}

// TestDecodeEquivalentEncodings checks that Decode reads what another
// msgpack encoder could write for a transaction.
func TestDecodeEquivalentEncodings(t *testing.T) {
	for _, tt := range equivalentBodies(t) {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.body)
			if err != nil {
				t.Fatalf("Decode(%x): %v", tt.body, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decode(%x):\n got %+v\nwant %+v", tt.body, got, tt.want)
			}
		})
	}
	t.Run("compact integers", func(t *testing.T) {
		r := rand.New(rand.NewPCG(7, 8))
		for range 500 {
			txn := validTxn(r)
			got, err := Decode(compactMarshal(t, txn))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if want := canonical(txn); !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded\n%+v\nwant %+v", got, want)
			}
		}
	})
}

// TestDecodeRejectsMalformed checks what the decoder refuses that the
// library would read one way or another.
func TestDecodeRejectsMalformed(t *testing.T) {
	valid := func(kv ...any) []byte {
		return mapBody(t, append([]any{"v", 1, "on", "n1", "os", 1, "l", 16}, kv...)...)
	}
	nested := func(depth int) msgpack.RawMessage {
		b := bytes.Repeat([]byte{0x91}, depth-1)
		return append(b, 0x90)
	}
	dup := valid("v", 1)
	dup[0]++ // the map header counts the repeated key
	tests := []struct {
		name string
		body []byte
	}{
		{"uint32 out of range", valid("x", uint64(math.MaxUint32+1))},
		{"type OID out of range", valid("rs", []any{map[string]any{"t": "t", "c": []any{map[string]any{"t": -1}}}})},
		{"op out of range", valid("rs", []any{map[string]any{"t": "t", "c": []any{map[string]any{}}}}, "cs", []any{map[string]any{"o": 256 + 'I'}})},
		{"negative truncate flags", valid("cs", []any{map[string]any{"o": 'M', "p": "p", "tf": -1}})},
		{"negative sysid", mapBody(t, "v", 1, "on", "n1", "os", int8(-1), "l", 16)},
		{"negative LSN", mapBody(t, "v", 1, "on", "n1", "os", 1, "l", int64(math.MinInt64))},
		{"commit time out of range", valid("ct", uint64(math.MaxInt64+1))},
		{"version out of range", mapBody(t, "v", uint64(math.MaxUint64), "on", "n1", "os", 1, "l", 16)},
		{"float for an integer", valid("ch", 1.0)},
		{"integer for a boolean", valid("la", 1)},
		{"integer for a string", valid("on", 5)},
		{"map for a list", valid("rs", map[string]any{})},
		{"integer for a tuple value", valid("cs", []any{map[string]any{"o": 'M', "p": "p", "n": []any{1}}})},
		{"map for a tuple", valid("cs", []any{map[string]any{"o": 'M', "p": "p", "n": map[string]any{}}})},
		{"integer key", append(valid(), 0x01, 0x01)},
		{"struct as an array", func() []byte {
			b, err := msgpack.Marshal([]any{1, "n1", 1, 0, 16, 0, 0, 0, false, nil, nil})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}()},
		{"repeated key", dup},
		{"trailing bytes", append(valid(), 0xc0)},
		{"unknown field nested too deeply", valid("zz", nested(maxDepth))},
		{"unknown code in an unknown field", valid("zz", raw(0xc1))},
		{"str32 longer than the body", valid("zz", raw(0xdb, 0xff, 0xff, 0xff, 0xff))},
		{"bin32 longer than the body", valid("on", raw(0xc6, 0x7f, 0xff, 0xff, 0xff))},
		{"ext32 longer than the body", valid("zz", raw(0xc9, 0xff, 0xff, 0xff, 0xff, 1))},
		{"array32 longer than the body", valid("zz", raw(0xdd, 0xff, 0xff, 0xff, 0xff))},
		{"map32 longer than the body", valid("zz", raw(0xdf, 0x80, 0, 0, 0))},
		{"tuple longer than the body", valid("cs", []any{map[string]any{"o": 'M', "n": raw(0xdd, 0, 1, 0, 0)}})},
		{"changes longer than the body", []byte("\x81\xa2cs\xdd\xff\xff\xff\xff")},
		{"change without op", valid("cs", []any{map[string]any{"p": "x"}})},
		{"relation without columns", valid("rs", []any{map[string]any{"t": "t"}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := Decode(tt.body); !errors.Is(err, ErrMalformed) || got != nil {
				t.Errorf("Decode(%x) = %v, %v; want nil and an error wrapping ErrMalformed", head(tt.body), got, err)
			}
		})
	}
	t.Run("unknown field nested to the limit", func(t *testing.T) {
		if _, err := Decode(valid("zz", nested(maxDepth-2))); err != nil {
			t.Errorf("Decode: %v", err)
		}
	})
}

// TestDecodeAllocatesInProportion checks that declared lengths cannot make
// Decode allocate more than the body can fill.
func TestDecodeAllocatesInProportion(t *testing.T) {
	prefix := mapBody(t, "v", 1, "on", "n1", "os", 1, "l", 16)
	prefix[0]++ // room for "cs"
	body := func(cs ...byte) []byte { return append(append(append([]byte{}, prefix...), 0xa2, 'c', 's'), cs...) }
	many := func(n int, header, elem []byte) []byte {
		b := body(append(header, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))...)
		return append(b, bytes.Repeat(elem, n)...)
	}
	const n = 1 << 16
	tests := []struct {
		name string
		body []byte
	}{
		{"changes of four bytes", many(n, []byte{0xdd}, []byte{0x81, 0xa1, 'o', 'I'})},
		{"a tuple of NULLs", append(body(0x91, 0x82, 0xa1, 'o', 'M', 0xa1, 'n', 0xdd, 0, 1, 0, 0), bytes.Repeat([]byte{0xc0}, n)...)},
		{"changes of one byte", many(n, []byte{0xdd}, []byte{0x80})},
		{"changes declared, not there", append(body(0xdd, 0xff, 0xff, 0xff, 0xff), make([]byte, n)...)},
		{"a tuple declared, not there", append(body(0x91, 0x82, 0xa1, 'o', 'M', 0xa1, 'n', 0xdd, 0xff, 0xff, 0xff, 0xff), make([]byte, n)...)},
		{"values declared, not there", append(body(0xdb, 0xff, 0xff, 0xff, 0xff), make([]byte, n)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _ = Decode(tt.body)
			runtime.ReadMemStats(&after)
			got, limit := after.TotalAlloc-before.TotalAlloc, uint64(72*len(tt.body)+64<<10)
			t.Logf("%d bytes allocated for a body of %d", got, len(tt.body))
			if got > limit {
				t.Errorf("Decode of %d bytes allocated %d bytes, want at most %d", len(tt.body), got, limit)
			}
		})
	}
}
