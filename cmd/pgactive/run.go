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

	"github.com/jackc/pgx/v5"
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

	urls := cfg.NATS
	if urls == "" {
		dir := filepath.Join(cfg.DataDir, "nats")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create data directory: %w", err)
		}
		srv, err := stream.StartServer(stream.ServerConfig{Listen: cfg.NATSListen, StoreDir: dir})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		urls = srv.ClientURL()
		log.Info("embedded NATS server started", "listen", cfg.NATSListen, "store", dir)
	}
	nc, js, err := stream.Connect(ctx, stream.ConnectOptions{URLs: urls, Name: "pgactive agent"}, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	replicas := cfg.StreamReplicas
	if replicas == 0 {
		replicas = 1
		if len(nc.DiscoveredServers())+1 >= 3 {
			replicas = 3
		}
	}

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
		c := node.NewController(node.ControllerConfig{DSN: dsn, NC: nc, JS: js, Replicas: replicas,
			CreateSchema: createSchema, Monitors: monitors, Log: log})
		g.Go(func() error { return c.Run(gctx) })
	}
	return g.Wait()
}
