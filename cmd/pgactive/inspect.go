package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// inspectOptions are the flags of `pgactive lag|conflicts|nodes`.
type inspectOptions struct {
	DSN   string
	HTTP  string
	JSON  bool
	Limit int
}

// defaultHTTP is where `pgactive lag` looks without --dsn or --http: the
// default --http address of `pgactive run`.
const defaultHTTP = "http://127.0.0.1:8080"

// parseInspect parses the flags of command name. Without --dsn or --http the
// database comes from PGACTIVE_DSN; commands that can read the agent's HTTP
// endpoint (withHTTP) fall back to it.
func parseInspect(name string, args []string, stderr io.Writer, withHTTP, withLimit bool) (inspectOptions, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o inspectOptions
	fs.StringVar(&o.DSN, "dsn", "", "libpq connection string or URL of a pgactive database (env PGACTIVE_DSN)")
	if withHTTP {
		fs.StringVar(&o.HTTP, "http", "", "address of an agent's HTTP endpoint, as given to pgactive run --http (default "+defaultHTTP+")")
	}
	fs.BoolVar(&o.JSON, "json", false, "print JSON instead of a table")
	if withLimit {
		fs.IntVar(&o.Limit, "limit", 0, "show only the N most recent (0: all)")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, usageError{err}
	}
	if fs.NArg() > 0 {
		return o, usagef("%s: unexpected argument %q", name, fs.Arg(0))
	}
	if o.DSN != "" && o.HTTP != "" {
		return o, usagef("%s: use either --dsn or --http, not both", name)
	}
	if o.Limit < 0 {
		return o, usagef("%s: --limit %d: use 0 (all) or more", name, o.Limit)
	}
	if o.DSN == "" && o.HTTP == "" {
		o.DSN = os.Getenv("PGACTIVE_DSN")
	}
	if o.DSN == "" && o.HTTP == "" {
		if !withHTTP {
			return o, usagef("%s: no database given: pass --dsn 'host=... dbname=...' (or set PGACTIVE_DSN)", name)
		}
		o.HTTP = defaultHTTP
	}
	return o, nil
}

// connectInspect opens a session to the database of --dsn. Errors never
// hold the connection string.
func connectInspect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		var pe *pgconn.ParseConfigError
		if errors.As(err, &pe) && errors.Unwrap(pe) != nil {
			err = errors.Unwrap(pe)
		}
		return nil, usagef("--dsn is not a valid connection string (use a libpq key=value string or a postgres:// URL): %v", err)
	}
	cfg.RuntimeParams["application_name"] = "pgactive:cli"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database %q on %s:%d: %w", cfg.Database, cfg.Host, cfg.Port, err)
	}
	return conn, nil
}

// explainSQL turns a missing pgactive object into a hint.
func explainSQL(what string, conn *pgx.Conn, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "3F000" || pgErr.Code == "42P01" || pgErr.Code == "42883") {
		return fmt.Errorf("read %s: database %q has no pgactive schema: run CREATE EXTENSION pgactive in it (or start the agent with --create-schema): %w",
			what, conn.Config().Database, err)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// printJSON prints v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printTable prints a header and rows aligned in columns, and "(N rows)".
func printTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	noun := "rows"
	if len(rows) == 1 {
		noun = "row"
	}
	_, err := fmt.Fprintf(w, "(%d %s)\n", len(rows), noun)
	return err
}
