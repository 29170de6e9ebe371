package apply

import (
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgactive-go/pgactive/stream"
)

// table is what apply knows of one remote relation: quoted names and the
// statements it uses, built once per relation shape.
type table struct {
	rel       stream.Relation
	name      string // quoted schema.table
	keys      []int  // column indexes of the replica identity
	insert    string
	delete    string
	deleteAny string
	update    map[string]string // by the mask of columns sent (unchanged TOAST values left out)
	// sameOrigin restricts fast-path updates and deletes to rows last
	// written by the worker's origin.
	sameOrigin string
	// pkName is the local primary key constraint's name, once pkLoaded.
	pkName   string
	pkLoaded bool
	// tombstone is the condition finding the tombstone of a key, with the
	// schema, table and key values as parameters $1, $2, $3...
	tombstone string
	// tombstoneProbe fails (division by zero) when the key has a tombstone:
	// each tombstone row it finds divides by zero. The divisor depends on a
	// column, so the planner cannot fold it into an error at preparation.
	// Without an aggregate over the lookup, a pipelined insert transaction
	// costs the server about a tenth less (docs/BENCHMARKS.md).
	tombstoneProbe string
	// locks are the key and table lock statements (keylocks.go).
	locks tableLocks
}

// checkedOne wraps an UPDATE or DELETE so that it fails with division_by_zero
// unless it touched a row: the fast path's check, made by the server so that
// a whole transaction goes in one round trip.
func checkedOne(sql string) string {
	return "WITH pgactive_row AS (" + sql + " RETURNING 1) SELECT 1 / count(*) FROM pgactive_row"
}

// tombstoneWhere matches pgactive_tombstones rows as the trigger
// pgactive_record_tombstone writes them: the key is the text of an array of
// the key columns' text values.
func tombstoneWhere(keys int) string {
	return "schema_name = $1 AND table_name = $2 AND key = " + keyTextSQL(keys)
}

// keyTextSQL renders the text form of a key as the tombstone trigger writes
// it, from the key values in parameters $3, $4...
func keyTextSQL(keys int) string {
	var b strings.Builder
	b.WriteString("(ARRAY[")
	for i := 0; i < keys; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(i+3) + "::text")
	}
	b.WriteString("]::text[])::text")
	return b.String()
}

// tombstoneParams are the parameters of the tombstone condition for a key.
func (t *table) tombstoneParams(key stream.Tuple) [][]byte {
	params := [][]byte{[]byte(t.rel.Schema), []byte(t.rel.Table)}
	return t.keyParams(key, params)
}

// newTable builds the statements of a relation. roident is the replication
// origin of the worker: updates and deletes on the fast path only touch rows
// last written by that origin (anything else goes through conflict
// resolution).
func newTable(rel stream.Relation, roident uint32) *table {
	t := &table{rel: rel, name: pgx.Identifier{rel.Schema, rel.Table}.Sanitize(), update: map[string]string{}}
	for i, c := range rel.Columns {
		if c.Key {
			t.keys = append(t.keys, i)
		}
	}
	var cols, vals strings.Builder
	for i, c := range rel.Columns {
		if i > 0 {
			cols.WriteString(", ")
			vals.WriteString(", ")
		}
		cols.WriteString(quote(c.Name))
		vals.WriteString("$" + strconv.Itoa(i+1))
	}
	t.insert = "INSERT INTO " + t.name + " (" + cols.String() + ") VALUES (" + vals.String() + ")"
	// The function's field, not a scan of it: a scalar subquery over the
	// function materialises its row, which made a fast-path update cost the
	// server about a ninth more (docs/BENCHMARKS.md).
	t.sameOrigin = " AND (pg_xact_commit_timestamp_origin(xmin)).roident = " + strconv.FormatUint(uint64(roident), 10)
	t.tombstone = tombstoneWhere(len(t.keys))
	t.tombstoneProbe = "SELECT 1 / (0 * length(key)) FROM pgactive.pgactive_tombstones WHERE " + t.tombstone
	t.locks = newTableLocks(len(t.keys))
	t.deleteAny = "DELETE FROM " + t.name + " WHERE " + t.where(1)
	t.delete = checkedOne(t.deleteAny + t.sameOrigin)
	return t
}

func quote(name string) string { return pgx.Identifier{name}.Sanitize() }

// where renders the key condition with parameters numbered from first.
func (t *table) where(first int) string { return t.whereAlias("", first) }

// whereAlias is where with columns qualified by alias.
func (t *table) whereAlias(alias string, first int) string {
	prefix := ""
	if alias != "" {
		prefix = alias + "."
	}
	var b strings.Builder
	for i, k := range t.keys {
		if i > 0 {
			b.WriteString(" AND ")
		}
		b.WriteString(prefix + quote(t.rel.Columns[k].Name) + " = $" + strconv.Itoa(first+i))
	}
	return b.String()
}

// sameShape reports whether rel describes the same columns as t.
func (t *table) sameShape(rel *stream.Relation) bool {
	if rel.Schema != t.rel.Schema || rel.Table != t.rel.Table || len(rel.Columns) != len(t.rel.Columns) {
		return false
	}
	for i := range rel.Columns {
		if rel.Columns[i] != t.rel.Columns[i] {
			return false
		}
	}
	return true
}

// updateSQLFor returns the UPDATE for a new tuple, setting every column that was
// sent (unchanged TOAST values keep the local value), and the indexes of the
// columns whose values follow the key parameters.
// Unless anyRow, only a row last written by the worker's origin is updated,
// and the statement fails unless it updated one (checkedOne).
func (t *table) updateSQLFor(newTuple stream.Tuple, anyRow bool) (string, []int) {
	var mask strings.Builder
	set := make([]int, 0, len(newTuple))
	for i, d := range newTuple {
		if d.Kind == stream.DatumUnchanged {
			mask.WriteByte('u')
			continue
		}
		mask.WriteByte('s')
		set = append(set, i)
	}
	key := mask.String()
	if anyRow {
		key += "!"
	}
	if sql, ok := t.update[key]; ok {
		return sql, set
	}
	var b strings.Builder
	b.WriteString("UPDATE " + t.name + " SET ")
	for j, i := range set {
		if j > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quote(t.rel.Columns[i].Name) + " = $" + strconv.Itoa(len(t.keys)+j+1))
	}
	b.WriteString(" WHERE " + t.where(1))
	sql := b.String()
	t.update[mask.String()+"!"] = sql // any row: the slow path decided already
	t.update[mask.String()] = checkedOne(sql + t.sameOrigin)
	return t.update[key], set
}

// keyParams returns the key values of a tuple as text-format parameters.
func (t *table) keyParams(tuple stream.Tuple, dst [][]byte) [][]byte {
	for _, k := range t.keys {
		dst = append(dst, param(tuple[k]))
	}
	return dst
}

func param(d stream.Datum) []byte {
	if d.Kind == stream.DatumNull {
		return nil
	}
	if d.Data == nil {
		return []byte{}
	}
	return d.Data
}

// oldKey is the tuple that identifies the row a change targets.
func oldKey(c *stream.Change) stream.Tuple {
	if len(c.Old) > 0 {
		return c.Old
	}
	return c.New
}
