package node

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgactive-go/pgactive/apply"
)

// copyCommitTime is the commit time of every copied row on the joining node:
// older than any real change, so that a change the snapshot does not hold
// wins last-update-wins against the copy when it arrives. It is not
// 2000-01-01 00:00:00 UTC: that is PostgreSQL's timestamp zero, which
// pg_replication_origin_xact_setup takes as "no time" (the commit then gets
// the current time).
const copyCommitTime = "2000-01-01 00:00:01+00"

// copyTable is a table of the source to copy, as of the snapshot.
type copyTable struct {
	schema, name string
	columns      []string // stored columns (not generated), in order
	size         int64    // bytes on disk, TOAST included: the progress estimate
	pages        int64    // pages of the heap when listed
	// binaryTypes says that every column's type reads and writes the
	// binary COPY format the same way on every server of one major
	// version: built-in types (OID under 16384, FirstNormalObjectId) that
	// have binary I/O (not aclitem), arrays of them, enums (sent as their
	// labels), and domains over any of these. Arrays and composites of
	// other user-defined types carry their element types' OIDs, which
	// differ between databases and which the receiving server may check;
	// an extension's types may change their binary form between the
	// extension's versions.
	binaryTypes bool
	binary      bool // copied in binary format
}

func (t *copyTable) ident() string { return pgx.Identifier{t.schema, t.name}.Sanitize() }

// columnList is " (a, b, c)", or "" for a table without columns.
func (t *copyTable) columnList() string {
	if len(t.columns) == 0 {
		return ""
	}
	q := make([]string, len(t.columns))
	for i, c := range t.columns {
		q[i] = pgx.Identifier{c}.Sanitize()
	}
	return " (" + strings.Join(q, ", ") + ")"
}

// beginSnapshot opens a read-only transaction on conn that sees the exported snapshot.
func beginSnapshot(ctx context.Context, conn *pgx.Conn, snapshot string) error {
	_, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT "+quoteLiteral(snapshot))
	if err != nil {
		return fmt.Errorf("open the exported snapshot %s (the source must keep the replication connection that exported it): %w", snapshot, err)
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// listTables returns the tables to copy, largest first: ordinary tables and
// partitions outside the system schemas and pgactive's own, that belong to
// no extension (extensions fill their own tables), and are not temporary.
// conn must be inside the snapshot.
func listTables(ctx context.Context, conn *pgx.Conn) ([]copyTable, error) {
	rows, err := conn.Query(ctx, `SELECT n.nspname::text, c.relname::text, pg_table_size(c.oid),
			pg_relation_size(c.oid) / current_setting('block_size')::int,
			coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attname IS NOT NULL), '{}'),
			coalesce(bool_and(b.typsend <> 0 AND b.typreceive <> 0 AND (b.oid < 16384 OR b.typtype = 'e')
				AND (e.oid IS NULL OR (e.typsend <> 0 AND e.typreceive <> 0))) FILTER (WHERE a.attname IS NOT NULL), true)
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		LEFT JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
		LEFT JOIN pg_type e ON e.oid = b.typelem
		WHERE c.relkind = 'r' AND c.relpersistence <> 't'
			AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
			AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
			AND NOT EXISTS (SELECT 1 FROM pg_depend d
				WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
		GROUP BY n.nspname, c.relname, c.oid
		ORDER BY 3 DESC, 1, 2`, ownSchema)
	if err != nil {
		return nil, fmt.Errorf("list the source's tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (copyTable, error) {
		var t copyTable
		err := r.Scan(&t.schema, &t.name, &t.size, &t.pages, &t.columns, &t.binaryTypes)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list the source's tables: %w", err)
	}
	return tables, nil
}

// lockTables takes ACCESS SHARE locks on tables, as pg_dump does on what it
// dumps: no rewrite (VACUUM FULL, CLUSTER, ALTER TABLE) can then move rows
// between the ranges of a split table while they are read. conn must be
// inside the snapshot, and keep the transaction open until the copy ends.
func lockTables(ctx context.Context, conn *pgx.Conn, tables []*copyTable) error {
	if len(tables) == 0 {
		return nil
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.ident()
	}
	if _, err := conn.Exec(ctx, "LOCK TABLE "+strings.Join(names, ", ")+" IN ACCESS SHARE MODE"); err != nil {
		return fmt.Errorf("lock the tables copied in ranges: %w", err)
	}
	return nil
}

// copyTracker counts the bytes copied, for progress. Each worker counts the
// table it copies up to that table's estimated size; a finished table counts
// as its whole size, so the count reaches the total exactly at the end.
type copyTracker struct {
	total   int64
	done    atomic.Int64
	workers []workerCount
}

type workerCount struct {
	size     atomic.Int64
	streamed atomic.Int64
}

func newCopyTracker(tables []copyTable, workers int) *copyTracker {
	t := &copyTracker{workers: make([]workerCount, workers)}
	for _, tb := range tables {
		t.total += tb.size
	}
	return t
}

func (t *copyTracker) start(worker int, size int64) {
	t.workers[worker].streamed.Store(0)
	t.workers[worker].size.Store(size)
}

func (t *copyTracker) finish(worker int, size int64) {
	t.workers[worker].size.Store(0)
	t.done.Add(size)
}

// copied returns the bytes copied so far, never more than the total.
func (t *copyTracker) copied() int64 {
	n := t.done.Load()
	for i := range t.workers {
		w := &t.workers[i]
		n += min(w.streamed.Load(), w.size.Load())
	}
	return min(n, t.total)
}

// copyData copies the chunks from the snapshot into the joining database
// with up to j.cfg.Workers workers, each a connection to either side.
func (j *joiner) copyData(ctx context.Context, snap *snapshot, chunks []copyChunk, tr *copyTracker) error {
	work := make(chan *copyChunk)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(work)
		for i := range chunks {
			select {
			case work <- &chunks[i]:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for i := range min(j.cfg.Workers, max(len(chunks), 1)) {
		g.Go(func() error { return j.copyWorker(gctx, i, snap, work, tr) })
	}
	return g.Wait()
}

func (j *joiner) copyWorker(ctx context.Context, i int, snap *snapshot, work <-chan *copyChunk, tr *copyTracker) error {
	src, err := joinConnect(ctx, j.cfg.SourceDSN, j.cfg.SourceNode)
	if err != nil {
		return err
	}
	defer src.Close(context.WithoutCancel(ctx))
	if err := beginSnapshot(ctx, src, snap.name); err != nil {
		return err
	}
	dst, err := joinConnect(ctx, j.cfg.DSN, j.cfg.Node)
	if err != nil {
		return err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	// The chunks need not wait for their WAL to be flushed: a crash that
	// loses a chunk's commit loses all the joining database did after it
	// too, and the join's later commits (the post-data restore, the
	// node's status) are synchronous.
	if _, err := dst.Exec(ctx, "SET synchronous_commit = off"); err != nil {
		return fmt.Errorf("node %q: set synchronous_commit: %w", j.cfg.Node, err)
	}
	origin := apply.CopyOriginName(j.dboid, i)
	if _, err := dst.Exec(ctx, `SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL`, origin); err != nil {
		return fmt.Errorf("create replication origin %q: %w", origin, err)
	}
	if _, err := dst.Exec(ctx, `SELECT pg_replication_origin_session_setup($1)`, origin); err != nil {
		return fmt.Errorf("set up replication origin session %q: %w", origin, err)
	}
	for c := range work {
		tr.start(i, c.size)
		if err := copyOne(ctx, src, dst, c, snap.consistent, &tr.workers[i].streamed); err != nil {
			return fmt.Errorf("copy table %s%s: %w", c.table.ident(), c.rangeNote(), err)
		}
		tr.finish(i, c.size)
		j.log.Debug("table copied", "table", c.String(), "binary", c.table.binary)
	}
	if _, err := src.Exec(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("end snapshot transaction: %w", err)
	}
	return nil
}

// copyOne streams a chunk from the source's COPY TO into the joining
// database's COPY FROM, in one local transaction under the worker's origin
// session: capture drops it as applied from elsewhere, and its rows carry
// copyCommitTime.
func copyOne(ctx context.Context, src, dst *pgx.Conn, c *copyChunk, lsn pglogrepl.LSN, streamed *atomic.Int64) error {
	if _, err := dst.Exec(ctx, "BEGIN"); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	_, err := dst.Exec(ctx, `SELECT pg_replication_origin_xact_setup($1::text::pg_lsn, $2::timestamptz)`, lsn.String(), copyCommitTime)
	if err != nil {
		_, _ = dst.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return fmt.Errorf("set origin position: %w", err)
	}
	out, err := startCopyOut(ctx, src.PgConn(), c.copyOutSQL(), streamed)
	if err != nil {
		_, _ = dst.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return err
	}
	_, err = dst.PgConn().CopyFrom(ctx, out, c.copyInSQL())
	out.close()
	if serr := out.sourceError(); serr != nil {
		err = serr // the joining database only saw the copy fail
	}
	if err != nil {
		_, _ = dst.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return err
	}
	if _, err := dst.Exec(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// copySequences sets every sequence of the joining database to the source's
// current value, so that local inserts do not reuse copied keys. Sequences
// are not transactional: the source's value now is at least what the
// snapshot's rows used.
func (j *joiner) copySequences(ctx context.Context, src, dst *pgx.Conn) error {
	rows, err := src.Query(ctx, `SELECT schemaname::text, sequencename::text, last_value FROM pg_sequences
		WHERE last_value IS NOT NULL AND schemaname <> $1`, ownSchema)
	if err != nil {
		return fmt.Errorf("read the source's sequences: %w", err)
	}
	type seq struct {
		schema, name string
		value        int64
	}
	seqs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (seq, error) {
		var s seq
		err := r.Scan(&s.schema, &s.name, &s.value)
		return s, err
	})
	if err != nil {
		return fmt.Errorf("read the source's sequences: %w", err)
	}
	for _, s := range seqs {
		name := pgx.Identifier{s.schema, s.name}.Sanitize()
		_, err := dst.Exec(ctx, `SELECT setval(c, $2, true) FROM to_regclass($1) c WHERE c IS NOT NULL`, name, s.value)
		if err != nil {
			return fmt.Errorf("set sequence %s: %w", name, err)
		}
	}
	return nil
}

// refreshViews populates the materialized views that are populated on the
// source (a schema dump creates them empty). A view over another view may
// need a second pass.
func (j *joiner) refreshViews(ctx context.Context, src, dst *pgx.Conn) error {
	rows, err := src.Query(ctx, `SELECT schemaname::text, matviewname::text FROM pg_matviews WHERE ispopulated AND schemaname <> $1`, ownSchema)
	if err != nil {
		return fmt.Errorf("list the source's materialized views: %w", err)
	}
	views, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var schema, name string
		err := r.Scan(&schema, &name)
		return pgx.Identifier{schema, name}.Sanitize(), err
	})
	if err != nil {
		return fmt.Errorf("list the source's materialized views: %w", err)
	}
	for pass := 0; len(views) > 0; pass++ {
		var failed []string
		var lastErr error
		for _, v := range views {
			if _, err := dst.Exec(ctx, "REFRESH MATERIALIZED VIEW "+v); err != nil {
				failed, lastErr = append(failed, v), fmt.Errorf("refresh materialized view %s: %w", v, err)
			}
		}
		if len(failed) == len(views) || pass == 10 {
			return lastErr
		}
		views = failed
	}
	return nil
}
