package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// conflictsSQL reads pgactive_conflict_history, newest first; $1 bounds the
// rows (NULL: all).
const conflictsSQL = `SELECT row_to_json(h)::text FROM pgactive.pgactive_conflict_history h
	ORDER BY h.local_conflict_time DESC, h.conflict_id DESC LIMIT $1`

// runConflicts prints the conflicts this node recorded, oldest first.
func runConflicts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseInspect("conflicts", args, stderr, false, true)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	conn, err := connectInspect(ctx, o.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var limit *int
	if o.Limit > 0 {
		limit = &o.Limit
	}
	rows, err := conn.Query(ctx, conflictsSQL, limit)
	if err != nil {
		return explainSQL("pgactive_conflict_history", conn, err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return explainSQL("pgactive_conflict_history", conn, err)
	}
	slices.Reverse(texts)
	history := make([]json.RawMessage, len(texts))
	for i, t := range texts {
		history[i] = json.RawMessage(t)
	}
	if o.JSON {
		return printJSON(stdout, history)
	}
	table := make([][]string, 0, len(history))
	for _, raw := range history {
		var c map[string]any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&c); err != nil {
			return fmt.Errorf("read conflict: %w", err)
		}
		table = append(table, []string{field(c, "conflict_id"), field(c, "local_conflict_time"),
			field(c, "object_schema") + "." + field(c, "object_name"), field(c, "conflict_type"),
			field(c, "conflict_resolution"), field(c, "remote_node_sysid"), field(c, "remote_commit_lsn"),
			oneLine(field(c, "error_message"), 60)})
	}
	return printTable(stdout, []string{"ID", "TIME", "TABLE", "TYPE", "RESOLUTION", "REMOTE_SYSID", "REMOTE_LSN", "ERROR"}, table)
}

// field prints a JSON value of a row for a table cell.
func field(row map[string]any, name string) string {
	switch v := row[name].(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	default:
		return fmt.Sprint(v)
	}
}

// oneLine keeps the first line of s, cut to max runes.
func oneLine(s string, max int) string {
	s, _, _ = strings.Cut(s, "\n")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}
