package node

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// maintainEvery is how often the agent reads its settings, puts tombstone
// triggers on new tables, and forgets tombstones and conflict history rows no
// one needs any more.
const maintainEvery = 5 * time.Second

// repeatWarningEvery is how often a housekeeping failure that does not
// change is logged again.
const repeatWarningEvery = 10 * time.Minute

// Settings read from the database's own configuration (ALTER DATABASE ...
// SET), under pgactive's names where pgactive has them.
const (
	settingLogConflicts     = "pgactive.log_conflicts_to_table"          // on (default) or off
	settingConflictTuples   = "pgactive.conflict_logging_include_tuples" // on (default) or off
	settingHistoryRetention = "pgactive.conflict_history_retention"      // an interval, default 30 days
	defaultHistoryRetention = "30 days"
)

// ConflictSettings say how apply records conflicts.
type ConflictSettings struct {
	Log    bool // write rows to pgactive_conflict_history
	Tuples bool // with local_tuple and remote_tuple
}

// maintain runs the agent's housekeeping until ctx ends.
func (a *Agent) maintain(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var lastErr string
	var lastLogged time.Time
	for {
		if conn == nil || conn.IsClosed() {
			c, err := Connect(ctx, a.cfg.DSN, a.cfg.Node)
			if err == nil {
				conn = c
			}
		}
		if conn != nil {
			err := a.housekeeping(ctx, conn)
			switch {
			case err == nil || ctx.Err() != nil:
				lastErr = ""
			case err.Error() != lastErr || time.Since(lastLogged) >= repeatWarningEvery:
				// The same failure every few seconds is logged now and then.
				a.log.Warn("housekeeping failed", "err", err)
				lastErr, lastLogged = err.Error(), time.Now()
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
	settings, err := a.loadSettings(ctx, conn)
	if err != nil {
		return err
	}
	retention := settings[settingHistoryRetention]
	if retention == "" {
		retention = defaultHistoryRetention
	}
	var history, ok bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('pgactive.pgactive_conflict_history') IS NOT NULL,
		to_regclass('pgactive.pgactive_tombstones') IS NOT NULL`).Scan(&history, &ok); err != nil {
		return err
	}
	if history {
		if _, err := conn.Exec(ctx, `DELETE FROM pgactive.pgactive_conflict_history WHERE local_conflict_time < now() - $1::interval`, retention); err != nil {
			return fmt.Errorf("apply %s = %q: %w", settingHistoryRetention, retention, err)
		}
	}
	if !ok {
		return nil
	}
	if err := ensureTombstoneTriggers(ctx, conn); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, `DELETE FROM pgactive.pgactive_tombstones x
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
			array_agg(a.attname::text ORDER BY a.attnum), has_table_privilege(c.oid, 'TRIGGER'),
			n.nspname::text, c.relname::text, o.rolname::text, o.rolsuper, current_user::text
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_roles o ON o.oid = c.relowner
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey)
		WHERE i.indisprimary AND c.relkind = 'r'
		  AND n.nspname NOT IN ('pgactive', 'pg_catalog', 'information_schema')
		  AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'pgactive_tombstone')
		GROUP BY c.oid, n.nspname, o.rolname, o.rolsuper`)
	if err != nil {
		return fmt.Errorf("find tables without tombstone triggers: %w", err)
	}
	type target struct {
		table string
		keys  []string
	}
	var targets []target
	var denied []ownedTable // tables the agent's role may not put a trigger on
	var role string
	for rows.Next() {
		var t target
		var o ownedTable
		var may bool
		if err := rows.Scan(&t.table, &t.keys, &may, &o.schema, &o.name, &o.owner, &o.ownerSuper, &role); err != nil {
			return err
		}
		if !may {
			denied = append(denied, o)
			continue
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
	if len(denied) > 0 {
		var fixes []string
		for _, g := range ownerGrants(denied, pgx.Identifier{role}.Sanitize()) {
			fixes = append(fixes, g.What+": "+g.Fix)
		}
		return fmt.Errorf("cannot put the tombstone trigger on tables the agent's role lacks TRIGGER on: as a superuser, run: %s; see %s",
			strings.Join(fixes, "; "), grantsGuide)
	}
	return nil
}

// databaseSettings reads the database's own settings (ALTER DATABASE ...
// SET name = value), which a running session does not see change.
func databaseSettings(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	rows, err := conn.Query(ctx, `SELECT unnest(setconfig) FROM pg_db_role_setting
		WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND setrole = 0`)
	if err != nil {
		return nil, fmt.Errorf("read database settings: %w", err)
	}
	out := map[string]string{}
	for rows.Next() {
		var kv string
		if err := rows.Scan(&kv); err != nil {
			return nil, err
		}
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = strings.ToLower(v)
		}
	}
	return out, rows.Err()
}

// loadSettings reads the database's settings and keeps the conflict ones.
func (a *Agent) loadSettings(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	settings, err := databaseSettings(ctx, conn)
	if err != nil {
		return nil, err
	}
	off := func(v string) bool { return v == "off" || v == "false" || v == "0" }
	a.conflictSettings.Store(&ConflictSettings{Log: !off(settings[settingLogConflicts]), Tuples: !off(settings[settingConflictTuples])})
	return settings, nil
}

// conflictLogging returns the current conflict settings for apply workers.
func (a *Agent) conflictLogging() (log, tuples bool) {
	if s := a.conflictSettings.Load(); s != nil {
		return s.Log, s.Tuples
	}
	return true, true
}
