package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

// agentReadyTimeout bounds how long an agent may take to set itself up.
const agentReadyTimeout = time.Minute

// agent is a pgactive-go agent running in this process. Its goroutines
// carry the profiler label node=<name>, so that a CPU profile of the
// benchmark can be narrowed to one node (go tool pprof -tagfocus node=target).
type agent struct {
	cfg    node.Config
	a      *node.Agent
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

// startAgent runs an agent for cfg against the NATS server at url and waits
// until it is ready.
func startAgent(ctx context.Context, url string, cfg node.Config, log *slog.Logger) (*agent, error) {
	ag := &agent{cfg: cfg, done: make(chan error, 1)}
	var err error
	pprof.Do(ctx, pprof.Labels("node", cfg.Node), func(ctx context.Context) {
		var js jetstream.JetStream
		ag.nc, js, err = stream.Connect(ctx, stream.ConnectOptions{URLs: url, Name: "pgactive bench " + cfg.Node}, log)
		if err != nil {
			return
		}
		ag.a, err = node.NewAgent(cfg, ag.nc, js, log)
		if err != nil {
			ag.nc.Close()
			return
		}
		runCtx, cancel := context.WithCancel(ctx)
		ag.cancel = cancel
		go func() { ag.done <- ag.a.Run(runCtx) }()
	})
	if err != nil {
		return nil, fmt.Errorf("start agent %s: %w", cfg.Node, err)
	}
	select {
	case <-ag.a.Ready():
		return ag, nil
	case err := <-ag.done:
		ag.done <- err
		ag.stop()
		return nil, fmt.Errorf("agent %s stopped before it was ready: %w", cfg.Node, err)
	case <-ctx.Done():
		ag.stop()
		return nil, ctx.Err()
	case <-time.After(agentReadyTimeout):
		ag.stop()
		return nil, fmt.Errorf("agent %s not ready after %s", cfg.Node, agentReadyTimeout)
	}
}

// stop stops the agent and waits for it.
func (ag *agent) stop() {
	ag.cancel()
	select {
	case <-ag.done:
	case <-time.After(agentReadyTimeout):
	}
	ag.nc.Close()
}

// applying reports whether the agent runs a working apply worker for each
// of origins.
func (ag *agent) applying(origins []string) bool {
	ws := ag.a.Appliers()
	for _, o := range origins {
		w, ok := ws[o]
		if !ok || !w.Status().Running.Load() {
			return false
		}
	}
	return true
}

// agentGroup runs one agent per node of a group.
type agentGroup struct {
	url    string
	log    *slog.Logger
	cfgs   []node.Config
	agents []*agent
}

const benchGroup = "bench"

func newAgentGroup(url string, log *slog.Logger, nodes map[string]string, order []string) *agentGroup {
	g := &agentGroup{url: url, log: log}
	for _, name := range order {
		g.cfgs = append(g.cfgs, node.Config{Group: benchGroup, Node: name, DSN: nodes[name], Replicas: 1})
	}
	return g
}

// start starts every agent and waits until each applies every other node.
func (g *agentGroup) start(ctx context.Context) error {
	for _, cfg := range g.cfgs {
		ag, err := startAgent(ctx, g.url, cfg, g.log)
		if err != nil {
			g.stop()
			return err
		}
		g.agents = append(g.agents, ag)
	}
	err := poll(ctx, agentReadyTimeout, 50*time.Millisecond, "apply workers of every node", func(context.Context) (bool, error) {
		for i, ag := range g.agents {
			others := make([]string, 0, len(g.cfgs)-1)
			for j, c := range g.cfgs {
				if j != i {
					others = append(others, c.Node)
				}
			}
			if !ag.applying(others) {
				return false, fmt.Errorf("node %s does not apply all of %v yet", ag.cfg.Node, others)
			}
		}
		return true, nil
	})
	if err != nil {
		g.stop()
	}
	return err
}

// stop stops every agent, last started first.
func (g *agentGroup) stop() {
	for i := len(g.agents) - 1; i >= 0; i-- {
		g.agents[i].stop()
	}
	g.agents = nil
}

// poll calls cond every interval until it returns true, ctx ends or timeout
// passes; the last error cond returned says what was still missing.
func poll(ctx context.Context, timeout, interval time.Duration, what string, cond func(context.Context) (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			if last == nil {
				last = errors.New("condition still false")
			}
			return fmt.Errorf("timed out after %s waiting for %s: %w", timeout, what, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// delayStages summarises the agents' delay histograms: for each origin's
// capture and each apply worker, the p50 and p99 of the time from the
// origin's commit to that stage.
func (g *agentGroup) delayStages() string {
	q := func(d *stream.Delays) string {
		p50, ok50 := d.Quantile(0.5)
		p99, ok99 := d.Quantile(0.99)
		if !ok50 || !ok99 {
			return "n/a"
		}
		return fmt.Sprintf("p50 ≤ %s, p99 ≤ %s", p50, p99)
	}
	var parts []string
	for _, ag := range g.agents {
		if c := ag.a.Capture(); c != nil && c.Status().Transactions.Load() > 0 {
			parts = append(parts, fmt.Sprintf("committed on %s → captured: %s", ag.cfg.Node, q(&c.Status().Delay)))
		}
	}
	for _, ag := range g.agents {
		for origin, w := range ag.a.Appliers() {
			st := w.Status()
			if st.Transactions.Load() == 0 {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s → delivered to %s's apply: %s", origin, ag.cfg.Node, q(&st.Delivered)),
				fmt.Sprintf("%s → committed on %s: %s", origin, ag.cfg.Node, q(&st.Committed)))
		}
	}
	return strings.Join(parts, "; ")
}
