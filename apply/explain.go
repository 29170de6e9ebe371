package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgactive-go/pgactive/stream"
)

// SchemaError is an apply error caused by a table that differs between the
// origin and this node: a missing table or column, a column of another
// type, a missing or different primary key. It says what differs and how to
// make the tables the same; apply retries the transaction until they are.
type SchemaError struct {
	// Table is the table concerned, quoted as SQL ("public"."items"), or "".
	Table string
	// Column is the column concerned, or "".
	Column string
	// Problem says what differs, Fix how to mend it.
	Problem, Fix string
	// Err is the error the difference caused, or nil when apply found the
	// difference before running a statement.
	Err error
}

// Message is the problem and its fix, without the underlying error.
func (e *SchemaError) Message() string { return e.Problem + ": " + e.Fix }

func (e *SchemaError) Error() string {
	if e.Err == nil {
		return e.Message()
	}
	return e.Message() + " (" + e.Err.Error() + ")"
}

func (e *SchemaError) Unwrap() error { return e.Err }

// SQLSTATEs explain turns into a SchemaError.
const (
	pgUndefinedTable     = "42P01"
	pgUndefinedColumn    = "42703"
	pgNotNullViolation   = "23502"
	pgDatatypeMismatch   = "42804"
	pgCannotCoerce       = "42846"
	pgInvalidText        = "22P02"
	pgOutOfRange         = "22003"
	pgRightTruncation    = "22001"
	pgInvalidDatetime    = "22007"
	pgDatetimeOverflow   = "22008"
	pgUntranslatableChar = "22P05"
	pgNotInRepertoire    = "22021"
)

// typeError reports the SQLSTATEs of a value that the local column cannot
// take: a column whose type differs from the origin's.
func typeError(code string) bool {
	switch code {
	case pgDatatypeMismatch, pgCannotCoerce, pgInvalidText, pgOutOfRange, pgRightTruncation,
		pgInvalidDatetime, pgDatetimeOverflow, pgUntranslatableChar, pgNotInRepertoire:
		return true
	}
	return false
}

// firstNormalOID is the first OID PostgreSQL gives to objects it did not
// create at initdb: built-in types below it have the same OID on every node.
const firstNormalOID = 16384

// localColumn is a column of a table on this node.
type localColumn struct {
	Name    string
	TypeOID uint32
	Type    string // format_type, with its modifier
}

// schemaFacts is what explain knows besides the error: the nodes, the
// failed chunk's relations as the origin sent them and, where they were
// read, this node's columns of those tables.
type schemaFacts struct {
	Origin, Target string
	Relations      []stream.Relation
	// Local holds this node's columns by quoted table name; a table read
	// but not found has an empty entry, a table not read none.
	Local map[string][]localColumn
	// TypeNames names the origin's built-in column types, as this node
	// prints them (format_type).
	TypeNames map[uint32]string
}

// explain turns an error met applying a chunk into a *SchemaError that says
// what differs between the origin's table and this node's and how to fix
// it, keeping err as its cause. Other errors are returned unchanged. It is
// a pure function of err and f.
func explain(err error, f schemaFacts) error {
	var se *SchemaError
	if err == nil || errors.As(err, &se) {
		return err
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		if out := f.noOriginKey(err); out != nil {
			return out
		}
		return err
	}
	var out *SchemaError
	switch {
	case pe.Code == pgUndefinedTable:
		out = f.missingTable(pe)
	case pe.Code == pgUndefinedColumn:
		out = f.missingColumn(pe)
	case pe.Code == pgNotNullViolation:
		out = f.notNull(pe)
	case typeError(pe.Code):
		out = f.typeDiffers()
	}
	if out == nil {
		return err
	}
	out.Err = err
	return out
}

// ddlHint is the other way to mend a schema difference, the one that keeps
// it from happening again.
const ddlHint = "or run DDL through pgactive.pgactive_replicate_ddl_command so that every node gets it"

func (f *schemaFacts) missingTable(pe *pgconn.PgError) *SchemaError {
	name, _ := quotedAfter(pe.Message, "relation ")
	table := ""
	if rel := f.relationNamed(name); rel != nil {
		table = relName(rel)
	} else if name != "" {
		table = qualifiedIdentifier(name)
	} else if len(f.Relations) == 1 {
		table = relName(&f.Relations[0])
	}
	if table == "" {
		return nil
	}
	return &SchemaError{
		Table:   table,
		Problem: fmt.Sprintf("table %s does not exist on node %q", table, f.Target),
		Fix:     fmt.Sprintf("create it with the same columns as on node %q, %s; apply resumes once it exists", f.Origin, ddlHint),
	}
}

func (f *schemaFacts) missingColumn(pe *pgconn.PgError) *SchemaError {
	col, ok := quotedAfter(pe.Message, "column ")
	if !ok { // column x.name does not exist: an alias-qualified name, unquoted
		rest, found := strings.CutPrefix(pe.Message, "column ")
		if !found {
			return nil
		}
		ref, _, _ := strings.Cut(rest, " ")
		_, col, _ = strings.Cut(ref, ".")
	}
	if col == "" {
		return nil
	}
	relText, _ := quotedAfter(pe.Message, " of relation ")
	var rel *stream.Relation
	for i := range f.Relations {
		r := &f.Relations[i]
		if (relText == "" || relText == r.Table || relText == r.QualifiedName()) && columnIndex(r, col) >= 0 {
			rel = r
			break
		}
	}
	if rel == nil {
		return nil
	}
	table, column := relName(rel), pgx.Identifier{col}.Sanitize()
	typ := f.typeName(rel.Columns[columnIndex(rel, col)].TypeOID)
	return &SchemaError{
		Table:   table,
		Column:  col,
		Problem: fmt.Sprintf("column %s of table %s does not exist on node %q", column, table, f.Target),
		Fix: fmt.Sprintf("add it as it is on node %q (ALTER TABLE %s ADD COLUMN %s %s), %s; apply resumes once it exists",
			f.Origin, table, column, typ, ddlHint),
	}
}

// notNull explains a NOT NULL column the origin does not have. A NULL the
// origin did send is not a schema difference apply can tell.
func (f *schemaFacts) notNull(pe *pgconn.PgError) *SchemaError {
	if pe.ColumnName == "" || pe.TableName == "" {
		return nil
	}
	rel := f.relationNamed(pe.SchemaName + "." + pe.TableName)
	if rel == nil || columnIndex(rel, pe.ColumnName) >= 0 {
		return nil
	}
	table, column := relName(rel), pgx.Identifier{pe.ColumnName}.Sanitize()
	return &SchemaError{
		Table:  table,
		Column: pe.ColumnName,
		Problem: fmt.Sprintf("column %s of table %s is NOT NULL without a default on node %q, and node %q has no such column",
			column, table, f.Target, f.Origin),
		Fix: fmt.Sprintf("make the table the same on every node: add the column on node %q, or give it a default on node %q (ALTER TABLE %s ALTER COLUMN %s SET DEFAULT ...), %s",
			f.Origin, f.Target, table, column, ddlHint),
	}
}

// typeDiffers finds the columns whose type differs between the origin and
// this node. Without this node's columns, or when the types look the same
// (a length or precision apart), it names what to compare.
func (f *schemaFacts) typeDiffers() *SchemaError {
	type mismatch struct {
		rel   *stream.Relation
		col   string
		local localColumn
		oid   uint32
	}
	var found []mismatch
	for i := range f.Relations {
		rel := &f.Relations[i]
		local := f.Local[relName(rel)]
		for _, c := range rel.Columns {
			if c.TypeOID >= firstNormalOID {
				continue // a type of its own on each node: OIDs differ
			}
			for _, lc := range local {
				if lc.Name == c.Name && lc.TypeOID != c.TypeOID {
					found = append(found, mismatch{rel: rel, col: c.Name, local: lc, oid: c.TypeOID})
				}
			}
		}
	}
	if len(found) == 0 {
		table := "a table"
		var name string
		if len(f.Relations) == 1 {
			name = relName(&f.Relations[0])
			table = "table " + name
		}
		return &SchemaError{
			Table:   name,
			Problem: fmt.Sprintf("a value from node %q does not fit a column of %s on node %q: the column types differ", f.Origin, table, f.Target),
			Fix: fmt.Sprintf("compare the columns' types, lengths and precision on both nodes and make them the same (ALTER TABLE ... ALTER COLUMN ... TYPE ...), %s",
				ddlHint),
		}
	}
	m := found[0]
	table, column := relName(m.rel), pgx.Identifier{m.col}.Sanitize()
	originType := f.typeName(m.oid)
	fix := fmt.Sprintf("make it the same on every node, e.g. on node %q: ALTER TABLE %s ALTER COLUMN %s TYPE %s USING %s::%s, %s",
		f.Target, table, column, originType, column, originType, ddlHint)
	if len(found) > 1 {
		others := make([]string, 0, len(found)-1)
		for _, o := range found[1:] {
			others = append(others, relName(o.rel)+"."+pgx.Identifier{o.col}.Sanitize())
		}
		fix += "; the type of " + strings.Join(others, ", ") + " differs too"
	}
	return &SchemaError{
		Table:  table,
		Column: m.col,
		Problem: fmt.Sprintf("column type differs from node %q: column %s of table %s is %s on node %q but %s on node %q",
			f.Origin, column, table, m.local.Type, f.Target, originType, f.Origin),
		Fix: fix,
	}
}

// noOriginKeySuffix ends the error rowStatement and slowPath return for a
// table whose changes arrive without key columns.
const noOriginKeySuffix = " has no replica identity on the origin: add a primary key"

// noOriginKey explains the error of a change that needs a key (an update,
// a delete, an insert in conflict) on a table the origin sent without one.
func (f *schemaFacts) noOriginKey(err error) *SchemaError {
	msg := err.Error()
	if !strings.Contains(msg, noOriginKeySuffix) {
		return nil
	}
	for i := range f.Relations {
		rel := &f.Relations[i]
		if strings.Contains(msg, "table "+relName(rel)+noOriginKeySuffix) {
			e := noPrimaryKey(rel, f.Origin, f.Target, true)
			e.Err = err
			return e
		}
	}
	return nil
}

// relationNamed finds a relation by the name PostgreSQL printed for it:
// schema.table or table.
func (f *schemaFacts) relationNamed(name string) *stream.Relation {
	for i := range f.Relations {
		if r := &f.Relations[i]; name == r.QualifiedName() || name == r.Table {
			return r
		}
	}
	return nil
}

// typeName names a type of the origin for SQL: as this node prints it, or
// pgx's name of a built-in type, or a description.
func (f *schemaFacts) typeName(oid uint32) string {
	if n, ok := f.TypeNames[oid]; ok && n != "" {
		return n
	}
	if oid < firstNormalOID {
		if t, ok := pgtype.NewMap().TypeForOID(oid); ok {
			return t.Name
		}
	}
	return fmt.Sprintf("<its type on node %q>", f.Origin)
}

func relName(rel *stream.Relation) string { return pgx.Identifier{rel.Schema, rel.Table}.Sanitize() }

// qualifiedIdentifier quotes a name PostgreSQL printed as schema.table.
func qualifiedIdentifier(name string) string {
	if schema, table, ok := strings.Cut(name, "."); ok {
		return pgx.Identifier{schema, table}.Sanitize()
	}
	return pgx.Identifier{name}.Sanitize()
}

func columnIndex(rel *stream.Relation, name string) int {
	for i, c := range rel.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// quotedAfter returns the double-quoted text that follows prefix in msg.
func quotedAfter(msg, prefix string) (string, bool) {
	i := strings.Index(msg, prefix+`"`)
	if i < 0 {
		return "", false
	}
	rest := msg[i+len(prefix)+1:]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return "", false
	}
	return rest[:j], true
}

// explainTimeout bounds the catalog reads of explainError.
const explainTimeout = 5 * time.Second

// explainError explains an error met applying txn (see explain), reading
// this node's columns of the chunk's tables when the error needs them.
func (s *session) explainError(ctx context.Context, txn *stream.Txn, err error) error {
	f := schemaFacts{Origin: s.w.cfg.Origin, Target: s.w.cfg.Target, Relations: txn.Relations}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (typeError(pe.Code) || pe.Code == pgUndefinedColumn) && ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, explainTimeout)
		defer cancel()
		f.Local, f.TypeNames = readColumns(rctx, s.conn, txn.Relations) // what could not be read stays unknown
	}
	return explain(err, f)
}

// readColumns reads this node's columns of rels' tables and names the
// origin's built-in column types. It returns what it could read.
func readColumns(ctx context.Context, conn *pgx.Conn, rels []stream.Relation) (map[string][]localColumn, map[uint32]string) {
	names := make([]string, len(rels))
	var oids []int64
	for i := range rels {
		names[i] = relName(&rels[i])
		for _, c := range rels[i].Columns {
			if c.TypeOID < firstNormalOID {
				oids = append(oids, int64(c.TypeOID))
			}
		}
	}
	local := map[string][]localColumn{}
	rows, err := conn.Query(ctx, `SELECT r.name, a.attname::text, a.atttypid, format_type(a.atttypid, a.atttypmod)
		FROM unnest($1::text[]) AS r(name)
		LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(r.name) AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY r.name, a.attnum`, names)
	if err != nil {
		return nil, nil
	}
	for rows.Next() {
		var name string
		var col, typ *string
		var oid *uint32
		if rows.Scan(&name, &col, &oid, &typ) != nil {
			rows.Close()
			return nil, nil
		}
		if _, ok := local[name]; !ok {
			local[name] = []localColumn{}
		}
		if col != nil && oid != nil && typ != nil {
			local[name] = append(local[name], localColumn{Name: *col, TypeOID: *oid, Type: *typ})
		}
	}
	if rows.Err() != nil {
		return nil, nil
	}
	typeNames := map[uint32]string{}
	rows, err = conn.Query(ctx, `SELECT o::oid, format_type(o::oid, NULL) FROM unnest($1::bigint[]) AS o`, oids)
	if err != nil {
		return local, nil
	}
	for rows.Next() {
		var oid uint32
		var name string
		if rows.Scan(&oid, &name) == nil {
			typeNames[oid] = name
		}
	}
	return local, typeNames
}

// historyError is the cause recordAbort writes into the error_* columns of
// pgactive_conflict_history: for a schema error, its problem and fix as the
// message, with the SQLSTATE and fields of the PostgreSQL error it caused.
func historyError(err error) error {
	var se *SchemaError
	if !errors.As(err, &se) {
		return err
	}
	var pe *pgconn.PgError
	if !errors.As(se.Err, &pe) {
		return errors.New(se.Message())
	}
	cp := *pe
	cp.Message = se.Message() + " (" + pe.Message + ")"
	return &cp
}

// abortChange is the index of the change a failed chunk is recorded under:
// the first row change of the table a schema error names, else the first
// row change; -1 when there is none.
func abortChange(txn *stream.Txn, err error) int {
	var table string
	var se *SchemaError
	if errors.As(err, &se) {
		table = se.Table
	}
	first := -1
	for i := range txn.Changes {
		c := &txn.Changes[i]
		if c.Op != stream.OpInsert && c.Op != stream.OpUpdate && c.Op != stream.OpDelete {
			continue
		}
		if c.Rel < 0 || c.Rel >= len(txn.Relations) {
			continue
		}
		if first < 0 {
			first = i
		}
		if table != "" && relName(&txn.Relations[c.Rel]) == table {
			return i
		}
	}
	return first
}
