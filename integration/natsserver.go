package integration

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/pgactive-go/pgactive/stream"
)

const natsReadyTimeout = 30 * time.Second

// NATS is an in-process nats-server with JetStream, started by [StartNATS].
type NATS struct {
	port     int
	storeDir string

	mu  sync.Mutex
	srv *server.Server // nil while shut down
}

// StartNATS starts a nats-server with JetStream on a free port of 127.0.0.1, its store in a temporary
// directory, and shuts it down when the test ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	n := &NATS{port: freePort(t), storeDir: t.TempDir()}
	if err := n.start(); err != nil {
		t.Fatalf("start NATS server: %v", err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

// URL returns the client URL, nats://127.0.0.1:PORT. It stays the same across restarts.
func (n *NATS) URL() string {
	return fmt.Sprintf("nats://127.0.0.1:%d", n.port)
}

// StoreDir returns the JetStream store directory. It stays the same across restarts.
func (n *NATS) StoreDir() string {
	return n.storeDir
}

// Shutdown stops the server and waits until it has stopped; clients see their connection drop.
// It does nothing if the server is not running.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// Restart starts a new server on the same port and store directory (shutting down the running one
// first, if any) and waits until it accepts connections with its JetStream state recovered.
func (n *NATS) Restart(t testing.TB) {
	t.Helper()
	n.Shutdown()
	if err := n.start(); err != nil {
		t.Fatalf("restart NATS server on port %d: %v", n.port, err)
	}
}

// Connect opens a client connection to the server, closed when the test ends. It reconnects
// forever, so it survives a Shutdown followed by a Restart.
func (n *NATS) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to NATS at %s: %v", n.URL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func (n *NATS) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	// The agent's own embedded server, so tests run what users run.
	srv, err := stream.StartServer(stream.ServerConfig{
		Listen:   fmt.Sprintf("127.0.0.1:%d", n.port),
		StoreDir: n.storeDir,
		Name:     fmt.Sprintf("pgactive-test-%d", n.port),
	})
	if err != nil {
		return err
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("server on port %d started without JetStream (store %s)", n.port, n.storeDir)
	}
	n.srv = srv
	return nil
}
