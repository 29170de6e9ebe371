package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotReady is wrapped by every error about a database that cannot take part
// in replication as configured.
var ErrNotReady = errors.New("database is not ready for pgactive")

// Identity is what identifies a node's database.
type Identity struct {
	SysID    uint64
	Timeline uint32
	DBOID    uint32
	DBName   string
}

// Connect opens a connection to a node and explains the usual failures. The
// DSN is never part of the error.
func Connect(ctx context.Context, dsn, node string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: the connection string is not valid (use a libpq key=value string or a postgres:// URL): %w", label(node, ""), redactParseError(err))
	}
	node = label(node, cfg.Database)
	cfg.RuntimeParams["application_name"] = "pgactive:agent"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000") {
			return nil, fmt.Errorf("%s: authentication failed for user %q: check the password in the user mapping or DSN: %w", node, cfg.User, err)
		}
		if errors.As(err, &pgErr) && pgErr.Code == "3D000" {
			return nil, fmt.Errorf("%s: database %q does not exist: create it or fix dbname: %w", node, cfg.Database, err)
		}
		return nil, fmt.Errorf("%s: cannot connect to %s:%d (is PostgreSQL running and are host and port right?): %w", node, cfg.Host, cfg.Port, err)
	}
	return conn, nil
}

// label names a node in messages, or its database while it has no name yet.
func label(node, db string) string {
	if node != "" {
		return fmt.Sprintf("node %q", node)
	}
	if db != "" {
		return fmt.Sprintf("database %q", db)
	}
	return "database"
}

// redactParseError keeps pgconn's reason and drops the quoted connection
// string, which may hold a password.
func redactParseError(err error) error {
	var pe *pgconn.ParseConfigError
	if !errors.As(err, &pe) {
		return err
	}
	msg := pe.Error()
	if i := strings.LastIndex(msg, "`: "); i >= 0 {
		msg = msg[i+3:]
	}
	return errors.New(msg)
}

// Check verifies the settings replication needs and the privileges of the
// agent's role (a superuser, or a role with the grants of a least-privilege
// agent role), and returns the node's identity. A role that lacks a grant
// gets a *PrivilegeError naming each missing grant and the statement that
// gives it.
func Check(ctx context.Context, conn *pgx.Conn, node string) (Identity, error) {
	node = label(node, conn.Config().Database)
	var walLevel, commitTS string
	var maxSlots, usedSlots, maxSenders, usedSenders int
	// Slots in use exclude this database's own, which the agent reuses.
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), current_setting('track_commit_timestamp'),
		current_setting('max_replication_slots')::int,
		(SELECT count(*) FROM pg_replication_slots WHERE NOT (database = current_database() AND slot_name LIKE 'pgactive\_%'))::int,
		current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication)::int`).Scan(
		&walLevel, &commitTS, &maxSlots, &usedSlots, &maxSenders, &usedSenders)
	if err != nil {
		return Identity{}, fmt.Errorf("%s: read settings: %w", node, err)
	}
	switch {
	case walLevel != "logical":
		return Identity{}, fmt.Errorf("%w: %s has wal_level = %s: set wal_level = logical in postgresql.conf and restart PostgreSQL", ErrNotReady, node, walLevel)
	case commitTS != "on":
		return Identity{}, fmt.Errorf("%w: %s has track_commit_timestamp = %s: set track_commit_timestamp = on in postgresql.conf and restart PostgreSQL (conflict resolution needs commit times)", ErrNotReady, node, commitTS)
	case maxSlots <= usedSlots:
		return Identity{}, fmt.Errorf("%w: %s has max_replication_slots = %d with %d in use by others: raise max_replication_slots (one per member database, one more while a node joins from it) and restart PostgreSQL", ErrNotReady, node, maxSlots, usedSlots)
	case maxSenders <= usedSenders:
		return Identity{}, fmt.Errorf("%w: %s has max_wal_senders = %d with %d in use: raise max_wal_senders and restart PostgreSQL", ErrNotReady, node, maxSenders, usedSenders)
	}
	if err := checkRole(ctx, conn, node); err != nil {
		return Identity{}, err
	}
	var id Identity
	var sysid string
	err = conn.QueryRow(ctx, `SELECT s.system_identifier::text, c.timeline_id, d.oid::int8, d.datname
		FROM pg_control_system() s, pg_control_checkpoint() c, pg_database d WHERE d.datname = current_database()`).
		Scan(&sysid, &id.Timeline, &id.DBOID, &id.DBName)
	if err != nil {
		return Identity{}, fmt.Errorf("%s: read system identifier: %w", node, err)
	}
	if id.SysID, err = strconv.ParseUint(sysid, 10, 64); err != nil {
		return Identity{}, fmt.Errorf("%s: system identifier %q: %w", node, sysid, err)
	}
	return id, nil
}
