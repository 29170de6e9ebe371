package node

import (
	"fmt"
	"slices"
	"testing"
)

func TestChunkPages(t *testing.T) {
	gib := int64(1 << 30)
	for _, tc := range []struct {
		name    string
		size    int64
		pages   int64 // of all tables
		workers int
		want    int64
	}{
		{"configured", 1 << 20, 1 << 20, 4, 128},
		{"configured under a page", 100, 1 << 20, 4, 1},
		{"4 chunks per worker", 0, 8 * gib / pageSize, 2, gib / pageSize},
		{"never under 64 MiB", 0, gib / pageSize, 8, minChunkSize / pageSize},
		{"no data", 0, 0, 2, minChunkSize / pageSize},
		{"no workers", 0, 8 * gib / pageSize, 0, 2 * gib / pageSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tables := []copyTable{{pages: tc.pages / 2}, {pages: tc.pages - tc.pages/2}}
			if got := chunkPages(tc.size, tables, tc.workers); got != tc.want {
				t.Errorf("got %d pages, want %d", got, tc.want)
			}
		})
	}
}

func TestPlanChunks(t *testing.T) {
	tables := []copyTable{
		{schema: "public", name: "big", columns: []string{"id", "v"}, pages: 1040, size: 10_000_000},
		{schema: "public", name: "up", columns: []string{"id"}, pages: 1160, size: 9_000_000},
		{schema: "public", name: "edge", columns: []string{"id"}, pages: 150, size: 1_700_000},
		{schema: "public", name: "under", columns: []string{"id"}, pages: 149, size: 1_600_000},
		{schema: "public", name: "nocols", pages: 5000, size: 40_000_000},
		{schema: "public", name: "empty", columns: []string{"id"}, pages: 0, size: 0},
	}
	chunks := planChunks(tables, 100, true)

	byTable := map[string][]copyChunk{}
	for _, c := range chunks {
		byTable[c.table.name] = append(byTable[c.table.name], c)
	}
	for _, tc := range []struct {
		table string
		want  int
	}{
		{"big", 10},   // 10.4 chunks of pages: the last range takes the rest
		{"up", 12},    // 11.6 chunks: the last range is the smaller
		{"edge", 2},   // one and a half chunks: two ranges
		{"under", 1},  // less: whole
		{"nocols", 1}, // no column to select: whole
		{"empty", 1},
	} {
		if got := len(byTable[tc.table]); got != tc.want {
			t.Errorf("%s: got %d chunks, want %d", tc.table, got, tc.want)
		}
	}

	// The ranges of a split table are contiguous from page 0 and the
	// last is open-ended; their sizes add up to the table's.
	for name, cs := range byTable {
		slices.SortFunc(cs, func(a, b copyChunk) int { return a.index - b.index })
		var size int64
		for i, c := range cs {
			size += c.size
			if c.index != i+1 || c.of != len(cs) {
				t.Errorf("%s: chunk %d is numbered %d/%d", name, i, c.index, c.of)
			}
			if len(cs) == 1 {
				if c.ranged {
					t.Errorf("%s: a single chunk is a range", name)
				}
				continue
			}
			if !c.ranged {
				t.Errorf("%s: chunk %d of a split table is not a range", name, i)
			}
			if i == 0 && c.first != 0 {
				t.Errorf("%s: first range starts at page %d", name, c.first)
			}
			if i > 0 && c.first != cs[i-1].end {
				t.Errorf("%s: range %d starts at %d, the previous ends at %d", name, i, c.first, cs[i-1].end)
			}
			if last := i == len(cs)-1; last != (c.end == 0) {
				t.Errorf("%s: range %d of %d ends at %d", name, i+1, len(cs), c.end)
			}
		}
		if want := cs[0].table.size; size != want {
			t.Errorf("%s: chunk sizes add up to %d, want the table's %d", name, size, want)
		}
	}

	// Largest first, so that the workers end together.
	if !slices.IsSortedFunc(chunks, func(a, b copyChunk) int { return int(b.size - a.size) }) {
		var order []string
		for _, c := range chunks {
			order = append(order, fmt.Sprintf("%s (%d bytes)", c.String(), c.size))
		}
		t.Errorf("chunks not largest first: %v", order)
	}
	var split []string
	for _, tb := range splitTables(chunks) {
		split = append(split, tb.name)
	}
	slices.Sort(split)
	if want := []string{"big", "edge", "up"}; !slices.Equal(split, want) {
		t.Errorf("split tables: got %v, want %v", split, want)
	}
}

func TestPlanChunksWithoutTIDRange(t *testing.T) {
	tables := []copyTable{{name: "big", columns: []string{"id"}, pages: 100_000, size: 800_000_000}}
	for _, c := range planChunks(tables, 100, false) {
		if c.ranged {
			t.Fatalf("range %s on a server without TID range scans: each would read the whole table", c.String())
		}
	}
}

func TestChunkSQL(t *testing.T) {
	tb := &copyTable{schema: "my schema", name: `odd"name`, columns: []string{"id", "Total Sum"}}
	bin := &copyTable{schema: "s", name: "t", columns: []string{"a"}, binary: true}
	for _, tc := range []struct {
		chunk    copyChunk
		out, in  string
		describe string
	}{
		{copyChunk{table: tb, index: 1, of: 1},
			`COPY "my schema"."odd""name" ("id", "Total Sum") TO STDOUT`,
			`COPY "my schema"."odd""name" ("id", "Total Sum") FROM STDIN`,
			`my schema.odd"name`},
		{copyChunk{table: tb, ranged: true, first: 0, end: 128, index: 1, of: 3},
			`COPY (SELECT "id", "Total Sum" FROM ONLY "my schema"."odd""name" WHERE ctid < '(128,0)'::tid) TO STDOUT`,
			`COPY "my schema"."odd""name" ("id", "Total Sum") FROM STDIN`,
			`my schema.odd"name 1/3`},
		{copyChunk{table: tb, ranged: true, first: 128, end: 256, index: 2, of: 3},
			`COPY (SELECT "id", "Total Sum" FROM ONLY "my schema"."odd""name" WHERE ctid >= '(128,0)'::tid AND ctid < '(256,0)'::tid) TO STDOUT`,
			`COPY "my schema"."odd""name" ("id", "Total Sum") FROM STDIN`,
			`my schema.odd"name 2/3`},
		{copyChunk{table: bin, ranged: true, first: 256, index: 3, of: 3},
			`COPY (SELECT "a" FROM ONLY "s"."t" WHERE ctid >= '(256,0)'::tid) TO STDOUT (FORMAT binary)`,
			`COPY "s"."t" ("a") FROM STDIN (FORMAT binary)`,
			`s.t 3/3`},
		{copyChunk{table: bin, index: 1, of: 1},
			`COPY "s"."t" ("a") TO STDOUT (FORMAT binary)`,
			`COPY "s"."t" ("a") FROM STDIN (FORMAT binary)`,
			`s.t`},
	} {
		t.Run(tc.describe, func(t *testing.T) {
			if got := tc.chunk.copyOutSQL(); got != tc.out {
				t.Errorf("copyOutSQL:\n got %s\nwant %s", got, tc.out)
			}
			if got := tc.chunk.copyInSQL(); got != tc.in {
				t.Errorf("copyInSQL:\n got %s\nwant %s", got, tc.in)
			}
			if got := tc.chunk.String(); got != tc.describe {
				t.Errorf("String: got %s, want %s", got, tc.describe)
			}
		})
	}
}

func TestDefaultCopyWorkers(t *testing.T) {
	if n := defaultCopyWorkers(); n < 2 || n > maxDefaultWorkers {
		t.Errorf("got %d workers, want 2 to %d", n, maxDefaultWorkers)
	}
}
