package apply

import (
	"encoding/binary"
	"strconv"
	"testing"
	"time"

	"github.com/pgactive-go/pgactive/stream"
)

func TestJoinLockSQL(t *testing.T) {
	if got, want := joinLockSQL, strconv.FormatInt(JoinLockKey, 10); got != want {
		t.Fatalf("joinLockSQL: got %s, want %s", got, want)
	}
}

func TestOriginNames(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{OriginName(16384, "endpoint1"), "pgactive_16384_endpoint1"},
		{OriginName(16384, "end point.1"), "pgactive_16384_end_point_1"},
		{CopyOriginName(16384, 2), "pgactive_16384_copy.2"},
		{LegacyOriginName("my.group", "n1"), "pgactive_my_group_n1"},
	} {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
	}
	// Databases of one cluster never share an origin, and a copy's origin
	// is never a node's, whatever the node is called.
	if OriginName(1638, "4_n") == OriginName(16384, "n") {
		t.Error("origins of two databases collide")
	}
	for _, node := range []string{"copy", "copy.2", "copy_2"} {
		if OriginName(16384, node) == CopyOriginName(16384, 2) {
			t.Errorf("node %q has the copy's origin", node)
		}
	}
}

func TestOriginSetupParams(t *testing.T) {
	// 2024-02-29 12:34:56.789012 UTC and LSN 1/16B3748.
	commit := time.Date(2024, 2, 29, 12, 34, 56, 789012000, time.UTC)
	txn := &stream.Txn{CommitLSN: 0x1_016B3748, CommitTime: commit.UnixMicro()}
	p := originSetupParams(txn)
	if len(p) != 2 || len(p[0]) != 8 || len(p[1]) != 8 {
		t.Fatalf("got %d parameters of %v bytes, want two of 8", len(p), p)
	}
	if got := binary.BigEndian.Uint64(p[0]); got != 0x1_016B3748 {
		t.Errorf("LSN: got %X", got)
	}
	// PostgreSQL's timestamptz counts microseconds from 2000-01-01 UTC.
	pgEpoch := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	if got, want := int64(binary.BigEndian.Uint64(p[1])), commit.Sub(pgEpoch).Microseconds(); got != want {
		t.Errorf("commit time: got %d µs after 2000-01-01, want %d", got, want)
	}
	before := &stream.Txn{CommitLSN: 1, CommitTime: time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC).UnixMicro()}
	if got := int64(binary.BigEndian.Uint64(originSetupParams(before)[1])); got != -1_000_000 {
		t.Errorf("a commit before 2000: got %d µs, want -1000000", got)
	}
}
