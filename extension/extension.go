package extension

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Name is the extension's name, as in CREATE EXTENSION pgactive.
const Name = "pgactive"

// Version is the extension version the embedded script installs.
const Version = "1.0"

// File names of the extension in PostgreSQL's share/extension directory.
const (
	ControlFile = Name + ".control"
	ScriptFile  = Name + "--" + Version + ".sql"
)

var (
	//go:embed pgactive.control
	control string
	//go:embed pgactive--1.0.sql
	script string
)

// Control returns the content of the extension's control file.
func Control() string { return control }

// Script returns the extension's install script, as CREATE EXTENSION runs it.
func Script() string { return script }

// SchemaScript returns the install script without the commands only psql or
// CREATE EXTENSION understand (the psql guard line), for running over a plain
// connection as [CreateSchema] does.
func SchemaScript() string {
	lines := strings.SplitAfter(script, "\n")
	var b strings.Builder
	b.Grow(len(script))
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), `\`) {
			b.WriteString("\n") // keep line numbers of errors meaningful
			continue
		}
		b.WriteString(l)
	}
	return b.String()
}

// createSchemaLock serialises concurrent CreateSchema calls on one database
// (two agents starting at once): pg_advisory_xact_lock(hashtext(...)).
const createSchemaLock = "pgactive.create_schema"

// CreateSchema creates the extension's objects in the database conn is
// connected to without CREATE EXTENSION, for servers where the extension's
// files cannot be installed. It is idempotent: objects that exist are kept
// (functions are replaced). If the extension is installed, it does nothing.
// It needs a superuser, as CREATE FOREIGN DATA WRAPPER does.
//
// Objects made this way belong to no extension: remove them with
// DROP SCHEMA pgactive CASCADE; DROP FOREIGN DATA WRAPPER pgactive_fdw CASCADE;
func CreateSchema(ctx context.Context, conn *pgx.Conn) error {
	var installed bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = $1)`, Name).Scan(&installed)
	if err != nil {
		return fmt.Errorf("look up extension %s: %w", Name, err)
	}
	if installed {
		return nil
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create schema pgactive: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, `SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext($1))`, createSchemaLock); err != nil {
		return fmt.Errorf("create schema pgactive: lock: %w", err)
	}
	// No arguments: pgx sends the script with the simple protocol, which runs
	// several statements in one message.
	if _, err := tx.Exec(ctx, SchemaScript()); err != nil {
		return fmt.Errorf("create schema pgactive: %w%s", err, privilegeHint(err))
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create schema pgactive: commit: %w", err)
	}
	return nil
}

// privilegeHint names the fix when err is a lack of privilege.
func privilegeHint(err error) string {
	var pgErr interface{ SQLState() string }
	if errors.As(err, &pgErr) && pgErr.SQLState() == "42501" {
		return " (creating pgactive's objects, pgactive_fdw among them, needs a superuser: connect as one)"
	}
	return ""
}
