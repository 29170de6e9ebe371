package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

func TestClusterHarness(t *testing.T) {
	c := StartNATSCluster(t, 3)
	if got := strings.Count(c.URLs(), ",") + 1; got != 3 {
		t.Fatalf("URLs() = %q: got %d seeds, want 3", c.URLs(), got)
	}
	if c.Leader() < 0 {
		t.Fatal("no JetStream meta leader after StartNATSCluster")
	}
	_, js := ConnectNATS(t, c.URLs())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "H", Subjects: []string{"h.>"}, Replicas: 3})
	if err != nil {
		t.Fatalf("create an R3 stream: %v", err)
	}
	sent := 0
	// publish sends n messages, each with an id so that one sent again
	// after a lost acknowledgement (the server went away) is stored once.
	publish := func(n int) {
		t.Helper()
		for range n {
			sent++
			id := fmt.Sprintf("m-%d", sent)
			WaitFor(t, time.Minute, "publish "+id, func() (bool, error) {
				pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := js.Publish(pctx, "h.x", []byte("m"), jetstream.WithMsgID(id))
				return err == nil, err
			})
		}
	}
	publish(10)
	victim := streamLeader(t, s, c)
	c.Kill(victim)
	publish(10) // two of three servers keep a quorum
	c.Restart(t, victim)
	publish(10)
	waitReplicasCurrent(t, s, 3)
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(30); got != want {
		t.Errorf("messages in the stream: got %d, want %d", got, want)
	}
}

// TestClusterNATSServerKilledUnderLoad runs three nodes on a three-server
// JetStream cluster with R3 streams, kills the server leading a node's
// stream while every node writes, and restarts it.
func TestClusterNATSServerKilledUnderLoad(t *testing.T) {
	ns := StartNATSCluster(t, 3)
	pgs := make([]*Postgres, 3)
	conns := make([]*pgx.Conn, 3)
	for i := range pgs {
		pgs[i] = StartPostgres(t)
		pgs[i].CreateDatabase(t, "app")
		pgs[i].Exec(t, "app", auditedLoadSchema)
		conns[i] = pgs[i].Connect(t, "app")
	}
	for i := range pgs {
		StartAgent(t, ns.URLs(), node.Config{Group: "app", Node: fmt.Sprintf("node%d", i+1), DSN: pgs[i].DSN("app"), Replicas: 3})
	}
	waitLinked(t, conns)

	_, js := ConnectNATS(t, ns.URLs())
	streams := clusterStreams(t, js, 3)
	loads := startLoads(t, pgs, 1)
	for _, l := range loads {
		l.WaitCommitted(t, 200)
	}
	victim := streamLeader(t, streams[0], ns)
	t.Logf("killing %s, leader of %s", ns.Name(victim), stream.StreamName("app", "node1"))
	ns.Kill(victim)
	down := time.Now()
	for _, l := range loads {
		l.WaitCommitted(t, 200)
	}
	// Replication goes on with two servers of three: every node applies
	// more rows of every other node while the third server is down.
	waitApplying(t, conns, 50, func() string { return streamsState(js, streams) })
	ns.Restart(t, victim)
	t.Logf("%s down for %v under load, back and current", ns.Name(victim), time.Since(down).Round(time.Millisecond))
	for _, l := range loads {
		l.WaitCommitted(t, 200)
	}
	stopLoads(loads)
	stopped := time.Now()
	checkLoads(t, conns, loads, true)
	t.Logf("nodes identical %v after the loads stopped", time.Since(stopped).Round(time.Millisecond))
	for _, s := range streams {
		waitReplicasCurrent(t, s, 3)
	}
}

// waitApplying waits until every node holds at least more rows written by
// each other node than now (loads write keys from (i+1)*1e9 on node i).
func waitApplying(t *testing.T, conns []*pgx.Conn, more int, state func() string) {
	t.Helper()
	counts := func() ([][]int, error) {
		out := make([][]int, len(conns))
		for i, c := range conns {
			out[i] = make([]int, len(conns))
			for j := range conns {
				base := int64(j+1) * 1_000_000_000
				if err := c.QueryRow(context.Background(), `SELECT count(*) FROM items WHERE id >= $1 AND id < $2`, base, base+1_000_000_000).Scan(&out[i][j]); err != nil {
					return nil, err
				}
			}
		}
		return out, nil
	}
	before, err := counts()
	if err != nil {
		t.Fatal(err)
	}
	WaitFor(t, convergeTimeout, "every node applying every other node's rows", func() (bool, error) {
		now, err := counts()
		if err != nil {
			return false, err
		}
		for i := range now {
			for j := range now[i] {
				if i != j && now[i][j] < before[i][j]+more {
					return false, fmt.Errorf("node%d holds %d rows of node%d, had %d; %s", i+1, now[i][j], j+1, before[i][j], state())
				}
			}
		}
		return true, nil
	})
}

// clusterStreams returns the streams of nodes node1..nodeN of group app,
// checking that they and the bucket have R3.
func clusterStreams(t *testing.T, js jetstream.JetStream, n int) []jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	streams := make([]jetstream.Stream, n)
	for i := range streams {
		s, err := js.Stream(ctx, stream.StreamName("app", fmt.Sprintf("node%d", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.Replicas; got != 3 {
			t.Fatalf("stream %s: got %d replicas, want 3", s.CachedInfo().Config.Name, got)
		}
		streams[i] = s
	}
	kv, err := js.KeyValue(ctx, stream.BucketName("app"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; got != 3 {
		t.Fatalf("bucket %s: got %d replicas, want 3", st.Bucket(), got)
	}
	return streams
}

// streamLeader returns the index in c of the server leading stream s.
func streamLeader(t *testing.T, s jetstream.Stream, c *NATSCluster) int {
	t.Helper()
	var leader int
	WaitFor(t, 30*time.Second, "stream leader", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return false, nil
		}
		leader = c.Index(info.Cluster.Leader)
		return leader >= 0, nil
	})
	return leader
}

// waitReplicasCurrent waits until stream s has a leader and replicas-1
// followers, all current.
func waitReplicasCurrent(t *testing.T, s jetstream.Stream, replicas int) {
	t.Helper()
	WaitFor(t, time.Minute, "stream replicas current", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != replicas-1 {
			return false, nil
		}
		for _, p := range info.Cluster.Replicas {
			if !p.Current || p.Offline {
				return false, nil
			}
		}
		return true, nil
	})
}

// streamsState describes streams and their consumers, for failure messages.
func streamsState(js jetstream.JetStream, streams []jetstream.Stream) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	for _, s := range streams {
		info, err := s.Info(ctx)
		if err != nil {
			fmt.Fprintf(&b, "\n%s: %v", s.CachedInfo().Config.Name, err)
			continue
		}
		leader := ""
		if info.Cluster != nil {
			leader = info.Cluster.Leader
		}
		fmt.Fprintf(&b, "\n%s: leader %s, seq %d..%d", info.Config.Name, leader, info.State.FirstSeq, info.State.LastSeq)
		for ci := range s.ListConsumers(ctx).Info() {
			cl := ""
			if ci.Cluster != nil {
				cl = ci.Cluster.Leader
			}
			fmt.Fprintf(&b, "\n  %s: leader %s, ack floor %d, delivered %d, pending %d, ack pending %d, waiting %d, redelivered %d",
				ci.Name, cl, ci.AckFloor.Stream, ci.Delivered.Stream, ci.NumPending, ci.NumAckPending, ci.NumWaiting, ci.NumRedelivered)
		}
	}
	_ = js
	return b.String()
}
