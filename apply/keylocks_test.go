package apply

import (
	"strings"
	"testing"

	"github.com/pgactive-go/pgactive/stream"
)

func lockTestTable(name string) *table {
	return newTable(stream.Relation{Schema: "public", Table: name, Columns: []stream.Column{{Name: "id", Key: true}, {Name: "v"}}}, 1)
}

// TestTxnLocksBudget: the first key of a table also takes the table's lock
// in shared mode; past the budget a transaction locks each table once,
// exclusively, and then takes no more locks on it; reset starts over.
func TestTxnLocksBudget(t *testing.T) {
	a, b := lockTestTable("a"), lockTestTable("b")
	var l txnLocks
	sql, args := l.lockSQL(a, false)
	if sql != a.locks.tableAndKey[0] || args != 3 || !strings.Contains(sql, "pg_advisory_xact_lock_shared("+keyLockClass) {
		t.Fatalf("first key: %q (%d args), want the table's shared lock and the key's shared lock", sql, args)
	}
	if sql, _ := l.lockSQL(a, true); sql != a.locks.key[1] || !strings.Contains(sql, "pg_advisory_xact_lock("+keyLockClass) {
		t.Fatalf("second key, exclusive: %q", sql)
	}
	for l.keys < keyLockBudget {
		l.lockSQL(a, false)
	}
	saved := l.save()
	sql, args = l.lockSQL(b, false)
	if sql != b.locks.table || args != 2 || !strings.Contains(sql, "pg_advisory_xact_lock("+tableLockClass) {
		t.Fatalf("past the budget: %q (%d args), want the table's exclusive lock", sql, args)
	}
	if sql, _ := l.lockSQL(b, true); sql != "" {
		t.Fatalf("a table locked exclusively needs no more locks, got %q", sql)
	}
	if sql, _ := l.lockSQL(a, false); sql != a.locks.table {
		t.Fatalf("past the budget, a table held in shared mode: %q, want its exclusive lock", sql)
	}
	l = saved // rolled back to a savepoint: b's lock is gone
	if sql, _ := l.lockSQL(b, false); sql != b.locks.table {
		t.Fatalf("after restoring: %q, want b's lock again", sql)
	}
	l.reset()
	if sql, _ := l.lockSQL(b, false); sql != b.locks.tableAndKey[0] {
		t.Fatalf("after reset: %q, want the first key's locks", sql)
	}
}
