package stream

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerConfig configures the embedded NATS server.
type ServerConfig struct {
	// Listen is the client address, host:port (default 127.0.0.1:4222).
	Listen string
	// StoreDir holds JetStream's files.
	StoreDir string
	// Name of the server (default "pgactive").
	Name string
}

// MaxPayload is the embedded server's largest message: rows larger than this
// once encoded cannot be replicated.
const MaxPayload = 8 << 20

// StartServer starts an in-process NATS server with JetStream and waits until
// it accepts clients.
func StartServer(cfg ServerConfig) (*server.Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:4222"
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded NATS: a store directory is required (--data-dir)")
	}
	if cfg.Name == "" {
		cfg.Name = "pgactive"
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: listen address %q is not host:port: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: port %q is not a number: %w", portStr, err)
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		MaxPayload: MaxPayload,
		NoLog:      true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS: not ready on %s within 10s (is the port in use?)", cfg.Listen)
	}
	return s, nil
}
