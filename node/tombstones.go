package node

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// maintainEvery is how often the agent puts tombstone triggers on new tables
// and forgets tombstones no node needs any more.
const maintainEvery = 5 * time.Second

// maintain runs the agent's housekeeping until ctx ends.
func (a *Agent) maintain(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	for {
		if conn == nil || conn.IsClosed() {
			c, err := Connect(ctx, a.cfg.DSN, a.cfg.Node)
			if err == nil {
				conn = c
			}
		}
		if conn != nil {
			if err := a.housekeeping(ctx, conn); err != nil && ctx.Err() == nil {
				a.log.Warn("housekeeping failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(maintainEvery):
		}
	}
}

func (a *Agent) housekeeping(ctx context.Context, conn *pgx.Conn) error {
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('pgactive.pgactive_tombstones') IS NOT NULL`).Scan(&ok); err != nil || !ok {
		return err
	}
	if err := ensureTombstoneTriggers(ctx, conn); err != nil {
		return err
	}
	_, err := conn.Exec(ctx, `DELETE FROM pgactive.pgactive_tombstones x
		WHERE (SELECT c.timestamp FROM pg_xact_commit_timestamp_origin(x.xmin) c) < $1`, a.tombstoneHorizon())
	if err != nil {
		return fmt.Errorf("forget old tombstones: %w", err)
	}
	return nil
}

// tombstoneHorizon is the commit time before which no change can still
// arrive from any member: every apply worker has applied a transaction
// committed after it. Without news from some member, tombstones are kept a
// day.
func (a *Agent) tombstoneHorizon() time.Time {
	horizon := time.Now().Add(-24 * time.Hour)
	var oldest int64
	a.mu.Lock()
	for _, ap := range a.appliers {
		t := ap.w.Status().AppliedTime.Load()
		if t == 0 {
			oldest = 0
			break
		}
		if oldest == 0 || t < oldest {
			oldest = t
		}
	}
	n := len(a.appliers)
	a.mu.Unlock()
	if n > 0 && oldest > 0 {
		if t := time.UnixMicro(oldest).Add(-time.Minute); t.After(horizon) {
			return t
		}
	}
	return horizon
}

// ensureTombstoneTriggers puts the tombstone trigger on every table with a
// primary key that lacks it, with the key columns in column order.
func ensureTombstoneTriggers(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT c.oid::regclass::text,
			array_agg(a.attname::text ORDER BY a.attnum)
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey)
		WHERE i.indisprimary AND c.relkind = 'r'
		  AND n.nspname NOT IN ('pgactive', 'pg_catalog', 'information_schema')
		  AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'pgactive_tombstone')
		GROUP BY c.oid`)
	if err != nil {
		return fmt.Errorf("find tables without tombstone triggers: %w", err)
	}
	type target struct {
		table string
		keys  []string
	}
	var targets []target
	for rows.Next() {
		var t target
		if err := rows.Scan(&t.table, &t.keys); err != nil {
			return err
		}
		targets = append(targets, t)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find tables without tombstone triggers: %w", err)
	}
	for _, t := range targets {
		args := make([]string, len(t.keys))
		for i, k := range t.keys {
			args[i] = "'" + strings.ReplaceAll(k, "'", "''") + "'"
		}
		// t.table is regclass output: already quoted where needed.
		sql := "CREATE TRIGGER pgactive_tombstone AFTER DELETE ON " + t.table +
			" FOR EACH ROW EXECUTE FUNCTION pgactive.pgactive_record_tombstone(" + strings.Join(args, ", ") + ")"
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("put the tombstone trigger on %s: %w", t.table, err)
		}
	}
	return nil
}
