package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

// agentEnv carries the configuration of an agent process started by
// [StartAgentProcess]; the test binary re-executed with it runs the agent.
const agentEnv = "PGACTIVE_TEST_AGENT"

type processConfig struct {
	NATS  string      `json:"nats"`
	Agent node.Config `json:"agent"`
}

// AgentMain runs an agent when the test binary was started by
// [StartAgentProcess] and reports whether it did. Call it first in TestMain:
//
//	func TestMain(m *testing.M) {
//		if integration.AgentMain() {
//			return
//		}
//		os.Exit(m.Run())
//	}
func AgentMain() bool {
	raw := os.Getenv(agentEnv)
	if raw == "" {
		return false
	}
	if err := runAgentProcess(raw); err != nil {
		fmt.Fprintln(os.Stderr, "agent process:", err)
		os.Exit(1)
	}
	return true
}

func runAgentProcess(raw string) error {
	var cfg processConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fmt.Errorf("decode %s: %w", agentEnv, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := TestLogger()
	nc, js, err := stream.Connect(ctx, stream.ConnectOptions{URLs: cfg.NATS, Name: "pgactive " + cfg.Agent.Node}, log)
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
		fmt.Println("READY")
	case err := <-done:
		return err
	}
	return <-done
}

// AgentProcess is an agent running as a separate process (the test binary
// re-executed), so that tests can kill it.
type AgentProcess struct {
	cfg     processConfig
	cmd     *exec.Cmd
	logPath string
}

// StartAgentProcess starts an agent process for cfg and waits until it is ready.
func StartAgentProcess(t testing.TB, natsURL string, cfg node.Config) *AgentProcess {
	t.Helper()
	p := &AgentProcess{cfg: processConfig{NATS: natsURL, Agent: cfg}}
	p.logPath = filepath.Join(t.TempDir(), "agent-"+cfg.Node+".log")
	p.Start(t)
	t.Cleanup(func() {
		p.Kill(t)
		if t.Failed() {
			if b, err := os.ReadFile(p.logPath); err == nil {
				t.Logf("agent %s log:\n%s", cfg.Node, tail(string(b), 60))
			}
		}
	})
	return p
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// Start starts the process (again) and waits until the agent is ready.
func (p *AgentProcess) Start(t testing.TB) {
	t.Helper()
	raw, err := json.Marshal(p.cfg)
	if err != nil {
		t.Fatalf("encode agent config: %v", err)
	}
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatalf("open agent log: %v", err)
	}
	defer logFile.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), agentEnv+"="+string(raw))
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("agent stdout: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start agent process: %v", err)
	}
	p.cmd = cmd
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "READY" {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			_ = cmd.Wait()
			b, _ := os.ReadFile(p.logPath)
			t.Fatalf("agent process %s exited before it was ready:\n%s", p.cfg.Agent.Node, tail(string(b), 30))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("agent process %s not ready after 60s", p.cfg.Agent.Node)
	}
}

// Kill kills the process with SIGKILL and waits for it to exit.
func (p *AgentProcess) Kill(t testing.TB) {
	t.Helper()
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// PeakRSS returns the process's peak resident set size in bytes (VmHWM).
func (p *AgentProcess) PeakRSS() (int64, error) {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0, fmt.Errorf("agent process not running")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc status")
}
