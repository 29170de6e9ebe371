package node

import (
	"cmp"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// How the initial copy is cut into units of work. A table of at least one
// and a half times the chunk size is copied in ranges of heap pages of
// about that size (WHERE ctid >=
// '(a,0)' AND ctid < '(b,0)', a TID range scan on PostgreSQL 14 and later)
// by several workers at once; every worker reads the same exported snapshot,
// so the ranges together hold exactly the table's rows as of the snapshot,
// provided that no rewrite of the table (VACUUM FULL, CLUSTER) moves rows
// between the ranges' scans: the copy holds a lock on every split table
// from before the first range is read until the last one is (lockTables).
const (
	// minChunkSize is the smallest default chunk: a range of 64 MiB takes
	// about half a second to copy on 2 CPUs, next to which its own
	// statement and transaction cost under 1%.
	minChunkSize = 64 << 20
	// chunksPerWorker is how many chunks per worker the data is cut into
	// by default, so that workers finish at about the same time.
	chunksPerWorker = 4
	// maxDefaultWorkers bounds the default number of workers: each is a
	// connection to both databases.
	maxDefaultWorkers = 8
	// pageSize is PostgreSQL's default block size. It only converts a
	// chunk size in bytes into pages; ranges are cut at real page numbers.
	pageSize = 8192
	// tidRangeVersion is the first server_version_num that scans a ctid
	// range without reading the whole table.
	tidRangeVersion = 140000
)

// defaultCopyWorkers is the number of copy workers when the configuration
// sets none: one more than the CPUs of this machine, at most 8. The agent
// runs next to the joining database, whose COPY FROM is the costliest part
// of the copy; the extra worker keeps the CPUs busy while the others wait
// for the source or for I/O (on 2 CPUs, 3 workers copied 1 GiB up to 15%
// faster than 2 while the machine was busy, and as fast when it was quiet).
func defaultCopyWorkers() int {
	return min(runtime.NumCPU()+1, maxDefaultWorkers)
}

// chunkPages is the size in pages of the ranges large tables are cut into:
// size bytes if set, else the data split into chunksPerWorker chunks per
// worker, never under minChunkSize.
func chunkPages(size int64, tables []copyTable, workers int) int64 {
	if size <= 0 {
		var pages int64
		for _, t := range tables {
			pages += t.pages
		}
		size = max(minChunkSize, pages*pageSize/int64(max(workers, 1)*chunksPerWorker))
	}
	return max(size/pageSize, 1)
}

// copyChunk is one unit of the copy: a whole table, or the heap pages
// [first, end) of a table; end 0 reaches the end of the table, whatever
// its size when it is read.
type copyChunk struct {
	table      *copyTable
	ranged     bool
	first, end int64
	size       int64 // estimated bytes: the progress weight
	index, of  int   // the range's number (from 1) and how many the table has
}

// planChunks cuts the tables into units of work, largest first. A table is
// split when tidRange is set, it has columns, and its heap rounds to at
// least two chunks of pages; its first range has no lower bound and its
// last no upper bound, so that rows in pages added after the table was
// measured are copied too. The sizes of a table's chunks add up to the
// table's size.
func planChunks(tables []copyTable, chunkPages int64, tidRange bool) []copyChunk {
	var chunks []copyChunk
	for i := range tables {
		t := &tables[i]
		n := int64(1)
		if tidRange && len(t.columns) > 0 && chunkPages > 0 {
			n = (t.pages + chunkPages/2) / chunkPages // the default cuts 4 per worker: 11.9 makes 12, not 11
		}
		if n < 2 {
			chunks = append(chunks, copyChunk{table: t, size: t.size, index: 1, of: 1})
			continue
		}
		var assigned int64
		for k := range n {
			c := copyChunk{table: t, ranged: true, first: k * chunkPages, index: int(k) + 1, of: int(n)}
			if k < n-1 {
				c.end = (k + 1) * chunkPages
				c.size = int64(float64(t.size) * float64(chunkPages) / float64(t.pages))
			} else {
				c.size = t.size - assigned
			}
			assigned += c.size
			chunks = append(chunks, c)
		}
	}
	slices.SortStableFunc(chunks, func(a, b copyChunk) int { return cmp.Compare(b.size, a.size) })
	return chunks
}

// splitTables returns the tables that chunks copies in ranges.
func splitTables(chunks []copyChunk) []*copyTable {
	var out []*copyTable
	for _, c := range chunks {
		if c.ranged && !slices.Contains(out, c.table) {
			out = append(out, c.table)
		}
	}
	return out
}

// where is the chunk's ctid condition, "" for a whole table.
func (c *copyChunk) where() string {
	if !c.ranged {
		return ""
	}
	var conds []string
	if c.first > 0 {
		conds = append(conds, "ctid >= '("+strconv.FormatInt(c.first, 10)+",0)'::tid")
	}
	if c.end > 0 {
		conds = append(conds, "ctid < '("+strconv.FormatInt(c.end, 10)+",0)'::tid")
	}
	return strings.Join(conds, " AND ")
}

// formatOption is the COPY option of the table's format.
func (c *copyChunk) formatOption() string {
	if c.table.binary {
		return " (FORMAT binary)"
	}
	return ""
}

// copyOutSQL reads the chunk on the source. A range selects from ONLY the
// table: COPY of a table never reads its inheritance children, and neither
// may a range.
func (c *copyChunk) copyOutSQL() string {
	t := c.table
	if !c.ranged {
		return "COPY " + t.ident() + t.columnList() + " TO STDOUT" + c.formatOption()
	}
	cols := strings.TrimSuffix(strings.TrimPrefix(t.columnList(), " ("), ")")
	return "COPY (SELECT " + cols + " FROM ONLY " + t.ident() + " WHERE " + c.where() + ") TO STDOUT" + c.formatOption()
}

// copyInSQL writes the chunk into the joining database.
func (c *copyChunk) copyInSQL() string {
	return "COPY " + c.table.ident() + c.table.columnList() + " FROM STDIN" + c.formatOption()
}

// rangeNote is ", range i of n" for a range, "" for a whole table.
func (c *copyChunk) rangeNote() string {
	if !c.ranged {
		return ""
	}
	return ", range " + strconv.Itoa(c.index) + " of " + strconv.Itoa(c.of)
}

// String names the chunk for logs: the table, and the range if any.
func (c *copyChunk) String() string {
	name := c.table.schema + "." + c.table.name
	if !c.ranged {
		return name
	}
	return name + " " + strconv.Itoa(c.index) + "/" + strconv.Itoa(c.of)
}
