package integration

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

// Agent is an agent running in the test process, started by [StartAgent].
type Agent struct {
	*node.Agent
	cancel context.CancelFunc
	done   chan error
}

// TestLogger is the logger agents started by the harness use: warnings and
// errors go to the test output stream.
func TestLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("PGACTIVE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// ConnectNATS opens an agent-style connection (reconnecting forever) to url,
// closed when the test ends.
func ConnectNATS(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, js, err := stream.Connect(ctx, stream.ConnectOptions{URLs: url, Name: "pgactive test"}, TestLogger())
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// StartAgent runs an agent for cfg in the test process, waits until it is
// ready and stops it when the test ends.
func StartAgent(t testing.TB, natsURL string, cfg node.Config) *Agent {
	t.Helper()
	return StartAgentWith(t, stream.ConnectOptions{URLs: natsURL, Name: "pgactive test"}, cfg, TestLogger())
}

// Stop stops the agent and waits for it, returning what Run returned.
func (a *Agent) Stop() {
	a.cancel()
	select {
	case err := <-a.done:
		a.done <- err
	case <-time.After(60 * time.Second):
	}
}

// WaitAppliers waits until agent a runs an apply worker for each named origin.
func WaitAppliers(t testing.TB, a *Agent, origins ...string) {
	t.Helper()
	WaitFor(t, 30*time.Second, "apply workers started", func() (bool, error) {
		ws := a.Appliers()
		for _, o := range origins {
			w, ok := ws[o]
			if !ok || !w.Status().Running.Load() {
				return false, nil
			}
		}
		return true, nil
	})
}

// Controller is a `pgactive run` agent for one database, running in the
// test process: it waits for the extension and serves the SQL functions.
type Controller struct {
	cancel context.CancelFunc
	done   chan error
}

// StartController runs the controller of database dsn until the test ends
// (or Stop). It returns at once: the controller attaches by itself.
func StartController(t testing.TB, natsURL, dsn string) *Controller {
	t.Helper()
	return StartControllerWith(t, stream.ConnectOptions{URLs: natsURL, Name: "pgactive test"},
		node.ControllerConfig{DSN: dsn, Replicas: 1, Log: TestLogger()})
}

// StartControllerWith runs a controller for cfg like [StartController],
// connecting to NATS with conn (seed URLs, authentication, TLS). cfg.NC and
// cfg.JS are set here; cfg.Log defaults to [TestLogger].
func StartControllerWith(t testing.TB, conn stream.ConnectOptions, cfg node.ControllerConfig) *Controller {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = TestLogger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, js, err := stream.Connect(ctx, conn, cfg.Log)
	if err != nil {
		t.Fatalf("connect a controller to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	cfg.NC, cfg.JS = nc, js
	rctx, rcancel := context.WithCancel(context.Background())
	c := &Controller{cancel: rcancel, done: make(chan error, 1)}
	ctl := node.NewController(cfg)
	go func() { c.done <- ctl.Run(rctx) }()
	t.Cleanup(c.Stop)
	return c
}

// Stop stops the controller and its agent.
func (c *Controller) Stop() {
	c.cancel()
	select {
	case err := <-c.done:
		c.done <- err
	case <-time.After(time.Minute):
	}
}

// pgxConn keeps test signatures short.
type pgxConn = pgx.Conn
