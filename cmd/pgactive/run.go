package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/pgactive-go/pgactive/extension"
	"github.com/pgactive-go/pgactive/monitor"
	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

func runAgents(ctx context.Context, args []string, _ io.Writer, stderr io.Writer) error {
	cfg, err := parseRunConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	level, _ := parseLevel(cfg.LogLevel)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	nc, js, replicas, stopNATS, err := connectNATS(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stopNATS()

	var createSchema func(context.Context, *pgx.Conn) error
	if cfg.CreateSchema {
		createSchema = extension.CreateSchema
	}
	monitors := &monitor.Set{}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		h := monitor.NewHandler(monitor.HandlerConfig{Monitors: monitors.List, Agents: len(cfg.DSNs), Log: log})
		return serveHTTP(gctx, cfg.HTTP, h, log)
	})
	for _, dsn := range cfg.DSNs {
		g.Go(func() error {
			return serveDatabase(gctx, node.RedactDSN(dsn), log, func(ctx context.Context) error {
				return node.NewController(node.ControllerConfig{DSN: dsn, NC: nc, JS: js, Replicas: replicas,
					CreateSchema: createSchema, Monitors: monitors, Log: log}).Run(ctx)
			})
		})
	}
	return g.Wait()
}

// Waits before serving a database again after its controller stopped.
const (
	restartMin = time.Second
	restartMax = time.Minute
)

// serveDatabase runs serve, the controller of one database, until ctx ends.
// When it stops with an error (the database unreachable, a start-up check
// failed), the databases of the other --dsn go on, and this one is served
// again after a wait that doubles from restartMin to restartMax, as long as
// the failures come quickly. db names the database in the log, without
// credentials.
func serveDatabase(ctx context.Context, db string, log *slog.Logger, serve func(context.Context) error) error {
	wait := restartMin
	for {
		started := time.Now()
		err := serve(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("stopped")
		}
		if time.Since(started) > restartMax {
			wait = restartMin
		}
		log.Error("cannot serve the database, trying again", "dsn", db, "err", err, "backoff", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
		wait = min(2*wait, restartMax)
	}
}

// connectNATS connects the agents to the servers of --nats or, without it,
// starts the embedded server and connects to it in-process. It returns the
// stream replicas to use and a function that closes the connection and stops
// the embedded server.
func connectNATS(ctx context.Context, cfg runConfig, log *slog.Logger) (*nats.Conn, jetstream.JetStream, int, func(), error) {
	opts, err := cfg.clientAuth().Options()
	if err != nil {
		return nil, nil, 0, nil, usageError{err}
	}
	urls, stop := cfg.NATS, func() {}
	if urls == "" {
		dir := filepath.Join(cfg.DataDir, "nats")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, 0, nil, fmt.Errorf("create data directory: %w", err)
		}
		srv, err := stream.StartServer(cfg.serverConfig(dir, log))
		if err != nil {
			return nil, nil, 0, nil, err
		}
		stop = srv.Shutdown
		attrs := []any{"listen", cfg.NATSListen, "store", dir}
		if cfg.NATSClusterListen != "" {
			attrs = append(attrs, "server", cfg.NATSServerName, "cluster", cfg.NATSClusterName, "cluster_listen", cfg.NATSClusterListen)
		}
		log.Info("embedded NATS server started", attrs...)
		// In-process: no TCP, no TLS; the server's own credentials.
		auth := stream.ClientAuth{User: cfg.NATSListenUser, Password: cfg.secrets.listenPassword, Token: cfg.secrets.listenToken}
		if opts, err = auth.Options(); err != nil {
			stop()
			return nil, nil, 0, nil, err
		}
		opts = append(opts, nats.InProcessServer(srv))
		urls = "nats://" + cfg.NATSListen
	}
	nc, js, err := stream.Connect(ctx, stream.ConnectOptions{URLs: urls, Name: "pgactive agent", Options: opts}, log)
	if err != nil {
		stop()
		return nil, nil, 0, nil, err
	}
	replicas := cfg.StreamReplicas
	if replicas == 0 {
		replicas = defaultReplicas(cfg, nc)
	}
	if cluster := nc.ConnectedClusterName(); cluster != "" {
		log.Info("stream replicas", "replicas", replicas, "cluster", cluster)
	} else {
		log.Info("stream replicas", "replicas", replicas)
	}
	return nc, js, replicas, func() { nc.Close(); stop() }, nil
}

// defaultReplicas is 3 on a cluster of three or more servers, else 1. The
// embedded server counts its routes, which list every member (nats-server
// sizes its JetStream group the same way); a client counts the servers it
// knows of, given or discovered.
func defaultReplicas(cfg runConfig, nc *nats.Conn) int {
	servers := len(nc.Servers())
	if cfg.NATS == "" {
		servers = len(cfg.routes())
	}
	if nc.ConnectedClusterName() != "" && servers >= 3 {
		return 3
	}
	return 1
}
