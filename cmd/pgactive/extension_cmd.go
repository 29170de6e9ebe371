package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/pgactive-go/pgactive/extension"
)

func runExtension(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "install" {
		return usagef("extension: use 'pgactive extension install [--pg-config PATH]'")
	}
	fs := flag.NewFlagSet("extension install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pgConfig := fs.String("pg-config", "", "path of pg_config of the PostgreSQL server (default: pg_config on PATH, then /usr/lib/postgresql/15/bin/pg_config)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	dir, err := extension.Install(*pgConfig)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "installed pgactive.control and pgactive--1.0.sql into %s\nnow run CREATE EXTENSION pgactive; in each database to replicate\n", dir)
	return nil
}
