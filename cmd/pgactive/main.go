// Command pgactive runs the pgactive-go agents and their tools.
//
// Usage:
//
//	pgactive run --dsn DSN [--dsn DSN ...] [--nats URL] [--nats-listen ADDR] [--http ADDR] [--data-dir DIR]
//	pgactive extension install [--pg-config PATH]
//	pgactive demo
//	pgactive lag [--dsn DSN | --http ADDR] [--json]
//	pgactive conflicts [--dsn DSN] [--json] [--limit N]
//	pgactive nodes [--dsn DSN] [--json]
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is a mistake in the command line or configuration: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "pgactive:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

const usage = `pgactive: active-active PostgreSQL replication over NATS JetStream

Commands:
  run --dsn DSN [--dsn DSN ...] [--nats URL] [--nats-listen ADDR] [--http ADDR] [--data-dir DIR]
                      run the agents of one or more databases
  extension install [--pg-config PATH]
                      install the pgactive extension files into PostgreSQL
  demo                walk through the quick start on throwaway local clusters
  bench [--scenario all|throughput,latency,three,join,bigtxn] [--scale small|full]
                      compare with PostgreSQL's native logical replication
  lag [--dsn DSN | --http ADDR] [--json]
                      replication lag of every path of the group
  conflicts [--dsn DSN] [--json] [--limit N]
                      the conflict history of a node
  nodes [--dsn DSN] [--json]
                      the members of the group, as a node sees them

Run 'pgactive COMMAND --help' for a command's flags.`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usagef("no command given")
	}
	switch args[0] {
	case "run":
		return runAgents(ctx, args[1:], stdout, stderr)
	case "extension":
		return runExtension(ctx, args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "lag":
		return runLag(ctx, args[1:], stdout, stderr)
	case "conflicts":
		return runConflicts(ctx, args[1:], stdout, stderr)
	case "nodes":
		return runNodes(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return usagef("unknown command %q", args[0])
}
