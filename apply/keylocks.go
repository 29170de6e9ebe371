package apply

import (
	"context"
	"fmt"
	"maps"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgactive-go/pgactive/stream"
)

// Apply workers of different origins must never decide about the same
// missing row at once: one inserting a key on the fast path while another
// finds no row for a delete of that key and records its tombstone would
// each miss what the other wrote, and the nodes would diverge. So both take
// a lock on the key before they look, until their local transaction ends:
//
//   - the slow path takes the key's lock exclusively before reading the row;
//   - a fast-path insert takes it in shared mode before probing tombstones
//     (fast-path inserts do not wait for each other).
//
// A large transaction cannot hold one lock per row (PostgreSQL's lock table
// is shared and bounded), so after keyLockBudget key locks a transaction
// takes the lock of the whole table exclusively instead. For that to cover
// every key, each key lock is taken under the table's lock in shared mode.
// Locks are PostgreSQL advisory locks of two classes, keyLockClass (key
// hashes) and tableLockClass (table hashes); two keys or tables sharing a
// 32-bit hash only wait for each other.

// keyLockClass is the first half of a key's advisory lock ("pgac").
const keyLockClass = "1885823331"

// tableLockClass is the first half of a table's advisory lock ("pgat").
const tableLockClass = "1885823348"

// keyLockBudget is how many key locks one local transaction takes before it
// locks whole tables instead.
const keyLockBudget = 64

// lockMode is how a transaction holds a table's lock.
type lockMode int8

const (
	unlocked lockMode = iota
	sharedLock
	exclusiveLock
)

// txnLocks tracks the advisory locks the open local transaction holds.
type txnLocks struct {
	keys   int
	tables map[string]lockMode // by the table's quoted name
}

// reset forgets every lock: the local transaction ended.
func (l *txnLocks) reset() {
	l.keys = 0
	clear(l.tables)
}

// save returns a copy to restore after rolling back to a savepoint, which
// releases the locks taken since.
func (l *txnLocks) save() txnLocks {
	return txnLocks{keys: l.keys, tables: maps.Clone(l.tables)}
}

// lockSQL returns the statement that locks a key of table t (exclusively,
// or in shared mode), or "" when the transaction's locks cover it already.
// Its parameters are the key's tombstoneParams, of which a table's lock
// takes only the first two (schema and table): args says how many.
// The caller runs it before it reads anything about the key, as a statement
// of its own: in READ COMMITTED, the next statement's snapshot shows what
// the previous holder committed.
func (l *txnLocks) lockSQL(t *table, exclusive bool) (sql string, args int) {
	if l.tables == nil {
		l.tables = map[string]lockMode{}
	}
	mode := l.tables[t.name]
	if mode == exclusiveLock {
		return "", 0
	}
	if l.keys >= keyLockBudget {
		l.tables[t.name] = exclusiveLock
		return t.locks.table, 2
	}
	l.keys++
	i := 0
	if exclusive {
		i = 1
	}
	if mode == unlocked {
		l.tables[t.name] = sharedLock
		return t.locks.tableAndKey[i], 2 + len(t.keys)
	}
	return t.locks.key[i], 2 + len(t.keys)
}

// tableLocks are a table's lock statements, built once with its other
// statements: [0] shared, [1] exclusive.
type tableLocks struct {
	table       string    // the table's lock, exclusively
	key         [2]string // the key's lock
	tableAndKey [2]string // the table's in shared mode, then the key's
}

func newTableLocks(keys int) tableLocks {
	tableHash := "hashtext($1::text || '.' || $2::text)"
	keyHash := "hashtext($1::text || '.' || $2::text || ':' || " + keyTextSQL(keys) + ")"
	var l tableLocks
	l.table = "SELECT pg_advisory_xact_lock(" + tableLockClass + ", " + tableHash + ")"
	for i, fn := range [2]string{"pg_advisory_xact_lock_shared", "pg_advisory_xact_lock"} {
		l.key[i] = "SELECT " + fn + "(" + keyLockClass + ", " + keyHash + ")"
		l.tableAndKey[i] = "SELECT pg_advisory_xact_lock_shared(" + tableLockClass + ", " + tableHash + "), " +
			fn + "(" + keyLockClass + ", " + keyHash + ")"
	}
	return l
}

// lockKey takes what the slow path needs before it reads a row: the key's
// lock exclusively (or its table's, past the budget). When it is granted,
// what another worker decided about the key is committed and visible.
func (s *session) lockKey(ctx context.Context, t *table, key stream.Tuple) error {
	sql, args := s.locks.lockSQL(t, true)
	if sql == "" {
		return nil
	}
	if _, err := s.conn.PgConn().ExecParams(ctx, sql, t.tombstoneParams(key)[:args], nil, nil, nil).Close(); err != nil {
		return fmt.Errorf("lock a key of %s: %w", t.name, err)
	}
	return nil
}

// queueKeyLock adds the lock a fast-path insert of key takes to b, and
// reports whether it added a statement.
func (s *session) queueKeyLock(ctx context.Context, b *pgconn.Batch, t *table, params [][]byte) (bool, error) {
	sql, args := s.locks.lockSQL(t, false)
	if sql == "" {
		return false, nil
	}
	return true, s.stmts.queue(ctx, s.conn.PgConn(), b, sql, params[:args])
}
