package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/pgactive-go/pgactive/bench"
)

const benchUsage = `Usage: pgactive bench [--scenario all|throughput|latency|three|join|bigtxn] [--scale small|full]
                      [--cpuprofile FILE] [--markdown FILE]

Starts its own PostgreSQL clusters and NATS server, runs each scenario against
pgactive-go and against native logical replication, and prints the figures
side by side with their ratios. Everything it starts is removed at the end.

Flags:
  --scenario LIST     comma-separated scenarios, or all (default all)
  --scale NAME        small (a quick check) or full (the sizes of issue 7; default)
  --cpuprofile FILE   write a CPU profile of pgactive-go's throughput run, or of
                      its first latency run when throughput does not run
                      (go tool pprof -tagfocus node=target FILE: the apply side)
  --markdown FILE     also write the report as Markdown to FILE
  --log-level LEVEL   agents' log level (default warn)
`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage) }
	scenario := fs.String("scenario", "all", "")
	scale := fs.String("scale", "full", "")
	cpuProfile := fs.String("cpuprofile", "", "")
	markdown := fs.String("markdown", "", "")
	logLevel := fs.String("log-level", "warn", "")
	agentProcess := fs.Bool("agent-process", false, "") // internal: run one agent, configured by bench.AgentEnv
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("bench: unexpected argument %q", fs.Arg(0))
	}
	level, err := parseLevel(*logLevel)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if *agentProcess {
		return bench.RunAgentProcess(ctx, stdout, log)
	}

	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this program, to run agent processes: %w", err)
	}
	opts := bench.Options{Scale: *scale, CPUProfile: *cpuProfile, Log: log,
		AgentCommand: []string{exe, "bench", "--agent-process", "--log-level", *logLevel},
		Command:      strings.Join(append([]string{"pgactive bench"}, args...), " ")}
	if *scenario != "all" {
		opts.Scenarios = strings.Split(*scenario, ",")
	}
	if err := opts.Validate(); err != nil {
		return usageError{err}
	}
	rep, runErr := bench.Run(ctx, opts, stderr)
	if rep != nil {
		if err := rep.WriteText(stdout); err != nil {
			return err
		}
		if *markdown != "" {
			if err := writeMarkdown(*markdown, rep); err != nil {
				return err
			}
		}
	}
	if runErr != nil {
		return runErr
	}
	if len(rep.Failures) > 0 {
		return fmt.Errorf("bench: %d scenario(s) failed: %s", len(rep.Failures), strings.Join(rep.Failures, "; "))
	}
	if rep != nil && rep.Profiled != "" {
		fmt.Fprintf(stdout, "CPU profile of pgactive-go's %s run written to %s: go tool pprof -top -tagfocus node=target %s\n", rep.Profiled, *cpuProfile, *cpuProfile)
	} else if *cpuProfile != "" {
		fmt.Fprintf(stdout, "no CPU profile written: --cpuprofile profiles the throughput or the latency scenario, and neither ran\n")
	}
	return nil
}

func writeMarkdown(path string, rep *bench.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write the Markdown report: %w", err)
	}
	if err := rep.WriteMarkdown(f); err != nil {
		f.Close()
		return fmt.Errorf("write the Markdown report: %w", err)
	}
	return f.Close()
}
