package apply

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgactive-go/pgactive/stream"
)

// Type OIDs of the tests' columns.
const (
	oidInt4 = 23
	oidText = 25
)

func itemsRelation() stream.Relation {
	return stream.Relation{Schema: "public", Table: "items", Columns: []stream.Column{
		{Name: "id", TypeOID: oidInt4, Key: true}, {Name: "val", TypeOID: oidText}, {Name: "code", TypeOID: oidText},
	}}
}

func TestExplain(t *testing.T) {
	items := itemsRelation()
	gadgets := stream.Relation{Schema: "public", Table: "gadgets", Columns: []stream.Column{{Name: "id", TypeOID: oidInt4, Key: true}}}
	base := schemaFacts{Origin: "node1", Target: "node2", Relations: []stream.Relation{items}}
	withLocal := base
	withLocal.Local = map[string][]localColumn{`"public"."items"`: {
		{Name: "id", TypeOID: oidInt4, Type: "integer"}, {Name: "val", TypeOID: oidText, Type: "text"},
		{Name: "code", TypeOID: oidInt4, Type: "integer"},
	}}
	withLocal.TypeNames = map[uint32]string{oidInt4: "integer", oidText: "text"}
	twoTables := base
	twoTables.Relations = []stream.Relation{items, gadgets}

	for _, tc := range []struct {
		name   string
		err    error
		facts  schemaFacts
		table  string
		column string
		want   []string // parts of the message; none: err unchanged
	}{
		{
			name:  "missing table",
			err:   &pgconn.PgError{Code: "42P01", Message: `relation "public.gadgets" does not exist`},
			facts: twoTables, table: `"public"."gadgets"`,
			want: []string{`table "public"."gadgets" does not exist on node "node2"`,
				`create it with the same columns as on node "node1"`, "pgactive.pgactive_replicate_ddl_command"},
		},
		{
			name:  "missing column",
			err:   &pgconn.PgError{Code: "42703", Message: `column "code" of relation "items" does not exist`},
			facts: withLocal, table: `"public"."items"`, column: "code",
			want: []string{`column "code" of table "public"."items" does not exist on node "node2"`,
				`add it as it is on node "node1" (ALTER TABLE "public"."items" ADD COLUMN "code" text)`},
		},
		{
			name:  "missing column without catalog",
			err:   &pgconn.PgError{Code: "42703", Message: `column x.code does not exist`},
			facts: base, table: `"public"."items"`, column: "code",
			want: []string{`column "code" of table "public"."items" does not exist`, `ADD COLUMN "code" text)`},
		},
		{
			name:  "different type",
			err:   &pgconn.PgError{Code: "22P02", Message: `invalid input syntax for type integer: "abc"`},
			facts: withLocal, table: `"public"."items"`, column: "code",
			want: []string{`column type differs from node "node1"`,
				`column "code" of table "public"."items" is integer on node "node2" but text on node "node1"`,
				`ALTER TABLE "public"."items" ALTER COLUMN "code" TYPE text USING "code"::text`},
		},
		{
			name:  "value too long, types alike",
			err:   &pgconn.PgError{Code: "22001", Message: `value too long for type character varying(3)`},
			facts: base, table: `"public"."items"`,
			want: []string{`a value from node "node1" does not fit a column of table "public"."items" on node "node2"`,
				"ALTER TABLE ... ALTER COLUMN ... TYPE"},
		},
		{
			name: "not null column the origin lacks",
			err: &pgconn.PgError{Code: "23502", Message: `null value in column "extra" violates not-null constraint`,
				SchemaName: "public", TableName: "items", ColumnName: "extra"},
			facts: base, table: `"public"."items"`, column: "extra",
			want: []string{`column "extra" of table "public"."items" is NOT NULL without a default on node "node2", and node "node1" has no such column`},
		},
		{
			name:  "no key from the origin",
			err:   fmt.Errorf("change 0: %w", errors.New(`table "public"."items" has no replica identity on the origin: add a primary key`)),
			facts: base, table: `"public"."items"`,
			want: []string{`table "public"."items" has no primary key on node "node1"`, `add one on every node (ALTER TABLE "public"."items" ADD PRIMARY KEY ("id"))`},
		},
		{
			name:  "not null column the origin has",
			err:   &pgconn.PgError{Code: "23502", SchemaName: "public", TableName: "items", ColumnName: "val"},
			facts: base,
		},
		{name: "unique violation", err: &pgconn.PgError{Code: "23505", Message: "duplicate key"}, facts: base},
		{name: "not a PostgreSQL error", err: errors.New("connection reset"), facts: base},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := explain(fmt.Errorf("wrapped: %w", tc.err), tc.facts)
			var se *SchemaError
			if len(tc.want) == 0 {
				if errors.As(got, &se) {
					t.Fatalf("explain: got %v, want the error unchanged", got)
				}
				return
			}
			if !errors.As(got, &se) {
				t.Fatalf("explain: got %v, want a *SchemaError", got)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("explain: %v does not wrap the original error", got)
			}
			if se.Table != tc.table || se.Column != tc.column {
				t.Errorf("table, column: got %q, %q, want %q, %q", se.Table, se.Column, tc.table, tc.column)
			}
			for _, w := range tc.want {
				if !strings.Contains(se.Message(), w) {
					t.Errorf("message %q\nlacks %q", se.Message(), w)
				}
			}
			if again := explain(got, tc.facts); again != got {
				t.Errorf("explaining twice: got %v, want the same error", again)
			}
		})
	}
}

func TestHistoryError(t *testing.T) {
	pe := &pgconn.PgError{Code: "42P01", Message: `relation "public.t" does not exist`, Severity: "ERROR"}
	se := &SchemaError{Table: `"public"."t"`, Problem: "table missing", Fix: "create it", Err: fmt.Errorf("insert: %w", pe)}
	var got *pgconn.PgError
	if !errors.As(historyError(se), &got) {
		t.Fatalf("historyError of a schema error from PostgreSQL: got %v, want a *pgconn.PgError", historyError(se))
	}
	if want := `table missing: create it (relation "public.t" does not exist)`; got.Message != want || got.Code != "42P01" {
		t.Errorf("history error: got %q %s, want %q 42P01", got.Message, got.Code, want)
	}
	if pe.Message != `relation "public.t" does not exist` {
		t.Errorf("historyError changed the original error: %q", pe.Message)
	}
	alone := &SchemaError{Problem: "no key", Fix: "add one"}
	if got := historyError(fmt.Errorf("apply: %w", alone)).Error(); got != "no key: add one" {
		t.Errorf("history error of a schema error alone: got %q", got)
	}
	other := errors.New("other")
	if got := historyError(other); got != other {
		t.Errorf("history error of another error: got %v", got)
	}
}

func TestAbortChange(t *testing.T) {
	items, gadgets := itemsRelation(), stream.Relation{Schema: "public", Table: "gadgets"}
	txn := &stream.Txn{Relations: []stream.Relation{items, gadgets}, Changes: []stream.Change{
		{Op: stream.OpMessage, Prefix: stream.PrefixDDL},
		{Op: stream.OpTruncate, Truncated: []int{0}},
		{Op: stream.OpInsert, Rel: 0},
		{Op: stream.OpInsert, Rel: 1},
	}}
	for _, tc := range []struct {
		name string
		txn  *stream.Txn
		err  error
		want int
	}{
		{"first row change", txn, errors.New("x"), 2},
		{"the schema error's table", txn, &SchemaError{Table: `"public"."gadgets"`}, 3},
		{"no row change", &stream.Txn{Changes: []stream.Change{{Op: stream.OpMessage}}}, errors.New("x"), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := abortChange(tc.txn, tc.err); got != tc.want {
				t.Errorf("abortChange: got %d, want %d", got, tc.want)
			}
		})
	}
}
