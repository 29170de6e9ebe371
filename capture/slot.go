package capture

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PublicationName is the publication capture decodes through. It is FOR ALL
// TABLES; changes to the pgactive schema are dropped by the assembler.
const PublicationName = "pgactive_publication"

// SlotName is the logical replication slot of a node: one per database,
// whatever the number of nodes in the group.
func SlotName(dboid uint32, sysid uint64) string {
	return "pgactive_" + strconv.FormatUint(uint64(dboid), 10) + "_" + strconv.FormatUint(sysid, 10)
}

// EnsurePublication creates the publication if it does not exist.
func EnsurePublication(ctx context.Context, conn *pgx.Conn) error {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, PublicationName).Scan(&exists); err != nil {
		return fmt.Errorf("look up publication %q: %w", PublicationName, err)
	}
	if exists {
		return nil
	}
	_, err := conn.Exec(ctx, "CREATE PUBLICATION "+pgx.Identifier{PublicationName}.Sanitize()+" FOR ALL TABLES")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // created concurrently
		return nil
	}
	if err != nil {
		return fmt.Errorf("create publication %q: %w", PublicationName, err)
	}
	return nil
}

// EnsureSlot creates the node's logical slot (pgoutput) if it does not exist.
// It reports whether it created the slot.
func EnsureSlot(ctx context.Context, conn *pgx.Conn, slot string) (bool, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&exists); err != nil {
		return false, fmt.Errorf("look up slot %q: %w", slot, err)
	}
	if exists {
		return false, nil
	}
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" {
			return false, nil
		}
		return false, fmt.Errorf("create slot %q: %w", slot, err)
	}
	return true, nil
}

// DropSlot drops the node's slot if it exists.
func DropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
	if err != nil {
		return fmt.Errorf("drop slot %q: %w", slot, err)
	}
	return nil
}

// startReplication starts streaming pgoutput for the publication from the
// slot's confirmed position.
func startReplication(ctx context.Context, conn *pgconn.PgConn, slot string) error {
	err := pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + PublicationName + "'", "messages 'true'"},
	})
	if err != nil {
		return fmt.Errorf("start replication on slot %q: %w", slot, err)
	}
	return nil
}
