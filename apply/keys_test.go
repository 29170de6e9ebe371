package apply

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/pgactive-go/pgactive/stream"
)

// relation returns public.t with the named columns, those listed in keys
// flagged as key.
func relation(cols []string, keys ...string) stream.Relation {
	r := stream.Relation{Schema: "public", Table: "t"}
	for _, c := range cols {
		r.Columns = append(r.Columns, stream.Column{Name: c, TypeOID: oidText, Key: slices.Contains(keys, c)})
	}
	return r
}

func TestMatchKey(t *testing.T) {
	cols := []string{"id", "v", "w"}
	pk := primaryKey{exists: true, name: "t_pkey", cols: []string{"id"}}
	noPK := primaryKey{exists: true}
	for _, tc := range []struct {
		name     string
		rel      stream.Relation
		pk       primaryKey
		need     bool
		wantKeys []string // the relation's key columns after matchKey
		want     []string // parts of the error message; none: no error
	}{
		{name: "same key", rel: relation(cols, "id"), pk: pk, need: true, wantKeys: []string{"id"}},
		{name: "whole row (REPLICA IDENTITY FULL) keyed by the primary key", rel: relation(cols, cols...), pk: pk, need: true, wantKeys: []string{"id"}},
		{name: "no key from the origin, inserts keyed by the primary key", rel: relation(cols), pk: pk, wantKeys: []string{"id"}},
		{name: "table missing here", rel: relation(cols, cols...), pk: primaryKey{}, need: true, wantKeys: cols},
		{name: "no primary key, inserts only", rel: relation(cols, cols...), pk: noPK, wantKeys: cols},
		{
			name: "no primary key here, whole row sent", rel: relation(cols, cols...), pk: noPK, need: true,
			want: []string{`table "public"."t" has no primary key on node "node2"`, "REPLICA IDENTITY FULL",
				`add one on every node (ALTER TABLE "public"."t" ADD PRIMARY KEY (...))`},
		},
		{
			name: "no primary key here, origin has one", rel: relation(cols, "id"), pk: noPK, need: true,
			want: []string{`table "public"."t" has no primary key on node "node2"`, `ALTER TABLE "public"."t" ADD PRIMARY KEY ("id")`},
		},
		{
			name: "no key from the origin, update", rel: relation(cols), pk: pk, need: true,
			want: []string{`table "public"."t" has no primary key on node "node1"`, "add one on every node"},
		},
		{
			name: "keys differ", rel: relation(cols, "v"), pk: pk,
			want: []string{`the primary key of table "public"."t" differs between nodes: ("id") on node "node2", ("v") on node "node1"`,
				`ALTER TABLE "public"."t" DROP CONSTRAINT "t_pkey", ADD PRIMARY KEY ("v")`},
		},
		{
			name: "key column missing on the origin", rel: relation([]string{"v", "w"}, "v", "w"), pk: pk, need: true,
			want: []string{`the primary key of table "public"."t" on node "node2" is ("id"), but node "node1" has no column "id"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rel := tc.rel
			rel.Columns = slices.Clone(tc.rel.Columns)
			err := matchKey(&rel, tc.pk, tc.need, "node1", "node2")
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("matchKey: got %v, want nil", err)
				}
				if got := keyColumns(&rel); !slices.Equal(got, tc.wantKeys) {
					t.Errorf("key columns: got %v, want %v", got, tc.wantKeys)
				}
				return
			}
			var se *SchemaError
			if !errors.As(err, &se) {
				t.Fatalf("matchKey: got %v, want a *SchemaError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(se.Message(), w) {
					t.Errorf("message %q\nlacks %q", se.Message(), w)
				}
			}
			if !slices.Equal(rel.Columns, tc.rel.Columns) {
				t.Errorf("a refused relation was changed: %v", rel.Columns)
			}
		})
	}
}

func TestKeyCacheIsPerSession(t *testing.T) {
	var c keyCache
	s1, s2 := &session{}, &session{}
	c.of(s1)["t"] = primaryKey{exists: true}
	if _, ok := c.of(s1)["t"]; !ok {
		t.Fatal("the cache forgot an entry within its session")
	}
	if _, ok := c.of(s2)["t"]; ok {
		t.Fatal("a new session sees the previous session's keys")
	}
}
