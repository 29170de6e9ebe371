package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

// AgentEnv is the environment variable that configures an agent process:
// JSON of the NATS URL and the node.Config. The configuration travels in
// the environment rather than on the command line, where its DSN's
// password would show in the process list.
const AgentEnv = "PGACTIVE_BENCH_AGENT"

// agentReadyLine is what an agent process prints once its agent is ready.
const agentReadyLine = "READY"

type agentProcessConfig struct {
	NATS  string      `json:"nats"`
	Agent node.Config `json:"agent"`
}

// RunAgentProcess runs the agent configured by AgentEnv until ctx ends or
// SIGTERM, printing agentReadyLine to stdout once it is ready. It is what
// Options.AgentCommand runs.
func RunAgentProcess(ctx context.Context, stdout io.Writer, log *slog.Logger) error {
	raw := os.Getenv(AgentEnv)
	if raw == "" {
		return fmt.Errorf("agent process: %s is not set", AgentEnv)
	}
	var cfg agentProcessConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fmt.Errorf("agent process: decode %s: %w", AgentEnv, err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM)
	defer stop()
	nc, js, err := stream.Connect(ctx, stream.ConnectOptions{URLs: cfg.NATS, Name: "pgactive bench " + cfg.Agent.Node}, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	a, err := node.NewAgent(cfg.Agent, nc, js, log)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
		fmt.Fprintln(stdout, agentReadyLine)
	case err := <-done:
		return err
	}
	return <-done
}

// agentProcess is an agent running as a child process.
type agentProcess struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// startAgentProcess runs command as an agent for cfg and waits until it is
// ready; sc stops it.
func startAgentProcess(ctx context.Context, sc *scope, command []string, url string, cfg node.Config, stderr io.Writer) (*agentProcess, error) {
	raw, err := json.Marshal(agentProcessConfig{NATS: url, Agent: cfg})
	if err != nil {
		return nil, fmt.Errorf("encode agent configuration: %w", err)
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = append(os.Environ(), AgentEnv+"="+string(raw))
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("agent process %s: %w", cfg.Node, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent process %s: %w", cfg.Node, err)
	}
	p := &agentProcess{name: cfg.Node, cmd: cmd, done: make(chan struct{})}
	ready := make(chan bool, 2) // never blocks: at most one true, then one false
	go func() {
		sc := bufio.NewScanner(out)
		said := false
		for sc.Scan() {
			if sc.Text() == agentReadyLine && !said {
				said = true
				ready <- true
			}
		}
		ready <- false
		_ = cmd.Wait()
		close(p.done)
	}()
	sc.add(p.stop)
	select {
	case ok := <-ready:
		if !ok {
			return nil, fmt.Errorf("agent process %s exited before it was ready (its errors are above)", cfg.Node)
		}
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(agentReadyTimeout):
		return nil, fmt.Errorf("agent process %s not ready after %s", cfg.Node, agentReadyTimeout)
	}
}

// peakRSS is the process's peak resident set size so far, in bytes.
func (p *agentProcess) peakRSS() (int64, error) {
	select {
	case <-p.done:
		return 0, errors.New("agent process " + p.name + " has exited")
	default:
	}
	return peakRSS(p.cmd.Process.Pid)
}

// stop asks the agent to stop, and kills it if it has not after a while.
func (p *agentProcess) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
