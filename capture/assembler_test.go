package capture_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgactive-go/pgactive/capture"
	"github.com/pgactive-go/pgactive/stream"
)

const (
	testNode  = "n1"
	testSysID = 7301234567890123456

	relAccounts = 16384
	relOrders   = 16390
	relOwn      = 16400 // in OwnSchema
)

var commitTime = time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)

func accountsRel() []byte {
	return relationMsg(relAccounts, "public", "accounts", 'd',
		col{name: "id", oid: 20, typmod: -1, key: true},
		col{name: "owner", oid: 1043, typmod: 68},
		col{name: "doc", oid: 3802, typmod: -1})
}

func ordersRel() []byte {
	return relationMsg(relOrders, "shop", "orders", 'f',
		col{name: "account", oid: 20, typmod: -1, key: true},
		col{name: "n", oid: 23, typmod: -1, key: true})
}

func ownRel() []byte {
	return relationMsg(relOwn, capture.OwnSchema, "applied", 'd',
		col{name: "origin", oid: 25, typmod: -1, key: true})
}

var (
	accounts = stream.Relation{Schema: "public", Table: "accounts", Columns: []stream.Column{
		{Name: "id", TypeOID: 20, Key: true},
		{Name: "owner", TypeOID: 1043},
		{Name: "doc", TypeOID: 3802},
	}}
	orders = stream.Relation{Schema: "shop", Table: "orders", Columns: []stream.Column{
		{Name: "account", TypeOID: 20, Key: true},
		{Name: "n", TypeOID: 23, Key: true},
	}}
)

func text(s string) stream.Datum { return stream.Datum{Kind: stream.DatumText, Data: []byte(s)} }

var (
	null      = stream.Datum{Kind: stream.DatumNull}
	unchanged = stream.Datum{Kind: stream.DatumUnchanged}
)

// txn is the transaction the fixtures commit, with the given relations and changes.
func txn(rels []stream.Relation, changes ...stream.Change) *stream.Txn {
	return &stream.Txn{
		Origin: testNode, OriginSysID: testSysID, XID: 700,
		CommitLSN: 0x1_0000_1000, EndLSN: 0x1_0000_1030, CommitTime: commitTime.UnixMicro(),
		Last: true, Relations: rels, Changes: changes,
	}
}

func begin() []byte  { return beginMsg(0x1_0000_1000, commitTime, 700) }
func commit() []byte { return commitMsg(0, 0x1_0000_1000, 0x1_0000_1030, commitTime) }

// feed adds msgs in order and returns the events that are not empty,
// failing the test on an error.
func feed(t *testing.T, a *capture.Assembler, msgs ...[]byte) []capture.Event {
	t.Helper()
	var evs []capture.Event
	for i, m := range msgs {
		ev, err := a.Add(m)
		if err != nil {
			t.Fatalf("message %d (%q): %v", i, m[0], err)
		}
		if ev != (capture.Event{}) {
			evs = append(evs, ev)
		}
	}
	return evs
}

func TestAssembler(t *testing.T) {
	done := capture.Event{Done: true, EndLSN: 0x1_0000_1030}
	published := func(x *stream.Txn) []capture.Event {
		return []capture.Event{{Chunk: x, Done: true, EndLSN: 0x1_0000_1030}}
	}
	tests := []struct {
		name string
		msgs [][]byte
		want []capture.Event
	}{
		{
			name: "insert",
			msgs: [][]byte{accountsRel(), begin(), insertMsg(relAccounts, txt("1"), txt("alice"), nul), commit()},
			want: published(txn([]stream.Relation{accounts},
				stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("1"), text("alice"), null}})),
		},
		{
			name: "relation and type sent inside the transaction",
			msgs: [][]byte{begin(), typeMsg(90000, "public", "mood"), accountsRel(), insertMsg(relAccounts, txt("1"), txt(""), toast), commit()},
			want: published(txn([]stream.Relation{accounts},
				stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("1"), text(""), unchanged}})),
		},
		{
			name: "every op",
			msgs: [][]byte{
				accountsRel(), ordersRel(), begin(),
				insertMsg(relOrders, txt("1"), txt("10")),
				updateMsg(relAccounts, 0, nil, vals(txt("1"), txt("bob"), toast)),
				updateMsg(relAccounts, 'K', vals(txt("1"), nul, nul), vals(txt("2"), txt("bob"), toast)),
				updateMsg(relOrders, 'O', vals(txt("1"), txt("10")), vals(txt("1"), txt("11"))),
				deleteMsg(relAccounts, 'K', txt("2"), nul, nul),
				deleteMsg(relOrders, 'O', txt("1"), txt("11")),
				truncateMsg(pglogrepl.TruncateOptionCascade|pglogrepl.TruncateOptionRestartIdentity, relAccounts, relOrders),
				commit(),
			},
			want: published(txn([]stream.Relation{orders, accounts},
				stream.Change{Op: stream.OpInsert, Rel: 0, New: stream.Tuple{text("1"), text("10")}},
				stream.Change{Op: stream.OpUpdate, Rel: 1, New: stream.Tuple{text("1"), text("bob"), unchanged}},
				stream.Change{Op: stream.OpUpdate, Rel: 1, New: stream.Tuple{text("2"), text("bob"), unchanged}, Old: stream.Tuple{text("1"), null, null}},
				stream.Change{Op: stream.OpUpdate, Rel: 0, New: stream.Tuple{text("1"), text("11")}, Old: stream.Tuple{text("1"), text("10")}, OldFull: true},
				stream.Change{Op: stream.OpDelete, Rel: 1, Old: stream.Tuple{text("2"), null, null}},
				stream.Change{Op: stream.OpDelete, Rel: 0, Old: stream.Tuple{text("1"), text("11")}, OldFull: true},
				stream.Change{Op: stream.OpTruncate, Truncated: []int{1, 0}, TruncateFlags: stream.TruncateCascade | stream.TruncateRestartIdentity},
			)),
		},
		{
			name: "origin message: applied from elsewhere, not published",
			msgs: [][]byte{accountsRel(), begin(), originMsg(0x5000, "pgactive_n2"), insertMsg(relAccounts, txt("1"), nul, nul), commit()},
			want: []capture.Event{done},
		},
		{
			name: "origin message does not outlive its transaction",
			msgs: [][]byte{
				accountsRel(),
				beginMsg(0x900, commitTime, 699), originMsg(0x5000, "pgactive_n2"), insertMsg(relAccounts, txt("1"), nul, nul),
				commitMsg(0, 0x900, 0x930, commitTime),
				begin(), insertMsg(relAccounts, txt("2"), nul, nul), commit(),
			},
			want: append([]capture.Event{{Done: true, EndLSN: 0x930}}, published(txn([]stream.Relation{accounts},
				stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("2"), null, null}}))...),
		},
		{
			name: "changes to the own schema are dropped",
			msgs: [][]byte{
				ownRel(), ordersRel(), begin(),
				insertMsg(relOwn, txt("n2")),
				insertMsg(relOrders, txt("1"), txt("1")),
				updateMsg(relOwn, 0, nil, vals(txt("n3"))),
				deleteMsg(relOwn, 'K', txt("n3")),
				commit(),
			},
			want: published(txn([]stream.Relation{orders},
				stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("1"), text("1")}})),
		},
		{
			name: "only own schema changes: nothing published",
			msgs: [][]byte{ownRel(), begin(), insertMsg(relOwn, txt("n2")), truncateMsg(0, relOwn), commit()},
			want: []capture.Event{done},
		},
		{
			name: "empty transaction: nothing published",
			msgs: [][]byte{begin(), commit()},
			want: []capture.Event{done},
		},
		{
			name: "truncate lists only the other relations and keeps the flags",
			msgs: [][]byte{
				ownRel(), accountsRel(), ordersRel(), begin(),
				truncateMsg(pglogrepl.TruncateOptionRestartIdentity, relOrders, relOwn, relAccounts),
				truncateMsg(pglogrepl.TruncateOptionCascade, relOwn, relOrders),
				truncateMsg(0, relAccounts),
				commit(),
			},
			want: published(txn([]stream.Relation{orders, accounts},
				stream.Change{Op: stream.OpTruncate, Truncated: []int{0, 1}, TruncateFlags: stream.TruncateRestartIdentity},
				stream.Change{Op: stream.OpTruncate, Truncated: []int{0}, TruncateFlags: stream.TruncateCascade},
				stream.Change{Op: stream.OpTruncate, Truncated: []int{1}},
			)),
		},
		{
			name: "relation redefined between transactions",
			msgs: [][]byte{
				relationMsg(relAccounts, "public", "accounts", 'd', col{name: "id", oid: 23, key: true}),
				beginMsg(0x900, commitTime, 699), insertMsg(relAccounts, txt("1")), commitMsg(0, 0x900, 0x930, commitTime),
				accountsRel(),
				begin(), insertMsg(relAccounts, txt("2"), txt("b"), nul), commit(),
			},
			want: []capture.Event{
				{Chunk: &stream.Txn{
					Origin: testNode, OriginSysID: testSysID, XID: 699, CommitLSN: 0x900, EndLSN: 0x930,
					CommitTime: commitTime.UnixMicro(), Last: true,
					Relations: []stream.Relation{{Schema: "public", Table: "accounts", Columns: []stream.Column{{Name: "id", TypeOID: 23, Key: true}}}},
					Changes:   []stream.Change{{Op: stream.OpInsert, New: stream.Tuple{text("1")}}},
				}, Done: true, EndLSN: 0x930},
				published(txn([]stream.Relation{accounts},
					stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("2"), text("b"), null}}))[0],
			},
		},
		{
			name: "logical decoding message is not replicated",
			msgs: [][]byte{
				accountsRel(), begin(),
				wal{'M'}.u8(1).lsn(0x1000).str("prefix").u32(3).u8('a').u8('b').u8('c'),
				insertMsg(relAccounts, txt("1"), nul, nul),
				commit(),
			},
			want: published(txn([]stream.Relation{accounts},
				stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("1"), null, null}})),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := capture.NewAssembler(testNode, testSysID, 1<<20)
			got := feed(t, a, tt.msgs...)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("events:\n got %s\nwant %s", events(got), events(tt.want))
			}
			if a.InTxn() {
				t.Errorf("InTxn after commit: got true, want false")
			}
			for _, ev := range got {
				if ev.Chunk != nil {
					checkEncodes(t, ev.Chunk)
				}
			}
		})
	}
}

// events formats evs with their chunks for failure messages.
func events(evs []capture.Event) string {
	var s strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&s, "\n  {Done:%t EndLSN:%s", ev.Done, ev.EndLSN)
		if ev.Chunk != nil {
			s.WriteString(" Chunk:" + fmtTxn(ev.Chunk))
		}
		s.WriteString("}")
	}
	return s.String()
}

func fmtTxn(x *stream.Txn) string {
	var s strings.Builder
	fmt.Fprintf(&s, "%s xid %d end %s time %d last %t", x.MsgID(), x.XID, x.EndLSN, x.CommitTime, x.Last)
	for _, r := range x.Relations {
		fmt.Fprintf(&s, " rel %s%v", r.QualifiedName(), r.Columns)
	}
	for _, c := range x.Changes {
		fmt.Fprintf(&s, " %+v", c)
	}
	return s.String()
}

// checkEncodes fails when x is not a valid message body.
func checkEncodes(t *testing.T, x *stream.Txn) {
	t.Helper()
	b, err := stream.Encode(x)
	if err != nil {
		t.Fatalf("Encode chunk %s: %v", x.MsgID(), err)
	}
	if _, err := stream.Decode(b); err != nil {
		t.Errorf("chunk %s does not decode: %v", x.MsgID(), err)
	}
}

func TestAssemblerCommitTimeAndKeys(t *testing.T) {
	a := capture.NewAssembler(testNode, testSysID, 1<<20)
	at := time.Date(2031, 12, 31, 23, 59, 59, 999999000, time.UTC)
	evs := feed(t, a, ordersRel(), beginMsg(0xABCDEF, at, 4242), insertMsg(relOrders, txt("1"), txt("2")), commitMsg(0, 0xABCDEF, 0xABCE20, at))
	if len(evs) != 1 || evs[0].Chunk == nil {
		t.Fatalf("got events %s, want one chunk", events(evs))
	}
	x := evs[0].Chunk
	if got, want := x.Time(), at; !got.Equal(want) {
		t.Errorf("commit time: got %s, want %s", got, want)
	}
	if got, want := x.XID, uint32(4242); got != want {
		t.Errorf("XID: got %d, want %d", got, want)
	}
	if got, want := x.CommitLSN, pglogrepl.LSN(0xABCDEF); got != want {
		t.Errorf("commit LSN: got %s, want %s", got, want)
	}
	if got, want := x.EndLSN, pglogrepl.LSN(0xABCE20); got != want {
		t.Errorf("end LSN: got %s, want %s", got, want)
	}
	var keys []bool
	for _, c := range x.Relations[0].Columns {
		keys = append(keys, c.Key)
	}
	if want := []bool{true, true}; !reflect.DeepEqual(keys, want) {
		t.Errorf("key flags: got %v, want %v", keys, want)
	}
}

// TestAssemblerChunkPerChange uses the smallest chunk size, so that every
// change is a chunk of its own.
func TestAssemblerChunkPerChange(t *testing.T) {
	a := capture.NewAssembler(testNode, testSysID, 1)
	evs := feed(t, a,
		accountsRel(), ordersRel(), begin(),
		insertMsg(relAccounts, txt("1"), nul, nul),
		insertMsg(relOrders, txt("1"), txt("1")),
		truncateMsg(pglogrepl.TruncateOptionCascade, relOrders, relAccounts),
		deleteMsg(relAccounts, 'K', txt("1"), nul, nul),
		commit(),
	)
	chunk := func(i int, last bool, rels []stream.Relation, c stream.Change) *stream.Txn {
		x := txn(rels, c)
		x.Chunk, x.Last = i, last
		if !last {
			x.EndLSN = 0
		}
		return x
	}
	want := []capture.Event{
		{Chunk: chunk(0, false, []stream.Relation{accounts}, stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("1"), null, null}})},
		{Chunk: chunk(1, false, []stream.Relation{orders}, stream.Change{Op: stream.OpInsert, New: stream.Tuple{text("1"), text("1")}})},
		{Chunk: chunk(2, false, []stream.Relation{orders, accounts}, stream.Change{Op: stream.OpTruncate, Truncated: []int{0, 1}, TruncateFlags: stream.TruncateCascade})},
		{Chunk: chunk(3, true, []stream.Relation{accounts}, stream.Change{Op: stream.OpDelete, Old: stream.Tuple{text("1"), null, null}}), Done: true, EndLSN: 0x1_0000_1030},
	}
	if !reflect.DeepEqual(evs, want) {
		t.Errorf("events:\n got %s\nwant %s", events(evs), events(want))
	}
}

// TestAssemblerChunks checks a large transaction cut into chunks: increasing
// index, one commit LSN, Last only on the final one, each chunk carrying and
// indexing the relations its own changes refer to, and nothing lost.
func TestAssemblerChunks(t *testing.T) {
	tests := []struct {
		name      string
		chunkSize int
		rows      int
	}{
		{"a few chunks", 600, 40},
		{"many chunks", 200, 200},
		{"one chunk", 1 << 20, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := capture.NewAssembler(testNode, testSysID, tt.chunkSize)
			msgs := [][]byte{accountsRel(), ordersRel(), begin()}
			var want []string // every change, resolved to its relation
			for i := range tt.rows {
				id := strings.Repeat("x", i%17) + string(rune('a'+i%26))
				switch i % 3 {
				case 0:
					msgs = append(msgs, insertMsg(relAccounts, txt(id), txt("owner "+id), nul))
					want = append(want, "insert public.accounts "+id)
				case 1:
					msgs = append(msgs, updateMsg(relOrders, 'O', vals(txt(id), txt("1")), vals(txt(id), txt("2"))))
					want = append(want, "update shop.orders "+id)
				case 2:
					msgs = append(msgs, deleteMsg(relAccounts, 'K', txt(id), nul, nul))
					want = append(want, "delete public.accounts "+id)
				}
			}
			msgs = append(msgs, commit())
			evs := feed(t, a, msgs...)

			var got []string
			for i, ev := range evs {
				x := ev.Chunk
				if x == nil {
					t.Fatalf("event %d has no chunk: %+v", i, ev)
				}
				last := i == len(evs)-1
				if x.Chunk != i || x.Last != last || ev.Done != last {
					t.Errorf("event %d: got chunk %d, last %t, done %t; want %d, %t, %t", i, x.Chunk, x.Last, ev.Done, i, last, last)
				}
				if x.CommitLSN != 0x1_0000_1000 {
					t.Errorf("chunk %d: got commit LSN %s, want 1/1000", i, x.CommitLSN)
				}
				if len(x.Changes) == 0 {
					t.Errorf("chunk %d is empty", i)
				}
				checkEncodes(t, x)
				// The relations are exactly those referred to, in order of first use.
				var used []int
				for _, c := range x.Changes {
					if !contains(used, c.Rel) {
						used = append(used, c.Rel)
					}
					r := x.Relations[c.Rel]
					tup := c.New
					if c.Op == stream.OpDelete {
						tup = c.Old
					}
					got = append(got, c.Op.String()+" "+r.QualifiedName()+" "+string(tup[0].Data))
				}
				if want := seq(len(x.Relations)); !reflect.DeepEqual(used, want) {
					t.Errorf("chunk %d: relation indexes used in order %v, want %v", i, used, want)
				}
			}
			if last := evs[len(evs)-1]; last.EndLSN != 0x1_0000_1030 || last.Chunk.EndLSN != 0x1_0000_1030 {
				t.Errorf("last chunk: got end LSN %s / %s, want 1/1030", last.EndLSN, last.Chunk.EndLSN)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("changes across chunks:\n got %v\nwant %v", got, want)
			}
			if tt.chunkSize < 1000 && len(evs) < 3 {
				t.Errorf("got %d chunks, want several", len(evs))
			}
			if tt.chunkSize >= 1<<20 && len(evs) != 1 {
				t.Errorf("got %d chunks, want 1", len(evs))
			}
		})
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// TestAssemblerRelationRedefinedInTransaction covers DDL between two changes
// of one transaction: pgoutput sends the new definition before the next
// change, and that change must be described by it.
func TestAssemblerRelationRedefinedInTransaction(t *testing.T) {
	a := capture.NewAssembler(testNode, testSysID, 1<<20)
	evs := feed(t, a,
		begin(),
		relationMsg(relAccounts, "public", "accounts", 'd', col{name: "id", oid: 20, key: true}),
		insertMsg(relAccounts, txt("1")),
		accountsRel(), // ALTER TABLE accounts ADD owner, ADD doc
		insertMsg(relAccounts, txt("2"), txt("b"), nul),
		commit(),
	)
	if len(evs) != 1 || evs[0].Chunk == nil {
		t.Fatalf("got events %s, want one chunk", events(evs))
	}
	x := evs[0].Chunk
	checkEncodes(t, x)
	for i, c := range x.Changes {
		if c.Rel >= len(x.Relations) {
			t.Fatalf("change %d: relation %d of %d", i, c.Rel, len(x.Relations))
		}
		if got, want := len(x.Relations[c.Rel].Columns), len(c.New); got != want {
			t.Errorf("change %d: relation has %d columns for %d values", i, got, want)
		}
	}
	if got := x.Relations[x.Changes[1].Rel].Columns; !reflect.DeepEqual(got, accounts.Columns) {
		t.Errorf("second insert's columns: got %+v, want %+v", got, accounts.Columns)
	}
}

func TestAssemblerErrors(t *testing.T) {
	tests := []struct {
		name string
		msgs [][]byte // the last one must fail
		want string   // in the error
	}{
		{"insert to unknown relation", [][]byte{begin(), insertMsg(99, txt("1"))}, "unknown relation 99"},
		{"update to unknown relation", [][]byte{begin(), updateMsg(99, 0, nil, vals(txt("1")))}, "unknown relation 99"},
		{"delete to unknown relation", [][]byte{begin(), deleteMsg(99, 'K', txt("1"))}, "unknown relation 99"},
		{"truncate of unknown relation", [][]byte{accountsRel(), begin(), truncateMsg(0, relAccounts, 99)}, "unknown relation 99"},
		{"commit without begin", [][]byte{commit()}, "commit outside a transaction"},
		{"second commit", [][]byte{begin(), commit(), commit()}, "commit outside a transaction"},
		{"begin inside a transaction", [][]byte{begin(), begin()}, "begin inside a transaction"},
		{"insert outside a transaction", [][]byte{accountsRel(), insertMsg(relAccounts, txt("1"), nul, nul)}, "outside a transaction"},
		{"truncate outside a transaction", [][]byte{accountsRel(), truncateMsg(0, relAccounts)}, "outside a transaction"},
		{"binary tuple data", [][]byte{accountsRel(), begin(), insertMsg(relAccounts, txt("1"), value{kind: 'b', data: "\x01"}, nul)}, "unsupported format"},
		{"empty message", [][]byte{{}}, "parse pgoutput message"},
		{"unknown message type", [][]byte{{'Z', 0, 0, 0, 0}}, "parse pgoutput message"},
		{"stream start (protocol 2)", [][]byte{wal{'S'}.u32(700).u8(1)}, "parse pgoutput message"},
		{"short begin", [][]byte{begin()[:12]}, "parse pgoutput message"},
		{"short relation", [][]byte{accountsRel()[:20]}, "parse pgoutput message"},
		{"relation name without terminator", [][]byte{wal{'R'}.u32(1).u8('p').u8('u').u8('b')}, "parse pgoutput message"},
		{"short tuple", [][]byte{accountsRel(), begin(), insertMsg(relAccounts, txt("1"), txt("alice"), nul)[:16]}, "parse pgoutput message"},
		{"text longer than the message", [][]byte{accountsRel(), begin(), wal{'I'}.u32(relAccounts).u8('N').u16(1).u8('t').u32(1000).u8('x')}, "parse pgoutput message"},
		{"bad tuple type", [][]byte{accountsRel(), begin(), wal{'I'}.u32(relAccounts).u8('X').u16(0)}, "parse pgoutput message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := capture.NewAssembler(testNode, testSysID, 1<<20)
			feed(t, a, tt.msgs[:len(tt.msgs)-1]...)
			ev, err := a.Add(tt.msgs[len(tt.msgs)-1])
			if err == nil {
				t.Fatalf("got event %+v, want an error containing %q", ev, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %q, want one containing %q", err, tt.want)
			}
			if ev != (capture.Event{}) {
				t.Errorf("got event %+v with the error, want none", ev)
			}
		})
	}
}

// TestAssemblerDDLMessageOwnsContent: the replication connection reuses its
// receive buffer, so a DDL message's text must survive the buffer being
// overwritten before the transaction commits.
func TestAssemblerDDLMessageOwnsContent(t *testing.T) {
	a := capture.NewAssembler(testNode, testSysID, 1<<20)
	ddl := "ALTER TABLE t ADD COLUMN c int"
	msg := wal{'M'}.u8(1).lsn(0x1000).str(stream.PrefixDDL).u32(uint32(len(ddl)))
	msg = append(msg, ddl...)
	var got []capture.Event
	for _, m := range [][]byte{begin(), msg} {
		got = append(got, feed(t, a, m)...)
	}
	for i := range msg {
		msg[i] = 0xff // what the next CopyData would do to a shared buffer
	}
	got = append(got, feed(t, a, commit())...)
	var content string
	for _, ev := range got {
		if ev.Chunk != nil {
			for _, c := range ev.Chunk.Changes {
				if c.Op == stream.OpMessage {
					content = string(c.Content)
				}
			}
		}
	}
	if content != ddl {
		t.Errorf("DDL content after buffer reuse: got %q, want %q", content, ddl)
	}
}
