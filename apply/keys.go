package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgactive-go/pgactive/stream"
)

// Apply finds the row an update or delete targets, and decides conflicts,
// by key. The key columns are those the origin flags as its replica
// identity, checked here against this node's primary key:
//
//   - the same columns: nothing to do;
//   - every column (REPLICA IDENTITY FULL sends the whole old row) or none
//     (the origin has no key: only inserts arrive): this node's primary key
//     is used, its values taken from the row sent, when the relation has all
//     its columns;
//   - this node has no primary key: inserts apply, an update or delete is
//     refused with a *SchemaError that says to add one on every node (rows
//     without a key cannot be matched or decided alike on every node);
//   - other columns: refused, the primary keys differ between the nodes.
//
// A refused transaction is retried with backoff like any apply error, and
// goes through once the table has the key.

// primaryKey is this node's primary key of a table.
type primaryKey struct {
	exists bool     // the table exists
	name   string   // constraint name, "" without a primary key
	cols   []string // its columns, in key order
}

// keyCache holds this node's primary keys of the tables one apply session
// met, by quoted name: a key added to mend an error is seen by the next
// session at the latest.
type keyCache struct {
	owner *session
	keys  map[string]primaryKey
}

// of returns the cache of session s, emptied when s is a new session.
func (c *keyCache) of(s *session) map[string]primaryKey {
	if c.owner != s || c.keys == nil {
		c.owner, c.keys = s, map[string]primaryKey{}
	}
	return c.keys
}

// keyNeed is what a chunk does to a relation.
type keyNeed uint8

const (
	needNothing keyNeed = iota
	needInsert          // inserts only: a key only decides conflicts
	needKey             // updates or deletes: the row must be found by key
)

// matchKeys checks the key columns of the chunk's relations against this
// node's primary keys and, where the origin sent the whole row or no key,
// makes this node's primary key the relations' key (see above). It runs
// before the chunk's statements are built. Chunks that carry DDL are left
// as sent: the DDL may change the keys, which are read again afterwards.
func (s *session) matchKeys(ctx context.Context, txn *stream.Txn) error {
	cache := s.w.keys.of(s)
	need := make([]keyNeed, len(txn.Relations))
	for i := range txn.Changes {
		c := &txn.Changes[i]
		if c.Op == stream.OpMessage {
			clear(cache)
			return nil
		}
		if c.Rel < 0 || c.Rel >= len(need) {
			continue
		}
		switch c.Op {
		case stream.OpInsert:
			need[c.Rel] = max(need[c.Rel], needInsert)
		case stream.OpUpdate, stream.OpDelete:
			need[c.Rel] = needKey
		}
	}
	for i, n := range need {
		if n == needNothing {
			continue
		}
		rel := &txn.Relations[i]
		name := relName(rel)
		pk, cached := cache[name]
		if !cached {
			var err error
			if pk, err = readPrimaryKey(ctx, s.conn, name); err != nil {
				return err
			}
			cache[name] = pk
		}
		err := matchKey(rel, pk, n == needKey, s.w.cfg.Origin, s.w.cfg.Target)
		if err != nil && cached { // refuse on a fresh read only: the key may have been added since
			if pk, err = readPrimaryKey(ctx, s.conn, name); err != nil {
				return err
			}
			cache[name] = pk
			err = matchKey(rel, pk, n == needKey, s.w.cfg.Origin, s.w.cfg.Target)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// readPrimaryKey reads this node's primary key of the table with quoted name.
func readPrimaryKey(ctx context.Context, conn *pgx.Conn, name string) (primaryKey, error) {
	var pk primaryKey
	err := conn.QueryRow(ctx, `SELECT t.oid IS NOT NULL,
			coalesce((SELECT con.conname::text FROM pg_constraint con WHERE con.conrelid = t.oid AND con.contype = 'p'), ''),
			(SELECT array_agg(a.attname::text ORDER BY k.ord)
			 FROM pg_constraint con
			 CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
			 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
			 WHERE con.conrelid = t.oid AND con.contype = 'p')
		FROM (SELECT to_regclass($1) AS oid) t`, name).Scan(&pk.exists, &pk.name, &pk.cols)
	if err != nil {
		return primaryKey{}, fmt.Errorf("read the primary key of %s: %w", name, err)
	}
	return pk, nil
}

// matchKey checks rel's key columns against pk, this node's primary key,
// and makes pk rel's key where the origin sent the whole row or no key. It
// returns a *SchemaError where the keys cannot be matched. A table missing
// here passes: its statement fails, and explain says so.
func matchKey(rel *stream.Relation, pk primaryKey, need bool, origin, target string) error {
	if !pk.exists {
		return nil
	}
	keys := keyColumns(rel)
	switch {
	case len(pk.cols) == 0:
		if need {
			return noPrimaryKey(rel, origin, target, false)
		}
		return nil
	case sameColumns(keys, pk.cols):
		return nil
	case len(keys) == 0 && need:
		return noPrimaryKey(rel, origin, target, true)
	case len(keys) == 0 || len(keys) == len(rel.Columns):
		for _, c := range pk.cols {
			if columnIndex(rel, c) < 0 {
				return keyDiffers(rel, pk, keys, origin, target)
			}
		}
		for j := range rel.Columns {
			rel.Columns[j].Key = slices.Contains(pk.cols, rel.Columns[j].Name)
		}
		return nil
	}
	return keyDiffers(rel, pk, keys, origin, target)
}

// keyColumns lists the columns rel flags as key.
func keyColumns(rel *stream.Relation) []string {
	var out []string
	for _, c := range rel.Columns {
		if c.Key {
			out = append(out, c.Name)
		}
	}
	return out
}

func sameColumns(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// columnList renders column names as SQL: ("a", "b").
func columnList(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = pgx.Identifier{c}.Sanitize()
	}
	return "(" + strings.Join(q, ", ") + ")"
}

// noPrimaryKey is the error of a change that needs a key on a table without
// a primary key: on the origin (originLacks: it sent no key columns) or on
// this node.
func noPrimaryKey(rel *stream.Relation, origin, target string, originLacks bool) *SchemaError {
	table := relName(rel)
	cols := "(...)"
	if keys := keyColumns(rel); len(keys) > 0 && len(keys) < len(rel.Columns) {
		cols = columnList(keys)
	}
	fix := fmt.Sprintf("add one on every node (ALTER TABLE %s ADD PRIMARY KEY %s); ", table, cols)
	if originLacks {
		return &SchemaError{
			Table:   table,
			Problem: fmt.Sprintf("table %s has no primary key on node %q", table, origin),
			Fix:     fix + "without one, only inserts that meet no other row are replicated",
		}
	}
	problem := fmt.Sprintf("table %s has no primary key on node %q", table, target)
	if len(rel.Columns) > 1 && len(keyColumns(rel)) == len(rel.Columns) {
		problem += fmt.Sprintf(" (node %q sends the whole row as its key, REPLICA IDENTITY FULL, so it may have none either)", origin)
	}
	return &SchemaError{
		Table:   table,
		Problem: problem,
		Fix: fix + fmt.Sprintf("without one, updates and deletes from node %q cannot be matched to their row alike on every node; apply resumes once the key exists",
			origin),
	}
}

// keyDiffers is the error of a table whose primary key on this node is not
// the key the origin sends.
func keyDiffers(rel *stream.Relation, pk primaryKey, keys []string, origin, target string) *SchemaError {
	table := relName(rel)
	var missing []string
	for _, c := range pk.cols {
		if columnIndex(rel, c) < 0 {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return &SchemaError{
			Table:  table,
			Column: missing[0],
			Problem: fmt.Sprintf("the primary key of table %s on node %q is %s, but node %q has no column %s",
				table, target, columnList(pk.cols), origin, strings.TrimSuffix(strings.TrimPrefix(columnList(missing), "("), ")")),
			Fix: fmt.Sprintf("make the table and its primary key the same on every node, %s", ddlHint),
		}
	}
	return &SchemaError{
		Table: table,
		Problem: fmt.Sprintf("the primary key of table %s differs between nodes: %s on node %q, %s on node %q",
			table, columnList(pk.cols), target, columnList(keys), origin),
		Fix: fmt.Sprintf("make it the same on every node, e.g. on node %q: ALTER TABLE %s DROP CONSTRAINT %s, ADD PRIMARY KEY %s",
			target, table, pgx.Identifier{pk.name}.Sanitize(), columnList(keys)),
	}
}

// keyError ends the application of txn after matchKeys refused it: a
// schema error is recorded like an apply error (recordAbort); a failure
// to read the keys is returned as is, to be retried.
func (s *session) keyError(ctx context.Context, txn *stream.Txn, err error) error {
	var se *SchemaError
	if errors.As(err, &se) {
		err = s.recordAbort(ctx, txn, err)
	}
	return fmt.Errorf("apply transaction %s from %q: %w", txn.CommitLSN, s.w.cfg.Origin, err)
}
