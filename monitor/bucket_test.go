package monitor

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/stream"
)

// startJetStream runs an embedded NATS server on a random port with its store
// in a temporary directory, and connects to it.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := stream.StartServer(stream.ServerConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Name: "monitor-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, js, err := stream.Connect(ctx, stream.ConnectOptions{URLs: srv.ClientURL(), Name: "monitor test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}

func TestBucketSnapshotAndPurge(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	kv, err := (&stream.Layout{JS: js, Group: "app"}).EnsureBucket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key, value string) {
		t.Helper()
		if _, err := kv.PutString(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	put("nodes.node1", `{"name":"node1","group":"app","sysid":"11","dboid":5,"status":"r"}`)
	put("nodes.node2", `{"name":"node2","group":"app","sysid":"22","dboid":5,"status":"c"}`)
	put("nodes.node3", `{"name":"node3","group":"app","sysid":"33","dboid":5,"status":"k"}`)
	now := time.Now().UTC()
	for _, p := range [][2]string{{"node1", "node2"}, {"node1", "node3"}, {"node2", "node1"}, {"node4", "node1"}} {
		if err := putJSON(ctx, kv, stream.LagKey(p[0], p[1]), Row{OriginNode: p[0], TargetNode: p[1], UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if err := putJSON(ctx, kv, ApplyKey(p[0], p[1]), ApplyState{Origin: p[0], Target: p[1], UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"node1", "node3"} {
		if err := putJSON(ctx, kv, WALKey(n), WALState{Node: n, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	put("lag.garbage", "not json")

	snap, err := readBucket(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.targets("node1"); len(got) != 1 || got[0] != (target{Node: "node2", SysID: 22}) {
		t.Errorf("targets of node1: got %+v, want node2 only (node3 is detached)", got)
	}
	if got := snap.members["node1"]; got.SysID != 11 || got.DBOID != 5 {
		t.Errorf("member node1: got %+v", got)
	}
	var paths []string
	for _, r := range snap.rows() {
		paths = append(paths, r.OriginNode+">"+r.TargetNode)
	}
	if want := []string{"node1>node2", "node2>node1"}; !slices.Equal(paths, want) {
		t.Errorf("rows: got %v, want %v", paths, want)
	}

	m := &Monitor{cfg: Config{Group: "app", Node: "node1"}}
	if err := m.purge(ctx, kv, snap, []Row{{OriginNode: "node1", TargetNode: "node2"}}); err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for k := range keys.Keys() {
		left = append(left, k)
	}
	slices.Sort(left)
	want := []string{"apply.node1.node2", "apply.node2.node1", "lag.garbage", "lag.node1.node2", "lag.node2.node1",
		"nodes.node1", "nodes.node2", "nodes.node3", "wal.node1"}
	if !slices.Equal(left, want) {
		t.Errorf("keys after purge:\ngot  %v\nwant %v", left, want)
	}
}

func publishTxn(t *testing.T, js jetstream.JetStream, lsn pglogrepl.LSN, at time.Time) {
	t.Helper()
	msg, err := stream.NewMsg(stream.TxnSubject("app", "node1"), &stream.Txn{Origin: "node1", OriginSysID: 11,
		CommitLSN: lsn, CommitTime: at.UnixMicro(), Last: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

func TestConsumerBacklogAndPublished(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	layout := &stream.Layout{JS: js, Group: "app"}
	st, err := layout.EnsureStream(ctx, "node1")
	if err != nil {
		t.Fatal(err)
	}
	cons, err := layout.EnsureConsumer(ctx, "node1", "node2")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := consumerBacklog(ctx, st, "app", "node1", "node3"); b != nil || err != nil {
		t.Errorf("backlog of a missing consumer: got %+v, %v, want nil, nil", b, err)
	}
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		publishTxn(t, js, pglogrepl.LSN(0x1000*(i+1)), base.Add(time.Duration(i)*time.Second))
	}
	waitBacklog(t, st, "nothing delivered", backlog{Pending: 3, Oldest: base})

	batch, err := cons.Fetch(2)
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for msg := range batch.Messages() {
		got = append(got, msg)
	}
	if len(got) != 2 {
		t.Fatalf("fetched %d messages, want 2", len(got))
	}
	if err := got[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	waitBacklog(t, st, "first applied, second delivered", backlog{Pending: 2, AckFloor: 1, Delivered: 0x2000, Oldest: base.Add(time.Second)})

	m := &Monitor{cfg: Config{Group: "app", Node: "node1", JS: js, Agent: newFakeAgent(t, "app", "node1")}}
	var o origin
	if err := m.readPublished(ctx, &o); err != nil {
		t.Fatal(err)
	}
	if o.Published != 0x3000 || !o.PublishedTime.Equal(base.Add(2*time.Second)) || !o.StreamRead ||
		o.LastStored != 0x3000 || o.LastStoredSeq != 3 {
		t.Errorf("published: got %+v, want 0/3000 at %s, the stream's last message 3", o, base.Add(2*time.Second))
	}
	// Once every target applied everything, the stream holds nothing: the
	// last position seen stays.
	batch, err = cons.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for msg := range batch.Messages() {
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitEmpty(t, st)
	o = origin{}
	if err := m.readPublished(ctx, &o); err != nil {
		t.Fatal(err)
	}
	if o.Published != 0x3000 || o.LastStored != 0x3000 || o.LastStoredSeq != 0 || !o.StreamRead {
		t.Errorf("published after the stream emptied: got %+v, want 0/3000, stored 0/3000 and an empty stream", o)
	}
	waitBacklog(t, st, "everything applied", backlog{AckFloor: 3})
}

// waitBacklog waits until the backlog of node1 → node2 is want: the server
// counts a consumer's pending messages shortly after they are stored or
// acknowledged, not at once.
func waitBacklog(t *testing.T, st jetstream.Stream, what string, want backlog) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := consumerBacklog(context.Background(), st, "app", "node1", "node2")
		if err != nil {
			t.Fatal(err)
		}
		if *b == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %+v, want %+v", what, *b, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEmpty waits until interest retention removed every message of st.
func waitEmpty(t *testing.T, st jetstream.Stream) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream still holds %d messages", info.State.Msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
