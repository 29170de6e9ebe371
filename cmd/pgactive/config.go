package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// runConfig is the configuration of `pgactive run`, from flags, PGACTIVE_*
// environment variables and an optional YAML file, in that order of precedence.
type runConfig struct {
	DSNs           []string `yaml:"dsn"`
	NATS           string   `yaml:"nats"`
	NATSListen     string   `yaml:"nats_listen"`
	HTTP           string   `yaml:"http"`
	DataDir        string   `yaml:"data_dir"`
	StreamReplicas int      `yaml:"stream_replicas"`
	CreateSchema   bool     `yaml:"create_schema"`
	LogLevel       string   `yaml:"log_level"`
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ", ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func parseRunConfig(args []string, stderr io.Writer) (runConfig, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var dsns stringList
	var file string
	cfg := runConfig{}
	fs.Var(&dsns, "dsn", "libpq connection string or URL of a database to serve (repeatable; env PGACTIVE_DSN)")
	fs.StringVar(&cfg.NATS, "nats", "", "comma-separated NATS seed URLs; empty starts an embedded server (env PGACTIVE_NATS)")
	fs.StringVar(&cfg.NATSListen, "nats-listen", "", "client address of the embedded NATS server (default 127.0.0.1:4222; env PGACTIVE_NATS_LISTEN)")
	fs.StringVar(&cfg.HTTP, "http", "", "address of the HTTP endpoint for /lag, /metrics, /healthz (default 127.0.0.1:8080; env PGACTIVE_HTTP)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the embedded NATS server's store (default ./pgactive-data; env PGACTIVE_DATA_DIR)")
	fs.IntVar(&cfg.StreamReplicas, "stream-replicas", 0, "replicas of the streams and bucket (default 1 on one server, 3 on a cluster of 3+; env PGACTIVE_STREAM_REPLICAS)")
	fs.BoolVar(&cfg.CreateSchema, "create-schema", false, "create the pgactive objects where the extension files cannot be installed (env PGACTIVE_CREATE_SCHEMA)")
	fs.StringVar(&cfg.LogLevel, "log-level", "", "debug, info, warn or error (default info; env PGACTIVE_LOG_LEVEL)")
	fs.StringVar(&file, "config", "", "YAML configuration file (env PGACTIVE_CONFIG)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return runConfig{}, err
		}
		return runConfig{}, usageError{err}
	}
	if fs.NArg() > 0 {
		return runConfig{}, usagef("run: unexpected argument %q", fs.Arg(0))
	}
	cfg.DSNs = dsns
	if file == "" {
		file = os.Getenv("PGACTIVE_CONFIG")
	}
	var fromFile runConfig
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return runConfig{}, usagef("read config file: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&fromFile); err != nil && !errors.Is(err, io.EOF) {
			return runConfig{}, usagef("config file %s: %w (known fields: dsn, nats, nats_listen, http, data_dir, stream_replicas, create_schema, log_level)", file, err)
		}
	}
	if err := cfg.fill(fromFile); err != nil {
		return runConfig{}, err
	}
	return cfg, cfg.validate()
}

// fill takes unset values from the environment, then from the file, then defaults.
func (c *runConfig) fill(file runConfig) error {
	pick := func(dst *string, env, fromFile, def string) {
		switch {
		case *dst != "":
		case os.Getenv(env) != "":
			*dst = os.Getenv(env)
		case fromFile != "":
			*dst = fromFile
		default:
			*dst = def
		}
	}
	if len(c.DSNs) == 0 {
		if v := os.Getenv("PGACTIVE_DSN"); v != "" {
			c.DSNs = []string{v}
		} else {
			c.DSNs = file.DSNs
		}
	}
	pick(&c.NATS, "PGACTIVE_NATS", file.NATS, "")
	pick(&c.NATSListen, "PGACTIVE_NATS_LISTEN", file.NATSListen, "127.0.0.1:4222")
	pick(&c.HTTP, "PGACTIVE_HTTP", file.HTTP, "127.0.0.1:8080")
	pick(&c.DataDir, "PGACTIVE_DATA_DIR", file.DataDir, "pgactive-data")
	pick(&c.LogLevel, "PGACTIVE_LOG_LEVEL", file.LogLevel, "info")
	if c.StreamReplicas == 0 {
		if v := os.Getenv("PGACTIVE_STREAM_REPLICAS"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return usagef("PGACTIVE_STREAM_REPLICAS=%q is not a number", v)
			}
			c.StreamReplicas = n
		} else {
			c.StreamReplicas = file.StreamReplicas
		}
	}
	if !c.CreateSchema {
		c.CreateSchema = file.CreateSchema || os.Getenv("PGACTIVE_CREATE_SCHEMA") == "true"
	}
	return nil
}

func (c *runConfig) validate() error {
	if len(c.DSNs) == 0 {
		return usagef("run: no database given: pass --dsn 'host=... dbname=...' (or set PGACTIVE_DSN, or dsn: in the config file)")
	}
	for _, addr := range []struct{ name, v string }{{"nats-listen", c.NATSListen}, {"http", c.HTTP}} {
		if _, _, err := net.SplitHostPort(addr.v); err != nil {
			return usagef("run: --%s %q is not host:port", addr.name, addr.v)
		}
	}
	if c.StreamReplicas < 0 || c.StreamReplicas > 5 {
		return usagef("run: --stream-replicas %d: use 1 to 5", c.StreamReplicas)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, usagef("log level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

func (c *runConfig) String() string {
	return fmt.Sprintf("%d database(s), nats=%q", len(c.DSNs), c.NATS)
}
