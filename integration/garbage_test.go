package integration

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pgactive-go/pgactive/stream"
)

// natsCLI returns the path of the nats CLI; with CI=true a missing CLI fails the test.
func natsCLI(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("nats")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the nats CLI is not on PATH: run `go tool task deps`")
		}
		t.Skip("the nats CLI is not on PATH: run `go tool task deps`")
	}
	return path
}

// TestGarbageIsParked publishes garbage on a node's subject (with the nats
// CLI and with a client): apply parks each bad message, counts it, and keeps
// replicating; capture continues after its ordering check trips over the
// foreign messages.
func TestGarbageIsParked(t *testing.T) {
	ns, _, agents, c := startNodes(t, 2, itemsSchema)
	a, b := c[0], c[1]
	mustExec(t, a, `INSERT INTO items VALUES (1, 'before')`)
	WaitSameRows(t, 30*time.Second, "items", a, b)

	subject := stream.TxnSubject("app", "node1")
	out, err := exec.Command(natsCLI(t), "--server", ns.URL(), "pub", subject, "this is not msgpack").CombinedOutput()
	if err != nil {
		t.Fatalf("nats pub: %v: %s", err, out)
	}
	_, js := ConnectNATS(t, ns.URL())
	ctx := context.Background()
	forged := &stream.Txn{Origin: "node3", OriginSysID: 42, CommitLSN: 0xFFFFFFFF, Last: true,
		Relations: []stream.Relation{{Schema: "public", Table: "items", Columns: []stream.Column{{Name: "id", TypeOID: 23, Key: true}}}},
		Changes:   []stream.Change{{Op: stream.OpDelete, Old: stream.Tuple{{Data: []byte("1")}}}}}
	body, err := stream.Encode(forged)
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{{0x81, 0xa1, 'v', 0x63}, {0xdf, 0xff, 0xff, 0xff, 0xff}, body} {
		if _, err := js.Publish(ctx, subject, data); err != nil {
			t.Fatalf("publish garbage: %v", err)
		}
	}

	mustExec(t, a, `INSERT INTO items VALUES (2, 'after')`)
	mustExec(t, b, `INSERT INTO items VALUES (3, 'other way')`)
	WaitSameRows(t, time.Minute, "items", a, b)
	if got := count(t, b, `SELECT count(*) FROM items`); got != 3 {
		t.Fatalf("rows on node2: got %d, want 3 (the forged delete must not apply)", got)
	}
	w := agents[1].Appliers()["node1"]
	WaitFor(t, 30*time.Second, "4 parked messages counted", func() (bool, error) {
		return w.Status().Parked.Load() == 4, nil
	})
	st, err := js.Stream(ctx, stream.ParkedStreamName("app"))
	if err != nil {
		t.Fatalf("parked stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 4 {
		t.Fatalf("parked messages kept: got %d, want 4", info.State.Msgs)
	}
	m, err := st.GetMsg(ctx, info.State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(stream.HeaderParkedSubject) != subject || !strings.Contains(m.Header.Get(stream.HeaderParkedError), "malformed") {
		t.Fatalf("parked message headers: %v", m.Header)
	}
}
