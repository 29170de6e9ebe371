package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/pgactive-go/pgactive/apply"
	"github.com/pgactive-go/pgactive/capture"
	"github.com/pgactive-go/pgactive/monitor"
	"github.com/pgactive-go/pgactive/stream"
)

// Config is what an agent needs to serve one node.
type Config struct {
	Group string
	Node  string
	// DSN of the node, credentials resolved. Never logged.
	DSN string
	// Replicas of the streams and bucket this agent creates (0: 1).
	Replicas int
	// Monitors, when set, lists this agent's lag monitor while the agent
	// runs; the HTTP endpoint of `pgactive run` reads it.
	Monitors *monitor.Set `json:"-"`
	// ApplyRetryMax is the longest wait of an apply worker before it tries
	// again after an error (0: apply.DefaultRetryMax).
	ApplyRetryMax time.Duration
}

// Validate reports a configuration an agent cannot run with.
func (c *Config) Validate() error {
	if c.Group == "" || c.Node == "" || c.DSN == "" {
		return errors.New("node: group, node name and DSN are required")
	}
	return nil
}

var _ monitor.Agent = (*Agent)(nil)

// Agent serves one node: its capture worker and one apply worker per other member.
type Agent struct {
	cfg    Config
	nc     *nats.Conn
	layout *stream.Layout
	base   *slog.Logger // for workers, which add their own node attribute
	log    *slog.Logger
	ready  chan struct{}

	mu       sync.Mutex
	identity Identity
	capture  *capture.Capturer
	appliers map[string]*applier     // by origin node name
	members  map[string]apply.NodeID // by node name, as last seen
	paused   atomic.Bool
	run      func(Member) error // starts an apply worker again (set once Run started one)

	conflictSettings atomic.Pointer[ConflictSettings]
}

// SetPaused holds (true) or resumes (false) every apply worker of the node
// between transactions.
func (a *Agent) SetPaused(p bool) { a.paused.Store(p) }

type applier struct {
	w      *apply.Worker
	key    string // the origin's member key
	cancel context.CancelFunc
	done   chan struct{} // closed when the worker returned
}

// ErrDetached is returned by Run when this node was detached from its group.
var ErrDetached = errors.New("node was detached from its group")

// NewAgent returns an agent for cfg that talks to NATS through nc.
func NewAgent(cfg Config, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Agent{
		cfg:      cfg,
		nc:       nc,
		layout:   &stream.Layout{JS: js, Group: cfg.Group, Replicas: cfg.Replicas},
		base:     log.With("group", cfg.Group),
		log:      log.With("node", cfg.Node, "group", cfg.Group),
		ready:    make(chan struct{}),
		appliers: map[string]*applier{},
		members:  map[string]apply.NodeID{},
	}, nil
}

// Ready is closed once the node is registered, its slot exists and consumers
// link it with every known member: from then on its writes reach them.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Identity is the node's identity, known once Ready is closed.
func (a *Agent) Identity() Identity {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.identity
}

// Capture returns the capture worker, once Ready is closed.
func (a *Agent) Capture() *capture.Capturer {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.capture
}

// Appliers returns the running apply workers by origin node name.
func (a *Agent) Appliers() map[string]*apply.Worker {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]*apply.Worker, len(a.appliers))
	for k, v := range a.appliers {
		out[k] = v.w
	}
	return out
}

// Run sets the node up and runs its workers until ctx ends. It returns an
// error only for failures that retrying cannot mend (bad settings).
func (a *Agent) Run(ctx context.Context) error {
	self, kv, err := a.setup(ctx)
	if err != nil {
		return err
	}
	mon, err := monitor.New(monitor.Config{Group: a.cfg.Group, Node: a.cfg.Node, DSN: a.cfg.DSN, JS: a.layout.JS, Agent: a}, a.base)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return mon.Run(ctx) })
	a.cfg.Monitors.Add(mon)
	defer a.cfg.Monitors.Remove(mon)
	g.Go(func() error { return a.capture.Run(ctx) })
	g.Go(func() error { return a.watchMembers(ctx, g, kv, self) })
	g.Go(func() error { return a.maintain(ctx) })
	close(a.ready)
	a.log.Info("agent ready", "sysid", self.SysID)
	return g.Wait()
}

func (a *Agent) setup(ctx context.Context) (Member, jetstream.KeyValue, error) {
	conn, err := Connect(ctx, a.cfg.DSN, a.cfg.Node)
	if err != nil {
		return Member{}, nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	id, err := Check(ctx, conn, a.cfg.Node)
	if err != nil {
		return Member{}, nil, err
	}
	if err := CheckReplication(ctx, conn, a.cfg.Node); err != nil {
		return Member{}, nil, err
	}
	a.mu.Lock()
	a.identity = id
	a.mu.Unlock()
	if _, err := a.loadSettings(ctx, conn); err != nil {
		return Member{}, nil, err
	}

	kv, err := a.layout.EnsureBucket(ctx)
	if err != nil {
		return Member{}, nil, err
	}
	if e, err := kv.Get(ctx, stream.NodeKey(a.cfg.Node)); err == nil {
		if m, err := decodeMember(e.Value()); err == nil && m.Status == StateDetached {
			return Member{}, nil, fmt.Errorf("node %q: %w", a.cfg.Node, ErrDetached)
		} else if err == nil && (m.SysID != id.SysID || m.DBOID != id.DBOID) {
			return Member{}, nil, fmt.Errorf("node name %q is already used by another database (sysid %d, database %q) in group %q: choose another node name", a.cfg.Node, m.SysID, m.DBName, a.cfg.Group)
		}
	}
	members, err := Members(ctx, kv)
	if err != nil {
		return Member{}, nil, err
	}
	if err := checkNotMember(members, a.cfg.Node, a.cfg.Group, id); err != nil {
		return Member{}, nil, err
	}
	if _, err := a.layout.EnsureStream(ctx, a.cfg.Node); err != nil {
		return Member{}, nil, err
	}
	self := Member{Name: a.cfg.Node, Group: a.cfg.Group, SysID: id.SysID, Timeline: id.Timeline,
		DBOID: id.DBOID, DBName: id.DBName, Status: StateReady, DSN: RedactDSN(a.cfg.DSN), SeqID: seqID(members, a.cfg.Node)}
	if err := PutMember(ctx, kv, self); err != nil {
		return Member{}, nil, err
	}
	for _, m := range members {
		if err := a.link(ctx, self, m); err != nil {
			return Member{}, nil, err
		}
	}
	if err := capture.EnsurePublication(ctx, conn); err != nil {
		return Member{}, nil, err
	}
	slot := capture.SlotName(id.DBOID, id.SysID)
	if _, err := capture.EnsureSlot(ctx, conn, slot); err != nil {
		return Member{}, nil, err
	}
	c, err := capture.New(capture.Config{Group: a.cfg.Group, Node: a.cfg.Node, SysID: id.SysID, DSN: a.cfg.DSN, Slot: slot,
		ChunkSize: chunkSize(a.nc), MaxPayload: int(a.nc.MaxPayload())}, a.layout.JS, a.base)
	if err != nil {
		return Member{}, nil, err
	}
	a.mu.Lock()
	a.capture = c
	a.mu.Unlock()
	return self, kv, nil
}

// chunkSize keeps each message well under the server's max payload.
func chunkSize(nc *nats.Conn) int {
	return int(min(nc.MaxPayload()/4, 256<<10))
}

// link creates the consumers between self and m, both ways.
func (a *Agent) link(ctx context.Context, self, m Member) error {
	if m.Name == self.Name || m.Status == StateDetached {
		return nil
	}
	if _, err := a.layout.EnsureConsumer(ctx, self.Name, m.Name); err != nil {
		return err
	}
	if _, err := a.layout.EnsureStream(ctx, m.Name); err != nil {
		return err
	}
	_, err := a.layout.EnsureConsumer(ctx, m.Name, self.Name)
	return err
}

// watchMembers starts an apply worker for every other member, as members appear.
func (a *Agent) watchMembers(ctx context.Context, g *errgroup.Group, kv jetstream.KeyValue, self Member) error {
	for {
		err := a.watchOnce(ctx, g, kv, self)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrDetached) {
			return err
		}
		a.log.Warn("membership watch ended, restarting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (a *Agent) watchOnce(ctx context.Context, g *errgroup.Group, kv jetstream.KeyValue, self Member) error {
	w, err := kv.Watch(ctx, "nodes.>")
	if err != nil {
		return fmt.Errorf("watch members: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e == nil {
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				a.stopApplyKey(e.Key())
				continue
			}
			m, err := decodeMember(e.Value())
			if err != nil {
				a.log.Error("ignored a member record that cannot be read", "key", e.Key(), "err", err)
				continue
			}
			if err := a.memberChanged(ctx, g, self, m); err != nil {
				return err
			}
		}
	}
}

// memberChanged starts or stops work as a member appears, changes or leaves.
func (a *Agent) memberChanged(ctx context.Context, g *errgroup.Group, self, m Member) error {
	a.mu.Lock()
	a.members[m.Name] = apply.NodeID{SysID: m.SysID, Timeline: m.Timeline, DBOID: m.DBOID}
	a.mu.Unlock()
	if m.Name == self.Name {
		if m.Status == StateDetached {
			return fmt.Errorf("node %q: %w", self.Name, ErrDetached)
		}
		return nil
	}
	if m.Status == StateDetached {
		a.stopApply(m.Name)
		// Nobody applies the detached node's stream any more, and it
		// applies nobody's: drop both consumers so no stream keeps
		// messages for it.
		if err := a.layout.DeleteConsumer(ctx, m.Name, self.Name); err != nil {
			return err
		}
		return a.layout.DeleteConsumer(ctx, self.Name, m.Name)
	}
	return a.startApply(ctx, g, self, m)
}

func (a *Agent) startApply(ctx context.Context, g *errgroup.Group, self, m Member) error {
	a.mu.Lock()
	_, running := a.appliers[m.Name]
	a.mu.Unlock()
	if running {
		return nil
	}
	if err := a.link(ctx, self, m); err != nil {
		return err
	}
	w, err := apply.New(apply.Config{Group: a.cfg.Group, Origin: m.Name, OriginSysID: m.SysID, OriginDBOID: m.DBOID, Target: self.Name,
		TargetSysID: self.SysID, TargetTimeline: self.Timeline, TargetDBOID: self.DBOID,
		DSN: a.cfg.DSN, Members: a.memberIDs, Paused: a.paused.Load,
		ConflictLogging: a.conflictLogging, RetryMax: a.cfg.ApplyRetryMax}, a.layout, a.nc, a.base)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	ap := &applier{w: w, key: stream.NodeKey(m.Name), cancel: cancel, done: make(chan struct{})}
	a.mu.Lock()
	a.appliers[m.Name] = ap
	a.run = func(restart Member) error { return a.startApply(ctx, g, self, restart) }
	a.mu.Unlock()
	g.Go(func() error {
		defer close(ap.done)
		return w.Run(wctx)
	})
	a.log.Info("apply worker started", "origin", m.Name)
	return nil
}

// memberIDs returns the sysids of the members seen so far.
func (a *Agent) memberIDs() map[string]apply.NodeID {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]apply.NodeID, len(a.members))
	for k, v := range a.members {
		out[k] = v
	}
	return out
}

func (a *Agent) stopApply(origin string) <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	ap, ok := a.appliers[origin]
	if !ok {
		done := make(chan struct{})
		close(done)
		return done
	}
	ap.cancel()
	delete(a.appliers, origin)
	a.log.Info("apply worker stopped", "origin", origin)
	return ap.done
}

// SkipChanges makes this node skip every transaction of member m up to and
// including the one that committed at upto (pgactive_skip_changes): the
// member's apply worker stops, its replication origin moves to upto, and
// the worker starts again from there.
func (a *Agent) SkipChanges(ctx context.Context, m Member, upto string) error {
	a.mu.Lock()
	restart, dboid := a.run, a.identity.DBOID
	a.mu.Unlock()
	select {
	case <-a.stopApply(m.Name):
	case <-ctx.Done():
		return ctx.Err()
	}
	conn, err := Connect(ctx, a.cfg.DSN, a.cfg.Node)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	origin := apply.OriginName(dboid, m.Name)
	_, err = conn.Exec(ctx, `SELECT pg_replication_origin_advance($1, $2::pg_lsn)
		WHERE pg_replication_origin_oid($1) IS NOT NULL
		  AND coalesce(pg_replication_origin_progress($1, true), '0/0') < $2::pg_lsn`, origin, upto)
	if err != nil {
		err = fmt.Errorf("advance replication origin %s to %s: %w", origin, upto, err)
	}
	if restart == nil {
		return err
	}
	return errors.Join(err, restart(m))
}

func (a *Agent) stopApplyKey(key string) {
	a.mu.Lock()
	var origin string
	for name, ap := range a.appliers {
		if ap.key == key {
			origin = name
		}
	}
	a.mu.Unlock()
	if origin != "" {
		a.stopApply(origin)
	}
}
