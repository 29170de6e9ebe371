package integration

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Apply's advisory locks (apply/keylocks.go), as a worker deciding about a
// missing row takes them: the table's lock in shared mode, then the key's
// exclusively. The classes and hashes are part of the locking protocol.
const decidingLocksSQL = `SELECT pg_advisory_xact_lock_shared(1885823348, hashtext('public.items')),
	pg_advisory_xact_lock(1885823331, hashtext('public.items:' || (ARRAY[$1::text]::text[])::text))`

// waitingFor reports whether a backend waits for an advisory lock of class.
func waitingFor(t *testing.T, conn *pgx.Conn, class uint32) bool {
	t.Helper()
	return count(t, conn, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = $1`, int64(class)) > 0
}

// TestConflictKeyLockedWhileDeciding: while a worker decides about a key
// that has no row (here the test, holding the locks a deciding worker
// holds, and inserting the key locally), another origin's fast-path insert
// of that key waits instead of slipping in unseen; then it meets the row
// and resolves insert_insert, and both nodes converge. A small transaction
// waits for the key's lock; one past the per-transaction budget of key locks
// waits for the table's lock. Without the locks the remote insert would
// land first and the local insert would fail with a duplicate key.
func TestConflictKeyLockedWhileDeciding(t *testing.T) {
	p := newPair(t, itemsSchema, [2]string{"n1", "n2"}, [2]string{})
	ctx := context.Background()
	observer := p.pgs[1].Connect(t, "app")

	// Each case leaves no 'remote' row behind but those of its own
	// transaction that lost nothing.
	cases := []struct {
		name   string
		key    int
		remote string
		rows   int    // rows of the remote transaction
		class  uint32 // the lock apply waits for
	}{
		{"key lock", 7, `INSERT INTO items VALUES (7, 'remote', 1)`, 1, 1885823331},
		{"table lock past the budget", 1090, `INSERT INTO items SELECT g, 'remote', 1 FROM generate_series(1000, 1099) g`, 100, 1885823348},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			decider := p.pgs[1].Connect(t, "app")
			tx, err := decider.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, decidingLocksSQL, strconv.Itoa(tc.key)); err != nil {
				t.Fatal(err)
			}
			mustExec(t, p.conns[0], `DELETE FROM items WHERE val = 'remote'`)
			WaitSameRows(t, time.Minute, "items", p.conns[0], p.conns[1])
			mustExec(t, p.conns[0], tc.remote)
			WaitFor(t, 30*time.Second, "n2's apply waits for the lock", func() (bool, error) {
				return waitingFor(t, observer, tc.class), nil
			})
			if got := count(t, observer, `SELECT count(*) FROM items WHERE val = 'remote'`); got != 0 {
				t.Fatalf("remote rows on n2 while the key is locked: %d, want none", got)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO items VALUES ($1, 'local', 2)`, tc.key); err != nil {
				t.Fatalf("local insert of a key being decided: %v", err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			WaitSameRows(t, time.Minute, "items", p.conns[0], p.conns[1])
			for i, c := range p.conns {
				if got := count(t, c, `SELECT count(*) FROM items WHERE id = $1 AND val = 'local'`, tc.key); got != 1 {
					t.Errorf("n%d: key %d does not hold the later, local row", i+1, tc.key)
				}
				if got := count(t, c, `SELECT count(*) FROM items WHERE val = 'remote'`); got != tc.rows-1 {
					t.Errorf("n%d: %d remote rows, want %d", i+1, got, tc.rows-1)
				}
				if got := count(t, c, `SELECT count(*) FROM pgactive.pgactive_conflict_history
					WHERE conflict_type = 'insert_insert' AND local_tuple->>'id' = $1`, strconv.Itoa(tc.key)); got != 1 {
					t.Errorf("n%d: %d insert_insert rows for key %d, want 1", i+1, got, tc.key)
				}
			}
		})
	}
}

// TestConflictLocalCommitWhileDeciding: apply waits for a row's lock while a
// local transaction that changed the row is open; when that transaction
// commits, the decision is taken on the committed version, its commit time
// and origin, not on the version apply first saw. The local update is the
// later one, so it stays on both nodes. In one case the row was last written
// by n2, so n1's update takes the slow path at once and waits in its read of
// the row; in the other it was last written by n1, so the fast path's update
// is the one that waits and must find, re-checking the row it waited for,
// that n1 no longer wrote it. The first case lost the local update when the
// commit time and origin were read with a join (apply/resolve.go lockRowSQL);
// the second guards the fast path's re-check.
func TestConflictLocalCommitWhileDeciding(t *testing.T) {
	p := newPair(t, itemsSchema, [2]string{"n1", "n2"}, [2]string{})
	ctx := context.Background()
	observer := p.pgs[1].Connect(t, "app")
	const history = `SELECT count(*) FROM pgactive.pgactive_conflict_history
		WHERE conflict_type = 'update_update' AND conflict_resolution = $1 AND remote_tuple->>'id' = $2`
	for _, tc := range []struct {
		name    string
		id      int
		creator int // the node that writes the row first
	}{
		{"slow path waits", 1, 1},
		{"fast path waits", 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustExec(t, p.conns[tc.creator], `INSERT INTO items VALUES ($1, 'start', 0)`, tc.id)
			WaitSameRows(t, time.Minute, "items", p.conns[0], p.conns[1])

			local := p.pgs[1].Connect(t, "app")
			tx, err := local.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, `UPDATE items SET val = 'local' WHERE id = $1`, tc.id); err != nil {
				t.Fatal(err)
			}
			mustExec(t, p.conns[0], `UPDATE items SET val = 'remote' WHERE id = $1`, tc.id)
			WaitFor(t, 30*time.Second, "n2's apply waits for the row", func() (bool, error) {
				return count(t, observer, `SELECT count(*) FROM pg_stat_activity
					WHERE application_name LIKE 'pgactive:%:apply' AND wait_event_type = 'Lock'`) > 0, nil
			})
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			WaitSameRows(t, time.Minute, "items", p.conns[0], p.conns[1])
			for i, c := range p.conns {
				if got := count(t, c, `SELECT count(*) FROM items WHERE id = $1 AND val = 'local'`, tc.id); got != 1 {
					t.Errorf("n%d: the later, local update was lost", i+1)
				}
			}
			id := strconv.Itoa(tc.id)
			for i, res := range []string{"last_update_wins_keep_remote", "last_update_wins_keep_local"} {
				if got := count(t, p.conns[i], history, res, id); got != 1 {
					t.Errorf("n%d: %d update_update/%s conflicts on row %s, want 1", i+1, got, res, id)
				}
			}
		})
	}
}
