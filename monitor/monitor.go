package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/apply"
	"github.com/pgactive-go/pgactive/capture"
	"github.com/pgactive-go/pgactive/stream"
)

// Agent is the part of a node agent the monitor reads: its workers and their
// live statuses. *node.Agent satisfies it.
type Agent interface {
	// Capture returns the capture worker (nil until the agent is ready).
	Capture() *capture.Capturer
	// Appliers returns the apply workers by origin node name.
	Appliers() map[string]*apply.Worker
}

// Defaults of Config.
const (
	DefaultInterval   = 2 * time.Second
	DefaultStaleAfter = 30 * time.Second
)

// Config is what the monitor of one agent needs.
type Config struct {
	Group string
	Node  string
	// DSN of the node, credentials resolved. Never logged, never published.
	DSN   string
	JS    jetstream.JetStream
	Agent Agent
	// Interval between two rounds (default 2 s).
	Interval time.Duration
	// StaleAfter is the age past which a report no longer counts: a path
	// whose row or target report is older is not active (default 30 s, as
	// pgactive_get_replication_lag_info() has it).
	StaleAfter time.Duration
}

// Validate reports a configuration the monitor cannot run with.
func (c *Config) Validate() error {
	switch {
	case c.Group == "" || c.Node == "":
		return errors.New("monitor: group and node name are required")
	case c.DSN == "":
		return errors.New("monitor: DSN is required")
	case c.JS == nil || c.Agent == nil:
		return errors.New("monitor: JetStream and agent are required")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = DefaultStaleAfter
	}
}

// Monitor reports the lag of one node's outgoing paths and the state of its
// workers, and mirrors the group's lag rows into the node's database.
type Monitor struct {
	cfg Config
	log *slog.Logger

	// Owned by the Run goroutine.
	conn    *pgx.Conn
	kv      jetstream.KeyValue
	st      jetstream.Stream
	last    origin    // origin state of the last round, reused while the database is unreachable
	pubLSN  LSN       // highest commit LSN seen published
	pubTime time.Time // its commit time
	// storedLSN is the newest transaction seen stored in the stream (or
	// applied by a target), storedSeq the sequence of the stream's last
	// message (0: the stream is empty).
	storedLSN LSN
	storedSeq uint64
	failing   bool
	lastWarn  time.Time

	mu        sync.Mutex
	cluster   []Row // the group's rows as last read
	clusterAt time.Time
	outgoing  []Row        // this node's rows as last put
	applied   []ApplyState // this node's apply reports as last put
	wal       *WALState
	ready     bool
}

// New returns the monitor of cfg's agent; Run starts it.
func New(cfg Config, log *slog.Logger) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Monitor{cfg: cfg, log: log.With("node", cfg.Node)}, nil
}

// Group is the monitored node's group.
func (m *Monitor) Group() string { return m.cfg.Group }

// Node is the monitored node's name.
func (m *Monitor) Node() string { return m.cfg.Node }

// Agent is the monitored agent.
func (m *Monitor) Agent() Agent { return m.cfg.Agent }

// Ready reports whether the monitor has completed a round: the agent is up
// and its rows are published.
func (m *Monitor) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready
}

// Rows returns the group's lag rows as last read from the bucket, with
// active false where a row is stale.
func (m *Monitor) Rows() []Row {
	rows, _ := m.snapshot()
	return shown(rows, time.Now(), m.cfg.StaleAfter)
}

func (m *Monitor) snapshot() ([]Row, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cluster, m.clusterAt
}

// Run reports every Interval until ctx ends, then marks this node's paths
// and apply workers as stopped. It returns nil when ctx is cancelled.
func (m *Monitor) Run(ctx context.Context) error {
	defer m.closeConn()
	defer m.farewell()
	tick := time.NewTicker(m.cfg.Interval)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, max(5*m.cfg.Interval, 10*time.Second))
		err := m.round(rctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		m.report(err)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// report logs a failing round at most once a minute, and the recovery.
func (m *Monitor) report(err error) {
	switch {
	case err == nil && m.failing:
		m.failing = false
		m.log.Info("lag monitoring recovered")
	case err != nil && (!m.failing || time.Since(m.lastWarn) >= time.Minute):
		m.failing, m.lastWarn = true, time.Now()
		m.log.Warn("lag monitoring round failed", "err", err)
	}
}

// round publishes this node's state and rows, then mirrors the group's rows
// into the local tables.
func (m *Monitor) round(ctx context.Context) error {
	kv, err := m.bucket(ctx)
	if err != nil {
		return err
	}
	snap, err := readBucket(ctx, kv)
	if err != nil {
		return err
	}
	self, ok := snap.members[m.cfg.Node]
	if !ok {
		return fmt.Errorf("node %q has no member record in bucket %s yet", m.cfg.Node, stream.BucketName(m.cfg.Group))
	}
	var errs []error
	o, tables, err := m.readOrigin(ctx, self)
	errs = append(errs, err)
	errs = append(errs, m.readPublished(ctx, &o))
	m.learnPublished(&o, snap)
	now := time.Now()
	applied := m.applyStates(now)
	for _, a := range applied {
		snap.apply[pathKey{a.Origin, a.Target}] = a
	}
	errs = append(errs, m.putApply(ctx, kv, applied))
	wal := walState(o, now)
	errs = append(errs, putJSON(ctx, kv, WALKey(m.cfg.Node), wal))
	rows, err := m.outgoingRows(ctx, o, snap, now)
	errs = append(errs, err)
	for _, r := range rows {
		snap.lag[pathKey{r.OriginNode, r.TargetNode}] = r
		errs = append(errs, putJSON(ctx, kv, stream.LagKey(r.OriginNode, r.TargetNode), r))
	}
	errs = append(errs, m.purge(ctx, kv, snap, rows))
	cluster := snap.rows()
	m.mu.Lock()
	m.cluster, m.clusterAt, m.outgoing, m.applied, m.wal, m.ready = cluster, now, rows, applied, &wal, true
	m.mu.Unlock()
	if tables.lag || tables.stats {
		errs = append(errs, m.writeTables(ctx, tables, shown(cluster, now, m.cfg.StaleAfter), snap.members))
	}
	return errors.Join(errs...)
}

// outgoingRows computes the row of every path from this node to another member.
func (m *Monitor) outgoingRows(ctx context.Context, o origin, snap *bucketSnapshot, now time.Time) ([]Row, error) {
	st, err := m.stream(ctx)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	var rows []Row
	for _, t := range snap.targets(m.cfg.Node) {
		var b *backlog
		if st != nil {
			b, err = consumerBacklog(ctx, st, m.cfg.Group, m.cfg.Node, t.Node)
			if err != nil {
				errs = append(errs, err)
				m.st = nil // find the stream again next round
			}
		}
		var a *ApplyState
		if s, ok := snap.apply[pathKey{m.cfg.Node, t.Node}]; ok {
			a = &s
		}
		rows = append(rows, pathRow(o, t, a, b, now, m.cfg.StaleAfter))
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].TargetNode < rows[j].TargetNode })
	return rows, errors.Join(errs...)
}

// learnPublished takes the last published transaction from what targets
// applied when the stream no longer holds it: interest retention removes a
// message once every target applied it, often before a round reads it.
func (m *Monitor) learnPublished(o *origin, snap *bucketSnapshot) {
	for k, a := range snap.apply {
		if k.origin != m.cfg.Node {
			continue
		}
		m.storedLSN = max(m.storedLSN, a.AppliedLSN)
		if a.AppliedCommitTime != nil && a.AppliedLSN >= m.pubLSN && (a.AppliedLSN > m.pubLSN || m.pubTime.IsZero()) {
			m.pubLSN, m.pubTime = a.AppliedLSN, *a.AppliedCommitTime
		}
	}
	o.Published, o.PublishedTime, o.LastStored = m.pubLSN, m.pubTime, m.storedLSN
}

// applyStates reports this node's apply workers.
func (m *Monitor) applyStates(now time.Time) []ApplyState {
	var out []ApplyState
	for name, w := range m.cfg.Agent.Appliers() {
		st := w.Status()
		a := ApplyState{
			Origin:       name,
			Target:       m.cfg.Node,
			Running:      st.Running.Load(),
			AppliedLSN:   LSN(st.Applied.Load()),
			FlushedLSN:   LSN(st.Flushed.Load()),
			Transactions: st.Transactions.Load(),
			Changes:      st.Changes.Load(),
			Errors:       st.Errors.Load(),
			Parked:       st.Parked.Load(),
			LastError:    st.LastError(),
			UpdatedAt:    now.UTC(),
		}
		if us := st.AppliedTime.Load(); us != 0 {
			t := time.UnixMicro(us).UTC()
			a.AppliedCommitTime = &t
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Origin < out[j].Origin })
	return out
}

func walState(o origin, now time.Time) WALState {
	w := WALState{
		Node: o.Node, SysID: strconv.FormatUint(o.SysID, 10), SlotName: o.Slot,
		CurrentLSN: o.Current, RestartLSN: o.Restart, ConfirmedFlushLSN: o.Confirmed,
		SlotActive: o.SlotActive, ActivePID: o.ActivePID, StoredLSN: o.Stored,
		PublishedLSN: o.Published, CaptureRunning: o.CaptureRunning, UpdatedAt: now.UTC(),
	}
	if !o.PublishedTime.IsZero() {
		t := o.PublishedTime.UTC()
		w.PublishedCommitTime = &t
	}
	return w
}

// farewell marks this node's paths and apply workers as stopped, so readers
// need not wait StaleAfter to see it.
func (m *Monitor) farewell() {
	if m.kv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := time.Now().UTC()
	m.mu.Lock()
	rows, applied, wal := m.outgoing, m.applied, m.wal
	m.mu.Unlock()
	for _, a := range applied {
		a.Running, a.UpdatedAt = false, now
		_ = putJSON(ctx, m.kv, ApplyKey(a.Origin, a.Target), a)
	}
	for _, r := range rows {
		r.Active, r.ActivePID, r.UpdatedAt = false, nil, now
		_ = putJSON(ctx, m.kv, stream.LagKey(r.OriginNode, r.TargetNode), r)
	}
	if wal != nil {
		w := *wal
		w.CaptureRunning, w.SlotActive, w.ActivePID, w.UpdatedAt = false, false, nil, now
		_ = putJSON(ctx, m.kv, WALKey(m.cfg.Node), w)
	}
}

// bucket opens the group's key-value bucket once.
func (m *Monitor) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	if m.kv != nil {
		return m.kv, nil
	}
	name := stream.BucketName(m.cfg.Group)
	kv, err := m.cfg.JS.KeyValue(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("open key-value bucket %s: %w", name, err)
	}
	m.kv = kv
	return kv, nil
}

// stream finds this node's stream once.
func (m *Monitor) stream(ctx context.Context) (jetstream.Stream, error) {
	if m.st != nil {
		return m.st, nil
	}
	name := stream.StreamName(m.cfg.Group, m.cfg.Node)
	st, err := m.cfg.JS.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("find stream %s: %w", name, err)
	}
	m.st = st
	return st, nil
}
