package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgactive-go/pgactive/conflicts"
	"github.com/pgactive-go/pgactive/stream"
)

// localRow is the local version of the row a change targets.
type localRow struct {
	exists     bool
	xmin       string
	tuple      string // the row as JSON
	commitTime *time.Time
	roident    *uint32
}

// lockRowSQL locks and reads the row of table (aliased x) that where
// selects: xmin, the row as JSON, and its version's commit time and origin.
// These are computed in the select list, from the row as locked: when a
// concurrent transaction changed the row and committed while this waited for
// the lock, the row returned is its version, and a join (a LATERAL call)
// would still carry the commit time and origin of the version first seen,
// deciding against a version that no longer exists.
func lockRowSQL(table, where string) string {
	return "SELECT x.xmin::text, row_to_json(x)::text, (pg_xact_commit_timestamp_origin(x.xmin)).timestamp, " +
		"(pg_xact_commit_timestamp_origin(x.xmin)).roident FROM " + table + " x WHERE " + where + " FOR UPDATE OF x"
}

// readLocal locks and reads the local row with the change's key.
func (s *session) readLocal(ctx context.Context, t *table, key stream.Tuple) (localRow, error) {
	sql := lockRowSQL(t.name, t.whereAlias("x", 1))
	var r localRow
	err := s.conn.QueryRow(ctx, sql, keyArgs(t, key)...).Scan(&r.xmin, &r.tuple, &r.commitTime, &r.roident)
	if errors.Is(err, pgx.ErrNoRows) {
		return localRow{}, nil
	}
	if err != nil {
		return localRow{}, fmt.Errorf("read local row of %s: %w", t.name, err)
	}
	r.exists = true
	return r, nil
}

// keyArgs passes key values as text to be cast by the server.
func keyArgs(t *table, key stream.Tuple) []any {
	args := make([]any, 0, len(t.keys))
	for _, k := range t.keys {
		if key[k].Kind == stream.DatumNull {
			args = append(args, nil)
			continue
		}
		args = append(args, string(key[k].Data))
	}
	return args
}

// readTombstone returns the version of the key's tombstone, if any.
func (s *session) readTombstone(ctx context.Context, t *table, key stream.Tuple) (conflicts.Version, error) {
	if !s.tombstones {
		return conflicts.Version{}, nil
	}
	var ts *time.Time
	var roident *uint32
	params := t.tombstoneParams(key)
	args := make([]any, len(params))
	for i, p := range params {
		args[i] = string(p)
	}
	err := s.conn.QueryRow(ctx, `SELECT c.timestamp, c.roident FROM pgactive.pgactive_tombstones x
		LEFT JOIN LATERAL pg_xact_commit_timestamp_origin(x.xmin) c ON true WHERE `+t.tombstone, args...).Scan(&ts, &roident)
	if errors.Is(err, pgx.ErrNoRows) {
		return conflicts.Version{}, nil
	}
	if err != nil {
		return conflicts.Version{}, fmt.Errorf("read tombstone of %s: %w", t.name, err)
	}
	if ts == nil || roident == nil {
		return conflicts.Version{}, nil // written in this transaction: the row is simply gone
	}
	if err := s.knowOrigin(ctx, roident); err != nil {
		return conflicts.Version{}, err
	}
	return conflicts.Version{Tombstone: true, CommitTime: *ts, Origin: s.originNode(*roident)}, nil
}

// recordTombstone remembers that a key was deleted by this (remote)
// transaction when the delete found no row to fire the trigger on.
func (s *session) recordTombstone(ctx context.Context, t *table, key stream.Tuple) error {
	if !s.tombstones {
		return nil
	}
	params := t.tombstoneParams(key)
	vals := make([]string, 0, len(params)-2)
	for i := range t.keys {
		vals = append(vals, "$"+strconv.Itoa(i+3)+"::text")
	}
	sql := "INSERT INTO pgactive.pgactive_tombstones (schema_name, table_name, key) VALUES ($1, $2, (ARRAY[" +
		strings.Join(vals, ", ") + "]::text[])::text) ON CONFLICT (schema_name, table_name, key) DO UPDATE SET deleted_at = now()"
	if _, err := s.conn.PgConn().ExecParams(ctx, sql, params, nil, nil, nil).Close(); err != nil {
		return fmt.Errorf("record tombstone of %s: %w", t.name, err)
	}
	return nil
}

// version turns a local row into what the decision function needs.
func (s *session) version(r localRow, in conflicts.Change) conflicts.Version {
	if !r.exists {
		return conflicts.Version{}
	}
	if r.commitTime == nil || r.roident == nil || s.copies[*r.roident] {
		// Written earlier in this transaction (not committed yet), before
		// commit timestamps were tracked, or by an initial copy (older than
		// anything still to come): take it as the incoming origin's.
		return conflicts.Version{Exists: true, CommitTime: in.CommitTime, Origin: in.Origin}
	}
	return conflicts.Version{Exists: true, CommitTime: *r.commitTime, Origin: s.originNode(*r.roident)}
}

// knowOrigin reloads the origin map when a row was written under an origin
// created after this session started (a member that joined since).
func (s *session) knowOrigin(ctx context.Context, roident *uint32) error {
	if roident == nil || *roident == 0 {
		return nil
	}
	if _, ok := s.origins[*roident]; ok || s.copies[*roident] {
		return nil
	}
	return s.loadOrigins(ctx)
}

// originNode maps a replication origin id to the node it applies; 0 is this node.
func (s *session) originNode(roident uint32) conflicts.NodeID {
	if roident == 0 {
		return s.w.cfg.self()
	}
	if id, ok := s.origins[roident]; ok {
		return id
	}
	return conflicts.NodeID{SysID: 1} // rows of an initial copy: older than any node's change
}

// loadOrigins maps this database's replication origins to the members they apply.
func (s *session) loadOrigins(ctx context.Context) error {
	s.origins = map[uint32]conflicts.NodeID{}
	rows, err := s.conn.Query(ctx, `SELECT roident, roname FROM pg_replication_origin`)
	if err != nil {
		return fmt.Errorf("read replication origins: %w", err)
	}
	names := map[string]uint32{}
	s.copies = map[uint32]bool{}
	dboid := s.w.cfg.TargetDBOID
	copyPrefix, legacyCopyPrefix := copyOriginPrefix(dboid), LegacyOriginName(s.w.cfg.Group, "copy")+"_"
	for rows.Next() {
		var id uint32
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			return err
		}
		names[name] = id
		if strings.HasPrefix(name, copyPrefix) || strings.HasPrefix(name, legacyCopyPrefix) {
			s.copies[id] = true
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read replication origins: %w", err)
	}
	members := map[string]NodeID{s.w.cfg.Origin: {SysID: s.w.cfg.OriginSysID, DBOID: s.w.cfg.OriginDBOID}}
	if s.w.cfg.Members != nil {
		for name, id := range s.w.cfg.Members() {
			members[name] = id
		}
	}
	s.nodes = map[conflicts.NodeID]NodeID{}
	for node, id := range members {
		// Rows applied before an upgrade carry the legacy origin.
		for _, name := range []string{OriginName(dboid, node), LegacyOriginName(s.w.cfg.Group, node)} {
			if ro, ok := names[name]; ok {
				s.origins[ro] = id.key()
			}
		}
		s.nodes[id.key()] = id
	}
	s.roident = names[s.originName]
	return s.conn.QueryRow(ctx, `SELECT to_regclass('pgactive.pgactive_conflict_history') IS NOT NULL,
		to_regclass('pgactive.pgactive_tombstones') IS NOT NULL`).Scan(&s.history, &s.tombstones)
}

// errRowAppeared means a row with the key appeared between the read and the
// insert (a concurrent local or other-origin insert): read and decide again.
var errRowAppeared = errors.New("row appeared while deciding")

// resolveChange reads the local version of c's row, decides, and acts,
// deciding again when a concurrent insert got there first.
func (s *session) resolveChange(ctx context.Context, txn *stream.Txn, c *stream.Change, t *table, in conflicts.Change, self conflicts.NodeID) (conflicts.Decision, localRow, error) {
	if err := s.lockKey(ctx, t, oldKey(c)); err != nil {
		return conflicts.Decision{}, localRow{}, err
	}
	for attempt := 0; ; attempt++ {
		local, err := s.readLocal(ctx, t, oldKey(c))
		if err != nil {
			return conflicts.Decision{}, local, err
		}
		if err := s.knowOrigin(ctx, local.roident); err != nil {
			return conflicts.Decision{}, local, err
		}
		in.Op, in.FullRow = opOf(c.Op), fullRow(c.New)
		ver := s.version(local, in)
		if !local.exists {
			if ver, err = s.readTombstone(ctx, t, oldKey(c)); err != nil {
				return conflicts.Decision{}, local, err
			}
		}
		d := conflicts.Decide(ver, in, self)
		if d.Action == conflicts.Retry {
			return d, local, conflicts.NewConflict(t.name, keyText(t, oldKey(c)), ver, in, d)
		}
		err = s.act(ctx, d.Action, c, t, !local.exists)
		if errors.Is(err, errRowAppeared) && attempt < 10 {
			continue
		}
		var uc *uniqueConflict
		if errors.As(err, &uc) && attempt < 10 {
			won, rerr := s.resolveUnique(ctx, txn, c, t, in, uc)
			if rerr != nil {
				return d, local, rerr
			}
			if won {
				continue // the other row is gone: apply again
			}
			return conflicts.Decision{Action: conflicts.Keep}, local, nil
		}
		if err != nil {
			return d, local, err
		}
		if d.RecordTombstone && d.Action != conflicts.ApplyAsIs { // a delete that found no row
			if err := s.recordTombstone(ctx, t, oldKey(c)); err != nil {
				return d, local, err
			}
		}
		return d, local, nil
	}
}

// slowPath applies a chunk change by change: each row is locked and read,
// the conflicts package decides, and conflicts are recorded.
func (s *session) slowPath(ctx context.Context, txn *stream.Txn, tables []*table) error {
	in := conflicts.Change{CommitTime: txn.Time(), Origin: s.w.cfg.origin()}
	self := s.w.cfg.self()
	for i := range txn.Changes {
		c := &txn.Changes[i]
		if c.Op == stream.OpTruncate {
			if _, err := s.conn.Exec(ctx, truncateSQL(c, tables)); err != nil {
				return fmt.Errorf("truncate: %w", err)
			}
			continue
		}
		if c.Op == stream.OpMessage {
			if err := s.runDDL(ctx, c); err != nil {
				return err
			}
			continue
		}
		t := tables[c.Rel]
		if len(t.keys) == 0 {
			return fmt.Errorf("table %s has no replica identity on the origin: add a primary key", t.name)
		}
		d, local, err := s.resolveChange(ctx, txn, c, t, in, self)
		if err != nil {
			return err
		}
		if d.Conflict {
			s.w.status.countConflict(string(d.Type))
			if err := s.record(ctx, s.conn, txn, t, c, local, d, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

func opOf(op stream.Op) conflicts.Op {
	switch op {
	case stream.OpInsert:
		return conflicts.Insert
	case stream.OpUpdate:
		return conflicts.Update
	}
	return conflicts.Delete
}

func fullRow(t stream.Tuple) bool {
	for _, d := range t {
		if d.Kind == stream.DatumUnchanged {
			return false
		}
	}
	return len(t) > 0
}

// act carries out a decision on one change. An insert into a key that was
// free when read runs under a savepoint, so that a row inserted meanwhile
// makes it report errRowAppeared instead of failing the transaction.
func (s *session) act(ctx context.Context, a conflicts.Action, c *stream.Change, t *table, wasFree bool) error {
	var sql string
	var params [][]byte
	switch a {
	case conflicts.Skip, conflicts.Keep:
		return nil
	case conflicts.ApplyAsIs:
		var err error
		if sql, params, err = rowStatement(c, t, true); err != nil {
			return err
		}
	case conflicts.ApplyAsUpdate: // an insert over an older row
		var set []int
		sql, set = t.updateSQLFor(c.New, true)
		params = t.keyParams(c.New, nil)
		for _, i := range set {
			params = append(params, param(c.New[i]))
		}
	case conflicts.ApplyAsInsert: // an update whose row is missing
		sql = t.insert
		for _, d := range c.New {
			params = append(params, param(d))
		}
	default:
		return fmt.Errorf("unexpected decision %v", a)
	}
	guarded := c.Op != stream.OpDelete
	if guarded {
		if _, err := s.conn.Exec(ctx, "SAVEPOINT pgactive_change"); err != nil {
			return fmt.Errorf("savepoint: %w", err)
		}
	}
	tag, err := s.conn.PgConn().ExecParams(ctx, sql, params, nil, nil, nil).Close()
	var pe *pgconn.PgError
	if guarded && errors.As(err, &pe) && pe.Code == "23505" {
		if _, rerr := s.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT pgactive_change"); rerr != nil {
			return fmt.Errorf("roll back to savepoint: %w", rerr)
		}
		pk, perr := s.primaryKeyName(ctx, t)
		if perr != nil {
			return perr
		}
		if pe.ConstraintName == pk {
			if wasFree {
				return errRowAppeared
			}
			return fmt.Errorf("%s %s: %w", c.Op, t.name, err)
		}
		return &uniqueConflict{constraint: pe.ConstraintName, cause: err}
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", c.Op, t.name, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("%s %s: %d rows affected, want 1", c.Op, t.name, tag.RowsAffected())
	}
	return nil
}

// keyText renders a key for messages: the key values joined by commas.
func keyText(t *table, key stream.Tuple) string {
	out := ""
	for i, k := range t.keys {
		if i > 0 {
			out += ","
		}
		if key[k].Kind == stream.DatumNull {
			out += "NULL"
		} else {
			out += string(key[k].Data)
		}
	}
	return out
}

// tupleJSON renders a remote tuple as a JSON object of its text values.
func tupleJSON(rel *stream.Relation, tuple stream.Tuple) string {
	if len(tuple) == 0 {
		return ""
	}
	m := make(map[string]any, len(tuple))
	for i, d := range tuple {
		switch d.Kind {
		case stream.DatumNull:
			m[rel.Columns[i].Name] = nil
		case stream.DatumText:
			m[rel.Columns[i].Name] = string(d.Data)
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// record writes one row of pgactive_conflict_history through conn: the
// apply connection inside the applied transaction for a resolved conflict,
// or a separate connection for an apply error (the applied transaction was
// rolled back, and a commit on the apply connection would move the origin).
func (s *session) record(ctx context.Context, conn *pgx.Conn, txn *stream.Txn, t *table, c *stream.Change, local localRow, d conflicts.Decision, cause error) error {
	if !s.history {
		return nil
	}
	withTuples := true
	if s.w.cfg.ConflictLogging != nil {
		var log bool
		if log, withTuples = s.w.cfg.ConflictLogging(); !log {
			return nil
		}
	}
	remote := c.New
	if c.Op == stream.OpDelete {
		remote = c.Old
	}
	var localTuple, localXmin, localOrigin, remoteTuple *string
	var localCommit *time.Time
	remoteNode, localNode := s.node(s.w.cfg.origin()), (*NodeID)(nil)
	if local.exists {
		localTuple, localXmin, localCommit = &local.tuple, &local.xmin, local.commitTime
		if local.roident != nil {
			id := s.originNode(*local.roident)
			o := strconv.FormatUint(id.SysID, 10)
			localOrigin, localNode = &o, s.node(id)
		}
	}
	if rt := tupleJSON(&t.rel, remote); rt != "" {
		remoteTuple = &rt
	}
	if !withTuples {
		localTuple, remoteTuple = nil, nil
	}
	e := errorColumns(cause)
	_, err := conn.Exec(ctx, `INSERT INTO pgactive.pgactive_conflict_history (
		local_node_sysid, local_conflict_xid, local_conflict_lsn, local_conflict_time, object_schema, object_name,
		remote_node_sysid, remote_txid, remote_commit_time, remote_commit_lsn, conflict_type, conflict_resolution,
		local_tuple, remote_tuple, local_tuple_xmin, local_tuple_origin_sysid,
		error_message, error_sqlstate, error_querystring, error_cursorpos, error_detail, error_hint, error_context,
		error_columnname, error_typename, error_constraintname, error_filename, error_lineno, error_funcname,
		remote_node_timeline, remote_node_dboid, local_tuple_origin_timeline, local_tuple_origin_dboid, local_commit_time)
		VALUES ($1, coalesce(xid(pg_current_xact_id_if_assigned()), '0'::xid), pg_current_wal_lsn(), now(), $2, $3,
		$4, $5::text::xid, $6, $7::text::pg_lsn, $8, $9,
		$10::json, $11::json, $12::xid, $13,
		$14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26,
		$28, $29, $30, $31, $27)`,
		strconv.FormatUint(s.w.cfg.TargetSysID, 10), t.rel.Schema, t.rel.Table,
		strconv.FormatUint(txn.OriginSysID, 10), strconv.FormatUint(uint64(txn.XID), 10), txn.Time(), txn.CommitLSN.String(),
		string(d.Type), string(d.Resolution),
		localTuple, remoteTuple, localXmin, localOrigin,
		e.message, e.sqlstate, e.query, e.cursor, e.detail, e.hint, e.context,
		e.column, e.typ, e.constraint, e.file, e.line, e.funcname, localCommit,
		remoteNode.timeline(), remoteNode.dboid(), localNode.timeline(), localNode.dboid())
	if err != nil {
		return fmt.Errorf("record %s conflict on %s: %w", d.Type, t.name, err)
	}
	return nil
}

// errorFields are the error_* columns of a history row.
type errorFields struct {
	message, sqlstate, query, detail, hint, context, column, typ, constraint, file, funcname *string
	cursor, line                                                                             *int32
}

func errorColumns(cause error) errorFields {
	var e errorFields
	if cause == nil {
		return e
	}
	str := func(v string) *string {
		if v == "" {
			return nil
		}
		return &v
	}
	e.message = str(cause.Error())
	var pe *pgconn.PgError
	if errors.As(cause, &pe) {
		e.message, e.sqlstate, e.detail, e.hint, e.context = str(pe.Message), str(pe.Code), str(pe.Detail), str(pe.Hint), str(pe.Where)
		e.query, e.column, e.typ, e.constraint = str(pe.InternalQuery), str(pe.ColumnName), str(pe.DataTypeName), str(pe.ConstraintName)
		e.file, e.funcname = str(pe.File), str(pe.Routine)
		if pe.Position > 0 {
			e.cursor = &pe.Position
		}
		if pe.Line > 0 {
			e.line = &pe.Line
		}
	}
	return e
}

// runDDL runs a command replicated with pgactive_replicate_ddl_command, as
// the origin ran it: with an empty search_path, in the applied transaction.
func (s *session) runDDL(ctx context.Context, c *stream.Change) error {
	if c.Prefix != stream.PrefixDDL {
		return nil
	}
	if _, err := s.conn.Exec(ctx, "SET LOCAL search_path = ''"); err != nil {
		return fmt.Errorf("replicated DDL: %w", err)
	}
	if _, err := s.conn.PgConn().Exec(ctx, string(c.Content)).ReadAll(); err != nil {
		return fmt.Errorf("replicated DDL %q: %w", string(c.Content), err)
	}
	s.w.log.Info("ran replicated DDL", "command", string(c.Content))
	return nil
}

// node returns what the session knows of node key, or nil.
func (s *session) node(key conflicts.NodeID) *NodeID {
	if key == s.w.cfg.self() && s.w.cfg.TargetTimeline != 0 {
		return &NodeID{SysID: key.SysID, Timeline: s.w.cfg.TargetTimeline, DBOID: key.DBOID}
	}
	if id, ok := s.nodes[key]; ok && id.DBOID != 0 {
		return &id
	}
	return nil
}

func (n *NodeID) timeline() *uint32 {
	if n == nil {
		return nil
	}
	return &n.Timeline
}

func (n *NodeID) dboid() *uint32 {
	if n == nil {
		return nil
	}
	return &n.DBOID
}

// uniqueConflict is a change that collides with a different row (another
// primary key) on a unique constraint other than the primary key.
type uniqueConflict struct {
	constraint string
	cause      error
}

func (u *uniqueConflict) Error() string {
	return fmt.Sprintf("unique constraint %q holds another row: %v", u.constraint, u.cause)
}

func (u *uniqueConflict) Unwrap() error { return u.cause }

// primaryKeyName returns the name of t's primary key constraint, cached.
func (s *session) primaryKeyName(ctx context.Context, t *table) (string, error) {
	if t.pkLoaded {
		return t.pkName, nil
	}
	err := s.conn.QueryRow(ctx, `SELECT coalesce((SELECT conname::text FROM pg_constraint
		WHERE conrelid = $1::regclass AND contype = 'p'), '')`, t.name).Scan(&t.pkName)
	if err != nil {
		return "", fmt.Errorf("find the primary key of %s: %w", t.name, err)
	}
	t.pkLoaded = true
	return t.pkName, nil
}

// resolveUnique settles a collision on a secondary unique key between the
// incoming row and a local row with another primary key by last update wins,
// as every node does in the same way: if the incoming change is later, the
// local row is deleted (leaving a tombstone) and the change applies; if not,
// the change is dropped. Either way the conflict is recorded as
// insert_insert. It reports whether the incoming change won.
func (s *session) resolveUnique(ctx context.Context, txn *stream.Txn, c *stream.Change, t *table, in conflicts.Change, uc *uniqueConflict) (bool, error) {
	var cols []string
	err := s.conn.QueryRow(ctx, `SELECT array_agg(a.attname::text ORDER BY k.ord)
		FROM pg_constraint con
		CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
		WHERE con.conrelid = $1::regclass AND con.conname = $2`, t.name, uc.constraint).Scan(&cols)
	if err != nil || len(cols) == 0 {
		return false, fmt.Errorf("%s %s: %w", c.Op, t.name, uc.cause) // a unique index without a constraint: retried
	}
	where := make([]string, len(cols))
	args := make([]any, len(cols))
	for i, col := range cols {
		idx := -1
		for j := range t.rel.Columns {
			if t.rel.Columns[j].Name == col {
				idx = j
			}
		}
		if idx < 0 || c.New[idx].Kind != stream.DatumText {
			return false, fmt.Errorf("%s %s: %w", c.Op, t.name, uc.cause)
		}
		where[i] = "x." + quote(col) + " = $" + strconv.Itoa(i+1)
		args[i] = string(c.New[idx].Data)
	}
	cond := strings.Join(where, " AND ")
	var other localRow
	err = s.conn.QueryRow(ctx, lockRowSQL(t.name, cond), args...).Scan(&other.xmin, &other.tuple, &other.commitTime, &other.roident)
	if errors.Is(err, pgx.ErrNoRows) {
		return true, nil // gone meanwhile: try again
	}
	if err != nil {
		return false, fmt.Errorf("read the row holding %s of %s: %w", uc.constraint, t.name, err)
	}
	other.exists = true
	if err := s.knowOrigin(ctx, other.roident); err != nil {
		return false, err
	}
	ver := s.version(other, in)
	won := in.Origin == ver.Origin || conflicts.Wins(in.CommitTime, in.Origin, ver.CommitTime, ver.Origin)
	d := conflicts.Decision{Action: conflicts.Keep, Conflict: true, Type: conflicts.InsertInsert, Resolution: conflicts.KeepLocal}
	if won {
		d.Action, d.Resolution = conflicts.ApplyAsIs, conflicts.KeepRemote
		if _, err := s.conn.Exec(ctx, "DELETE FROM "+t.name+" x WHERE "+cond, args...); err != nil {
			return false, fmt.Errorf("delete the older row holding %s of %s: %w", uc.constraint, t.name, err)
		}
	}
	s.w.status.countConflict(string(d.Type))
	if err := s.record(ctx, s.conn, txn, t, c, other, d, nil); err != nil {
		return false, err
	}
	return won, nil
}
