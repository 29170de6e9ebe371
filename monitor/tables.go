package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/pgactive-go/pgactive/conflicts"
)

// lagColumns are the columns of pgactive.pgactive_lag, as Row's JSON names them.
const lagColumns = `origin_node, target_node, node_name, node_sysid, application_name, slot_name, active, active_pid,
	pending_wal_decoding, pending_wal_to_apply, restart_lsn, confirmed_flush_lsn, sent_lsn, write_lsn, flush_lsn,
	replay_lsn, pending_messages, lag_seconds, last_error, updated_at`

// writeLagSQL makes pgactive.pgactive_lag hold exactly the rows given as a
// JSON array, in one statement.
const writeLagSQL = `WITH src AS (
	SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(origin_node text, target_node text, node_name text,
		node_sysid text, application_name text, slot_name text, active boolean, active_pid integer,
		pending_wal_decoding bigint, pending_wal_to_apply bigint, restart_lsn pg_lsn, confirmed_flush_lsn pg_lsn,
		sent_lsn pg_lsn, write_lsn pg_lsn, flush_lsn pg_lsn, replay_lsn pg_lsn, pending_messages bigint,
		lag_seconds double precision, last_error text, updated_at timestamptz)
), gone AS (
	DELETE FROM pgactive.pgactive_lag l
	WHERE NOT EXISTS (SELECT 1 FROM src WHERE src.origin_node = l.origin_node AND src.target_node = l.target_node)
)
INSERT INTO pgactive.pgactive_lag (` + lagColumns + `)
SELECT ` + lagColumns + ` FROM src
ON CONFLICT (origin_node, target_node) DO UPDATE SET
	node_name = excluded.node_name, node_sysid = excluded.node_sysid, application_name = excluded.application_name,
	slot_name = excluded.slot_name, active = excluded.active, active_pid = excluded.active_pid,
	pending_wal_decoding = excluded.pending_wal_decoding, pending_wal_to_apply = excluded.pending_wal_to_apply,
	restart_lsn = excluded.restart_lsn, confirmed_flush_lsn = excluded.confirmed_flush_lsn,
	sent_lsn = excluded.sent_lsn, write_lsn = excluded.write_lsn, flush_lsn = excluded.flush_lsn,
	replay_lsn = excluded.replay_lsn, pending_messages = excluded.pending_messages,
	lag_seconds = excluded.lag_seconds, last_error = excluded.last_error, updated_at = excluded.updated_at`

// statsRow is one row of pgactive.pgactive_stats.
type statsRow struct {
	OriginNode       string `json:"origin_node"`
	OriginSysID      string `json:"origin_sysid"`
	OriginName       string `json:"origin_name"`
	NrCommit         uint64 `json:"nr_commit"`
	NrRollback       uint64 `json:"nr_rollback"`
	NrInsert         uint64 `json:"nr_insert"`
	NrUpdate         uint64 `json:"nr_update"`
	NrDelete         uint64 `json:"nr_delete"`
	NrInsertConflict uint64 `json:"nr_insert_conflict"`
	NrUpdateConflict uint64 `json:"nr_update_conflict"`
	NrDeleteConflict uint64 `json:"nr_delete_conflict"`
	NrDisconnect     uint64 `json:"nr_disconnect"`
}

// writeStatsSQL upserts the counters given as a JSON array.
const writeStatsSQL = `INSERT INTO pgactive.pgactive_stats AS s (origin_node, origin_sysid, origin_name, nr_commit,
	nr_rollback, nr_insert, nr_update, nr_delete, nr_insert_conflict, nr_update_conflict, nr_delete_conflict,
	nr_disconnect, updated_at)
SELECT r.origin_node, r.origin_sysid, r.origin_name, r.nr_commit, r.nr_rollback, r.nr_insert, r.nr_update,
	r.nr_delete, r.nr_insert_conflict, r.nr_update_conflict, r.nr_delete_conflict, r.nr_disconnect, clock_timestamp()
FROM jsonb_to_recordset($1::jsonb) AS r(origin_node text, origin_sysid text, origin_name text, nr_commit bigint,
	nr_rollback bigint, nr_insert bigint, nr_update bigint, nr_delete bigint, nr_insert_conflict bigint,
	nr_update_conflict bigint, nr_delete_conflict bigint, nr_disconnect bigint)
ON CONFLICT (origin_node) DO UPDATE SET
	origin_sysid = excluded.origin_sysid, origin_name = excluded.origin_name, nr_commit = excluded.nr_commit,
	nr_rollback = excluded.nr_rollback, nr_insert = excluded.nr_insert, nr_update = excluded.nr_update,
	nr_delete = excluded.nr_delete, nr_insert_conflict = excluded.nr_insert_conflict,
	nr_update_conflict = excluded.nr_update_conflict, nr_delete_conflict = excluded.nr_delete_conflict,
	nr_disconnect = excluded.nr_disconnect, updated_at = excluded.updated_at`

// writeTables mirrors the group's rows into pgactive.pgactive_lag and this
// node's apply counters into pgactive.pgactive_stats, where the tables exist.
func (m *Monitor) writeTables(ctx context.Context, t localTables, rows []Row, members map[string]member) error {
	conn, err := m.connect(ctx)
	if err != nil {
		return err
	}
	if t.lag {
		if rows == nil {
			rows = []Row{}
		}
		b, err := json.Marshal(rows)
		if err != nil {
			return fmt.Errorf("encode lag rows: %w", err)
		}
		if _, err := conn.Exec(ctx, writeLagSQL, string(b)); err != nil {
			m.closeConn()
			return fmt.Errorf("write pgactive.pgactive_lag: %w", err)
		}
	}
	if !t.stats {
		return nil
	}
	stats := m.stats(members)
	if len(stats) == 0 {
		return nil
	}
	b, err := json.Marshal(stats)
	if err != nil {
		return fmt.Errorf("encode apply counters: %w", err)
	}
	if _, err := conn.Exec(ctx, writeStatsSQL, string(b)); err != nil {
		m.closeConn()
		return fmt.Errorf("write pgactive.pgactive_stats: %w", err)
	}
	return nil
}

// stats returns the apply counters of this node, one row per origin.
// nr_rollback counts transactions that failed (unhandled_tx_abort), and
// nr_disconnect the other apply sessions that ended with an error.
func (m *Monitor) stats(members map[string]member) []statsRow {
	var out []statsRow
	for name, w := range m.cfg.Agent.Appliers() {
		st := w.Status()
		c := st.Conflicts()
		r := statsRow{
			OriginNode:       name,
			OriginName:       w.OriginName(),
			NrCommit:         st.Transactions.Load(),
			NrRollback:       c[string(conflicts.UnhandledTxAbort)],
			NrInsert:         st.Inserts.Load(),
			NrUpdate:         st.Updates.Load(),
			NrDelete:         st.Deletes.Load(),
			NrInsertConflict: c[string(conflicts.InsertInsert)],
			NrUpdateConflict: c[string(conflicts.UpdateUpdate)] + c[string(conflicts.UpdateDelete)],
			NrDeleteConflict: c[string(conflicts.DeleteDelete)],
		}
		if errs := st.Errors.Load(); errs > r.NrRollback {
			r.NrDisconnect = errs - r.NrRollback
		}
		if mb, ok := members[name]; ok {
			r.OriginSysID = strconv.FormatUint(mb.SysID, 10)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].OriginNode < out[j].OriginNode })
	return out
}
