package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgactive-go/pgactive/stream"
)

// errNeedsResolution marks a chunk whose fast path found a row in a state it
// did not expect (missing, or already there): it is redone change by change.
var errNeedsResolution = errors.New("row state needs conflict resolution")

const savepoint = "SAVEPOINT pgactive_chunk"

// applyChanges applies one chunk inside the open local transaction. The fast
// path sends the whole chunk in one round trip; if any row is not in the
// expected state, the chunk is rolled back to its savepoint and applied
// change by change with conflict resolution.
func (s *session) applyChanges(ctx context.Context, txn *stream.Txn) error {
	tables, err := s.resolveTables(txn)
	if err != nil {
		return err
	}
	if txn.Chunk == 0 {
		// Every applied transaction must set these: PostgreSQL keeps the
		// previous values otherwise.
		_, err := s.conn.Exec(ctx, "SELECT pg_replication_origin_xact_setup($1::text::pg_lsn, $2::timestamptz)",
			txn.CommitLSN.String(), txn.Time())
		if err != nil {
			return fmt.Errorf("set origin position: %w", err)
		}
	}
	for i := range txn.Changes {
		if txn.Changes[i].Op == stream.OpMessage { // DDL runs statement by statement
			return s.slowPath(ctx, txn, tables)
		}
	}
	err = s.fastPath(ctx, txn, tables)
	if errors.Is(err, errNeedsResolution) {
		if _, rerr := s.conn.Exec(ctx, "ROLLBACK TO "+strings.TrimPrefix(savepoint, "SAVEPOINT ")); rerr != nil {
			return fmt.Errorf("roll back chunk: %w", rerr)
		}
		return s.slowPath(ctx, txn, tables)
	}
	return err
}

// resolveTables maps the chunk's relations to cached statement sets.
func (s *session) resolveTables(txn *stream.Txn) ([]*table, error) {
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
	return out, nil
}

// expect is what a fast-path statement must report for the chunk to stand.
type expect uint8

const (
	expectAny  expect = iota
	expectOne         // a row written
	expectNone        // no row found
)

func (s *session) fastPath(ctx context.Context, txn *stream.Txn, tables []*table) error {
	b := &pgconn.Batch{}
	exp := make([]expect, 0, len(txn.Changes)+1)
	b.ExecParams(savepoint, nil, nil, nil, nil)
	exp = append(exp, expectAny)
	for i := range txn.Changes {
		c := &txn.Changes[i]
		sql, params, err := statement(c, tables)
		if err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
		if c.Op == stream.OpInsert && s.tombstones && len(tables[c.Rel].keys) > 0 {
			// An insert of a key deleted since is decided by the slow path.
			t := tables[c.Rel]
			b.ExecParams("SELECT 1 FROM pgactive.pgactive_tombstones WHERE "+t.tombstone, t.tombstoneParams(c.New), nil, nil, nil)
			exp = append(exp, expectNone)
		}
		b.ExecParams(sql, params, nil, nil, nil)
		e := expectOne
		if c.Op == stream.OpTruncate {
			e = expectAny
		}
		exp = append(exp, e)
	}
	results, err := s.conn.PgConn().ExecBatch(ctx, b).ReadAll()
	if err != nil {
		if isRowStateError(err) {
			return errNeedsResolution
		}
		return err
	}
	for i, r := range results {
		if i >= len(exp) {
			break
		}
		switch {
		case exp[i] == expectOne && r.CommandTag.RowsAffected() != 1,
			exp[i] == expectNone && len(r.Rows) > 0:
			return errNeedsResolution
		}
	}
	s.w.status.countChanges(txn.Changes)
	return nil
}

// statement renders one change as SQL with text-format parameters; the
// server infers each parameter's type from its column, so every type
// round-trips through its own text form.
func statement(c *stream.Change, tables []*table) (string, [][]byte, error) {
	if c.Op == stream.OpTruncate {
		return truncateSQL(c, tables), nil, nil
	}
	return rowStatement(c, tables[c.Rel], false)
}

// rowStatement renders an insert, update or delete of table t. Updates and
// deletes touch only rows last written by the worker's origin, unless anyRow.
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
// assumed (a key already present).
func isRowStateError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" // unique_violation
}
