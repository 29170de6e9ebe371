package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/conflicts"
	"github.com/pgactive-go/pgactive/stream"
)

// Config is what one apply worker (one origin → this node) needs.
type Config struct {
	Group       string
	Origin      string // origin node name
	OriginSysID uint64
	OriginDBOID uint32 // the origin's database OID
	Target      string // this node's name
	TargetSysID uint64 // this node's sysid
	TargetDBOID uint32 // this node's database OID
	// TargetTimeline completes this node's identity in conflict history
	// rows (optional).
	TargetTimeline uint32
	// Members returns the group's nodes by name, to tell which node last
	// wrote a local row (optional).
	Members func() map[string]NodeID
	// DSN of this node, credentials resolved. Never logged.
	DSN string
	// Paused, when set and true, holds apply between transactions
	// (pgactive_apply_pause()).
	Paused func() bool
	// ConflictLogging, when set, says whether conflicts are written to
	// pgactive_conflict_history and whether with their tuples (default: both).
	ConflictLogging func() (log, tuples bool)
	// RetryMax is the longest wait before applying again after an error
	// (default DefaultRetryMax). The wait starts at RetryMin and doubles
	// while attempts fail without applying anything.
	RetryMax time.Duration
}

// Retry waits after an apply error.
const (
	RetryMin        = 500 * time.Millisecond
	DefaultRetryMax = 30 * time.Second
)

// Validate reports a configuration apply cannot run with.
func (c *Config) Validate() error {
	switch {
	case c.Group == "" || c.Origin == "" || c.Target == "":
		return errors.New("apply: group, origin and target names are required")
	case c.OriginSysID == 0 || c.TargetSysID == 0:
		return errors.New("apply: origin and target sysids are required")
	case c.OriginDBOID == 0 || c.TargetDBOID == 0:
		return errors.New("apply: origin and target database OIDs are required")
	case c.DSN == "":
		return errors.New("apply: DSN is required")
	}
	return nil
}

// self is this node, as conflict resolution tells nodes apart.
func (c *Config) self() conflicts.NodeID {
	return conflicts.NodeID{SysID: c.TargetSysID, DBOID: c.TargetDBOID}
}

// origin is the origin node, as conflict resolution tells nodes apart.
func (c *Config) origin() conflicts.NodeID {
	return conflicts.NodeID{SysID: c.OriginSysID, DBOID: c.OriginDBOID}
}

// NodeID identifies a node's database: system identifier, timeline and
// database oid, as pgactive_conflict_history records them.
type NodeID struct {
	SysID    uint64
	Timeline uint32
	DBOID    uint32
}

// key is the node as conflict resolution tells nodes apart.
func (n NodeID) key() conflicts.NodeID { return conflicts.NodeID{SysID: n.SysID, DBOID: n.DBOID} }

// OriginName is the replication origin that records how far the database
// with OID dboid has applied the transactions of node. Replication origins
// belong to the whole PostgreSQL cluster, so the name carries the database:
// members of a group may share a cluster.
func OriginName(dboid uint32, node string) string {
	return originPrefix(dboid) + stream.Token(node)
}

// CopyOriginName is the replication origin of worker i of an initial copy
// into the database with OID dboid: rows it writes are known to come from
// the copy. No node's token holds a '.', so it never names a node's origin.
func CopyOriginName(dboid uint32, i int) string {
	return copyOriginPrefix(dboid) + strconv.Itoa(i)
}

func originPrefix(dboid uint32) string {
	return "pgactive_" + strconv.FormatUint(uint64(dboid), 10) + "_"
}

func copyOriginPrefix(dboid uint32) string { return originPrefix(dboid) + "copy." }

// LegacyOriginName is the name earlier versions gave the origin of node,
// without the database, which every database of a cluster applying node
// shared. An apply worker takes its progress over (setupOrigin), and rows
// written under it are still attributed to node.
func LegacyOriginName(group, node string) string {
	return "pgactive_" + stream.Token(group) + "_" + stream.Token(node)
}

// OriginName is the replication origin this worker applies under.
func (w *Worker) OriginName() string { return OriginName(w.cfg.TargetDBOID, w.cfg.Origin) }

// Status is the live state of an apply worker, for lag reporting and metrics.
type Status struct {
	Running      atomic.Bool
	Applied      atomic.Uint64 // origin commit LSN of the last applied transaction
	Flushed      atomic.Uint64 // origin commit LSN of the last one flushed locally
	AppliedTime  atomic.Int64  // its origin commit time, µs since the Unix epoch
	Transactions atomic.Uint64
	Changes      atomic.Uint64
	Inserts      atomic.Uint64
	Updates      atomic.Uint64
	Deletes      atomic.Uint64
	Errors       atomic.Uint64
	Parked       atomic.Uint64
	// Delivered and Committed are how long transactions took from their
	// commit on the origin to being delivered to this worker and to being
	// committed here.
	Delivered stream.Delays
	Committed stream.Delays
	mu        sync.Mutex
	lastErr   string
	conflicts map[string]uint64
}

// Conflicts returns the number of conflicts detected, by conflict type.
func (s *Status) Conflicts() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.conflicts))
	for k, v := range s.conflicts {
		out[k] = v
	}
	return out
}

// committed records a transaction committed locally.
func (s *Status) committed(txn *stream.Txn) {
	s.Committed.Observe(txn.Time(), time.Now())
	s.Applied.Store(uint64(txn.CommitLSN))
	s.AppliedTime.Store(txn.CommitTime)
	s.Transactions.Add(1)
	s.setError(nil)
}

// countChanges adds a committed chunk's changes to the per-kind counters.
func (s *Status) countChanges(changes []stream.Change) {
	var ins, upd, del uint64
	for i := range changes {
		switch changes[i].Op {
		case stream.OpInsert:
			ins++
		case stream.OpUpdate:
			upd++
		case stream.OpDelete:
			del++
		}
	}
	s.Changes.Add(uint64(len(changes)))
	s.Inserts.Add(ins)
	s.Updates.Add(upd)
	s.Deletes.Add(del)
}

func (s *Status) countConflict(typ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conflicts == nil {
		s.conflicts = map[string]uint64{}
	}
	s.conflicts[typ]++
}

// LastError is the last apply error, or "".
func (s *Status) LastError() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

func (s *Status) setError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.lastErr = ""
		return
	}
	s.lastErr = err.Error()
}

// natsPublisher is the part of *nats.Conn the worker uses to answer for
// messages it no longer holds (negative and in-progress acknowledgements).
type natsPublisher interface {
	Publish(subject string, data []byte) error
}

var _ natsPublisher = (*nats.Conn)(nil)

// Worker applies one origin's stream to this node.
type Worker struct {
	cfg    Config
	js     jetstream.JetStream
	nc     natsPublisher
	layout *stream.Layout
	log    *slog.Logger
	status Status
	keys   keyCache // this node's primary keys, as the current session read them
}

// New returns an apply worker. layout finds the consumer and the parked stream.
func New(cfg Config, layout *stream.Layout, nc *nats.Conn, log *slog.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	log = log.With("node", cfg.Target, "origin", cfg.Origin,
		"stream", stream.StreamName(cfg.Group, cfg.Origin), "consumer", stream.ConsumerName(cfg.Target))
	return &Worker{cfg: cfg, js: layout.JS, nc: nc, layout: layout, log: log}, nil
}

// Status returns the worker's live state.
func (w *Worker) Status() *Status { return &w.status }

// Run applies until ctx ends, retrying with backoff after errors. It returns
// nil when ctx is cancelled.
func (w *Worker) Run(ctx context.Context) error {
	backoff := min(RetryMin, w.cfg.RetryMax)
	for {
		start, applied := time.Now(), w.status.Transactions.Load()
		err := w.session(ctx)
		w.status.Running.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		w.status.Errors.Add(1)
		w.status.setError(err)
		if time.Since(start) > time.Minute || w.status.Transactions.Load() != applied {
			backoff = min(RetryMin, w.cfg.RetryMax) // a new failure, not the same one again
		}
		w.log.Warn("apply session ended, retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, w.cfg.RetryMax)
	}
}

func (w *Worker) connect(ctx context.Context) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(w.cfg.DSN)
	if err != nil {
		// Not wrapped: the parse error quotes the DSN, password and all,
		// and this error reaches the lag rows of every node.
		return nil, fmt.Errorf("parse DSN of node %q: the connection string is not valid", w.cfg.Target)
	}
	cc.RuntimeParams["application_name"] = "pgactive:" + strconv.FormatUint(w.cfg.OriginSysID, 10) + ":apply"
	// As PostgreSQL's own apply worker: commits do not wait for the WAL
	// flush; messages are acknowledged once the origin's progress is flushed.
	cc.RuntimeParams["synchronous_commit"] = "off"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect to node %q: %w", w.cfg.Target, err)
	}
	return conn, nil
}

// setupOrigin creates the replication origin if needed, binds this session to
// it and returns its durable progress. An origin that has never moved takes
// the progress of the legacy origin of the same node, if there is one, so
// that a node upgraded from a version that named origins without the
// database applies nothing twice.
func setupOrigin(ctx context.Context, conn *pgx.Conn, name, legacy string) (pglogrepl.LSN, error) {
	_, err := conn.Exec(ctx, `SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL`, name)
	if err != nil {
		return 0, fmt.Errorf("create replication origin %q: %w", name, err)
	}
	_, err = conn.Exec(ctx, `SELECT pg_replication_origin_advance($1, l.lsn)
		FROM (SELECT CASE WHEN pg_replication_origin_oid($2) IS NOT NULL
			THEN pg_replication_origin_progress($2, false) END AS lsn) AS l
		WHERE l.lsn IS NOT NULL AND pg_replication_origin_progress($1, false) IS NULL`, name, legacy)
	if err != nil {
		return 0, fmt.Errorf("take over the progress of replication origin %q: %w", legacy, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_replication_origin_session_setup($1)`, name); err != nil {
		return 0, fmt.Errorf("set up replication origin session %q: %w", name, err)
	}
	return flushedProgress(ctx, conn, name)
}

func (w *Worker) session(ctx context.Context) error {
	conn, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	origin := w.OriginName()
	progress, err := setupOrigin(ctx, conn, origin, LegacyOriginName(w.cfg.Group, w.cfg.Origin))
	if err != nil {
		return err
	}
	cons, err := w.layout.Consumer(ctx, w.cfg.Origin, w.cfg.Target)
	if err != nil {
		return err
	}
	// The flush watcher reads the origin's flushed progress on a
	// connection of its own, so apply never waits for a WAL flush.
	fconn, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer fconn.Close(context.WithoutCancel(ctx))
	flush := newFlushWatcher(fconn, origin, progress)
	fctx, stopFlush := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Go(func() { flush.run(fctx) })
	defer watching.Wait()
	defer stopFlush()

	w.status.Applied.Store(uint64(progress))
	w.status.Flushed.Store(uint64(progress))
	w.status.Running.Store(true)
	w.log.Info("apply started", "lsn", progress)
	s := &session{w: w, conn: conn, originName: origin, progress: progress, tables: map[string]*table{}, flush: flush}
	if err := s.loadOrigins(ctx); err != nil {
		return err
	}
	return s.run(ctx, cons)
}

// JoinLockKey is the advisory lock every applied transaction holds shared.
// A node joining from this one takes it exclusively while it exports its
// snapshot and reads the replication origins' progress, so the progress it
// reads is exactly what the snapshot contains.
const JoinLockKey int64 = 0x7067616374697665 // "pgactive"

const joinLockSQL = "8099549534631851621" // JoinLockKey in decimal
