package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgactive-go/pgactive/stream"
)

// errNeedsResolution marks a transaction or chunk whose fast path found a
// row in a state it did not expect (missing, or already there): it is redone
// change by change.
var errNeedsResolution = errors.New("row state needs conflict resolution")

// applyChanges applies one chunk inside the open local transaction. The fast
// path sends the whole chunk in one round trip under a savepoint; if any row
// is not in the expected state, the chunk is rolled back to the savepoint
// and applied change by change with conflict resolution. With resolve set,
// it goes change by change at once.
func (s *session) applyChanges(ctx context.Context, txn *stream.Txn, resolve bool) error {
	tables := s.resolveTables(txn)
	if resolve || !pipelinedChanges(txn) {
		return s.slowPath(ctx, txn, tables)
	}
	b := &pgconn.Batch{}
	b.ExecParams("SAVEPOINT pgactive_chunk", nil, nil, nil, nil)
	locks := s.locks.save()
	n, err := s.queueChanges(ctx, b, txn, tables)
	if err != nil {
		return err
	}
	ok, err := s.execBatch(ctx, b)
	if err == nil {
		return nil
	}
	if ok == 0 || ok > n || !isRowStateError(err) {
		return err
	}
	if _, err := s.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT pgactive_chunk"); err != nil {
		return fmt.Errorf("roll back chunk: %w", err)
	}
	s.locks = locks // the locks taken since the savepoint are released
	return s.slowPath(ctx, txn, tables)
}

// pipelinedChanges reports whether a chunk's changes can all be sent at
// once: DDL runs statement by statement.
func pipelinedChanges(txn *stream.Txn) bool {
	for i := range txn.Changes {
		if txn.Changes[i].Op == stream.OpMessage {
			return false
		}
	}
	return true
}

// resolveTables maps the chunk's relations to cached statement sets.
func (s *session) resolveTables(txn *stream.Txn) []*table {
	out := make([]*table, len(txn.Relations))
	for i := range txn.Relations {
		rel := &txn.Relations[i]
		key := rel.QualifiedName()
		t, ok := s.tables[key]
		if !ok || !t.sameShape(rel) {
			t = newTable(*rel, s.roident)
			s.tables[key] = t
		}
		out[i] = t
	}
	return out
}

// queueChanges adds the statements of txn's changes to b and returns how
// many. The server checks each row's state: an update or delete that finds
// no row last written by the worker's origin, or an insert of a key that
// exists or was deleted recently, fails with a row-state error
// (isRowStateError), so that a whole transaction can be sent in one round
// trip and still fall back to conflict resolution.
func (s *session) queueChanges(ctx context.Context, b *pgconn.Batch, txn *stream.Txn, tables []*table) (int, error) {
	pg := s.conn.PgConn()
	n := 0
	for i := range txn.Changes {
		c := &txn.Changes[i]
		if c.Op == stream.OpTruncate {
			b.ExecParams(truncateSQL(c, tables), nil, nil, nil, nil)
			n++
			continue
		}
		t := tables[c.Rel]
		if c.Op == stream.OpInsert && s.tombstones && len(t.keys) > 0 {
			// The key's lock first (keylocks.go): no other origin's worker
			// is deciding about it once granted. Then an insert of a key
			// deleted since is decided by the slow path.
			params := t.tombstoneParams(c.New)
			locked, err := s.queueKeyLock(ctx, b, t, params)
			if err != nil {
				return 0, err
			}
			if locked {
				n++
			}
			if err := s.stmts.queue(ctx, pg, b, t.tombstoneProbe, params); err != nil {
				return 0, err
			}
			n++
		}
		sql, params, err := rowStatement(c, t, false)
		if err != nil {
			return 0, fmt.Errorf("change %d: %w", i, err)
		}
		if err := s.stmts.queue(ctx, pg, b, sql, params); err != nil {
			return 0, err
		}
		n++
	}
	return n, nil
}

// rowStatement renders an insert, update or delete of table t. Updates and
// deletes touch only rows last written by the worker's origin, and fail with
// a row-state error unless they found one, unless anyRow.
func rowStatement(c *stream.Change, t *table, anyRow bool) (string, [][]byte, error) {
	switch c.Op {
	case stream.OpInsert:
		params := make([][]byte, len(c.New))
		for i, d := range c.New {
			params[i] = param(d)
		}
		return t.insert, params, nil
	case stream.OpUpdate:
		if len(t.keys) == 0 {
			return "", nil, fmt.Errorf("table %s has no replica identity on the origin: add a primary key", t.name)
		}
		sql, set := t.updateSQLFor(c.New, anyRow)
		params := t.keyParams(oldKey(c), make([][]byte, 0, len(t.keys)+len(set)))
		for _, i := range set {
			params = append(params, param(c.New[i]))
		}
		return sql, params, nil
	case stream.OpDelete:
		if len(t.keys) == 0 {
			return "", nil, fmt.Errorf("table %s has no replica identity on the origin: add a primary key", t.name)
		}
		sql := t.delete
		if anyRow {
			sql = t.deleteAny
		}
		return sql, t.keyParams(c.Old, nil), nil
	}
	return "", nil, fmt.Errorf("unknown op %v", c.Op)
}

func truncateSQL(c *stream.Change, tables []*table) string {
	names := make([]string, len(c.Truncated))
	for i, r := range c.Truncated {
		names[i] = tables[r].name
	}
	sql := "TRUNCATE ONLY " + strings.Join(names, ", ")
	if c.TruncateFlags&stream.TruncateRestartIdentity != 0 {
		sql += " RESTART IDENTITY"
	}
	if c.TruncateFlags&stream.TruncateCascade != 0 {
		sql += " CASCADE"
	}
	return sql
}

// isRowStateError reports errors that mean a row was not where the fast path
// assumed: a key already present (unique_violation), or a row check of
// checkedOne or the tombstone probe failing (division_by_zero).
func isRowStateError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "22012")
}
