package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Sizes are the sizes of the scenarios.
type Sizes struct {
	Clients      int           // load connections of a single origin
	Rows         int           // throughput: inserts, then as many updates
	Rate         float64       // latency: transactions per second
	Duration     time.Duration // latency: how long the rate is held
	Warmup       time.Duration // latency: at the same rate, not measured
	Rounds       int           // latency: rounds, each system once a round, who goes first alternating
	ThreeRows    int           // three nodes: rows each node writes at full speed
	ThreeClients int           // three nodes: load connections per node
	JoinScale    int           // join: pgbench scale (100,000 accounts each, about 15 MiB)
	BigRows      int           // big transaction: rows
}

// Scales are the named sizes: full is what issue 7 asks for, small a quick
// check that everything runs.
var Scales = map[string]Sizes{
	"small": {Clients: 8, Rows: 5_000, Rate: 500, Duration: 5 * time.Second, Warmup: time.Second, Rounds: 1,
		ThreeRows: 2_000, ThreeClients: 4, JoinScale: 2, BigRows: 50_000},
	"full": {Clients: 8, Rows: 200_000, Rate: 1_000, Duration: 30 * time.Second, Warmup: 3 * time.Second, Rounds: 3,
		ThreeRows: 50_000, ThreeClients: 4, JoinScale: 68, BigRows: 1_000_000},
}

// Scenario names, in the order they run.
const (
	ScenarioThroughput = "throughput"
	ScenarioLatency    = "latency"
	ScenarioThree      = "three"
	ScenarioJoin       = "join"
	ScenarioBigTxn     = "bigtxn"
)

// Scenarios lists every scenario, in the order they run.
var Scenarios = []string{ScenarioThroughput, ScenarioLatency, ScenarioThree, ScenarioJoin, ScenarioBigTxn}

// Options configure a benchmark run.
type Options struct {
	Scenarios []string // default: all
	Scale     string   // a key of Scales (default "full")
	// CPUProfile, if set, receives a CPU profile of this process while the
	// throughput scenario runs pgactive-go, or its first latency round when
	// throughput does not run; agent goroutines carry the label
	// node=origin or node=target.
	CPUProfile string
	// AgentCommand runs one agent as a process, configured through the
	// environment variable AgentEnv (see RunAgentProcess). Needed by the
	// big transaction scenario, to measure an agent's own peak memory.
	AgentCommand []string
	// Command is how the run was started, for the report.
	Command string
	// Log receives the agents' warnings and errors (default: discarded).
	Log *slog.Logger
}

// Validate reports options a run cannot start with.
func (o *Options) Validate() error {
	if o.Scale == "" {
		o.Scale = "full"
	}
	if _, ok := Scales[o.Scale]; !ok {
		return fmt.Errorf("unknown scale %q: use small or full", o.Scale)
	}
	if len(o.Scenarios) == 0 {
		o.Scenarios = Scenarios
	}
	for _, s := range o.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("unknown scenario %q: use all or one of %s", s, strings.Join(Scenarios, ", "))
		}
	}
	if slices.Contains(o.Scenarios, ScenarioBigTxn) && len(o.AgentCommand) == 0 {
		return errors.New("the big transaction scenario needs a command that runs an agent process")
	}
	return nil
}

// Run runs the scenarios, writing progress to progress, and returns the
// report. A scenario that fails is recorded in Report.Failures and the
// others still run; Run returns an error only when ctx ends or the run
// cannot start.
func Run(ctx context.Context, o Options, progress io.Writer) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	binDir, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	e := &env{binDir: binDir, progress: progress, log: o.Log, sizes: Scales[o.Scale], agentCommand: o.AgentCommand, cpuProfile: o.CPUProfile}
	rep := &Report{Machine: describeMachine(binDir), Command: o.Command, Scale: o.Scale}
	if o.CPUProfile != "" {
		for _, name := range []string{ScenarioThroughput, ScenarioLatency} {
			if slices.Contains(o.Scenarios, name) {
				e.profiled, rep.Profiled = name, name
				break
			}
		}
	}
	runs := map[string]func(context.Context, *env, *Report) error{
		ScenarioThroughput: runThroughput,
		ScenarioLatency:    runLatency,
		ScenarioThree:      runThree,
		ScenarioJoin:       runJoin,
		ScenarioBigTxn:     runBigTxn,
	}
	load := startLoadSampler(15 * time.Second)
	finish := func() {
		rep.Machine.LoadEnd = loadAverage()
		rep.Machine.LoadMean, rep.Machine.LoadMax = load.stop()
	}
	for _, name := range Scenarios {
		if !slices.Contains(o.Scenarios, name) {
			continue
		}
		start := time.Now()
		e.sayf("scenario %s: start", name)
		err := runs[name](ctx, e, rep)
		if ctx.Err() != nil {
			finish()
			return rep, fmt.Errorf("benchmark interrupted during scenario %s: %w", name, ctx.Err())
		}
		if err != nil {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %v", name, err))
			e.sayf("scenario %s: FAILED after %s: %v", name, since(start), err)
			continue
		}
		e.sayf("scenario %s: done in %s", name, since(start))
	}
	finish()
	return rep, nil
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// bothSystems runs f for native, then for pgactive-go, each on its own
// fresh clusters.
func bothSystems(ctx context.Context, e *env, scenario string, f func(context.Context, system) error) error {
	return bothSystemsIn(ctx, e, scenario, []system{native, ours}, f)
}

// bothSystemsIn runs f for each system in order.
func bothSystemsIn(ctx context.Context, e *env, scenario string, order []system, f func(context.Context, system) error) error {
	for _, sys := range order {
		e.sayf("%s: %s", scenario, sys)
		if err := f(ctx, sys); err != nil {
			return fmt.Errorf("%s: %w", sys, err)
		}
	}
	return nil
}
