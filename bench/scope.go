package bench

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/pgactive-go/pgactive/stream"
)

// scope owns what one scenario run starts, and removes it, last started
// first, when the run ends however it ends.
type scope struct {
	mu       sync.Mutex
	cleanups []func()
}

func (s *scope) add(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

// close runs the clean-ups in reverse order.
func (s *scope) close() {
	s.mu.Lock()
	fs := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// env is what every scenario shares: the PostgreSQL programs, the sizes,
// the command that runs agent processes, where progress and agent logs go.
type env struct {
	binDir   string
	progress io.Writer
	log      *slog.Logger // the agents' logger
	sizes    Sizes

	agentCommand []string // runs an agent process (RunAgentProcess)
	cpuProfile   string   // where the profiled scenario writes its profile
	profiled     string   // the scenario profiled: ScenarioThroughput, ScenarioLatency or ""
}

func (e *env) sayf(format string, args ...any) {
	fmt.Fprintf(e.progress, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// startNATS starts an embedded JetStream server on a free port with its
// store in a temporary directory, and returns its client URL.
func startNATS(sc *scope) (string, error) {
	dir, err := os.MkdirTemp("", "pgactive-bench-nats-")
	if err != nil {
		return "", fmt.Errorf("create NATS store directory: %w", err)
	}
	sc.add(func() { os.RemoveAll(dir) })
	var srv *server.Server
	var lastErr error
	for range 3 { // another process may take the port in between
		port, err := freePort()
		if err != nil {
			return "", err
		}
		srv, lastErr = stream.StartServer(stream.ServerConfig{Listen: fmt.Sprintf("127.0.0.1:%d", port), StoreDir: dir, Name: "pgactive-bench"})
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		return "", lastErr
	}
	sc.add(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv.ClientURL(), nil
}
