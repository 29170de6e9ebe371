package apply

import (
	"strconv"
	"testing"
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
