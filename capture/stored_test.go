package capture

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgactive-go/pgactive/stream"
)

// TestStoredEnd runs against an embedded NATS server: where a new capture
// session finds the end of its node's stream, past messages that are not
// its node's.
func TestStoredEnd(t *testing.T) {
	srv, err := stream.StartServer(stream.ServerConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Name: "capture-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, js, err := stream.Connect(ctx, stream.ConnectOptions{URLs: srv.ClientURL(), Name: "capture test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	layout := &stream.Layout{JS: js, Group: "g"}
	if _, err := layout.EnsureStream(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := layout.EnsureConsumer(ctx, "n1", "n2"); err != nil { // interest: the stream keeps what n2 has not applied
		t.Fatal(err)
	}
	c, err := New(Config{Group: "g", Node: "n1", SysID: 7, DSN: "unused", Slot: "s"}, js, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	subject := stream.TxnSubject("g", "n1")
	txn := func(node string, sysid uint64, lsn pglogrepl.LSN, last bool) *stream.Txn {
		return &stream.Txn{Origin: node, OriginSysID: sysid, CommitLSN: lsn, EndLSN: lsn + 8, Last: last}
	}
	publish := func(data []byte) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
	publishTxns := func(txns ...*stream.Txn) {
		t.Helper()
		var b stream.Batch
		for _, x := range txns {
			if ok, err := b.Add(x, 1<<20); err != nil || !ok {
				t.Fatalf("Add: %t, %v", ok, err)
			}
		}
		publish(b.Msg(subject).Data)
	}
	check := func(what string, walEnd pglogrepl.LSN, want storedEnd) {
		t.Helper()
		got, err := c.stored(ctx, walEnd)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: got %+v, want %+v", what, got, want)
		}
	}

	check("empty stream", 0x1000, storedEnd{})
	publishTxns(txn("n1", 7, 0x100, true), txn("n1", 7, 0x200, true))
	check("a message of two transactions", 0x1000, storedEnd{seq: 1, lsn: 0x200, whole: true})
	publish([]byte("garbage"))
	other, err := stream.Encode(txn("n3", 42, 0x900, true))
	if err != nil {
		t.Fatal(err)
	}
	publish(other)
	check("past garbage and another node's message", 0x1000, storedEnd{seq: 3, lsn: 0x200, whole: true})
	publishTxns(txn("n1", 7, 0x300, false)) // the first chunk of a large transaction
	end := storedEnd{seq: 4, lsn: 0x300}
	check("a chunk", 0x1000, end)
	if !end.holds(txn("n1", 7, 0x200, true)) || end.holds(txn("n1", 7, 0x300, false)) || end.holds(txn("n1", 7, 0x400, true)) {
		t.Errorf("holds: stored up to a chunk of 0/300 must hold 0/200 only")
	}
	check("transactions past the end of the WAL", 0x2FF, storedEnd{seq: 4})
}
