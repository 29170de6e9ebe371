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
