package monitor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/capture"
	"github.com/pgactive-go/pgactive/stream"
)

// applicationName is how the monitor's session shows in pg_stat_activity.
const applicationName = "pgactive:monitor"

// localTables says which of the tables the monitor refreshes exist.
type localTables struct{ lag, stats bool }

// readOrigin reads the node's WAL position and slot. While the database
// cannot be reached it returns the last state read, with the slot inactive.
func (m *Monitor) readOrigin(ctx context.Context, self member) (origin, localTables, error) {
	o := m.last
	o.Node, o.SysID, o.Slot = m.cfg.Node, self.SysID, capture.SlotName(self.DBOID, self.SysID)
	o.SlotActive, o.ActivePID, o.CaptureRunning = false, nil, false
	if c := m.cfg.Agent.Capture(); c != nil {
		st := c.Status()
		o.CaptureRunning = st.Running.Load()
		o.Stored = LSN(st.Confirmed.Load())
	}
	conn, err := m.connect(ctx)
	if err != nil {
		m.last = o
		return o, localTables{}, err
	}
	var current, restart, confirmed *string
	var tables localTables
	err = conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, s.restart_lsn::text, s.confirmed_flush_lsn::text,
			coalesce(s.active, false), s.active_pid,
			to_regclass('pgactive.pgactive_lag') IS NOT NULL, to_regclass('pgactive.pgactive_stats') IS NOT NULL
		FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`, o.Slot).
		Scan(&current, &restart, &confirmed, &o.SlotActive, &o.ActivePID, &tables.lag, &tables.stats)
	if err != nil {
		m.closeConn()
		o.SlotActive, o.ActivePID = false, nil
		m.last = o
		return o, localTables{}, fmt.Errorf("read WAL position and slot %q: %w", o.Slot, err)
	}
	o.Current, o.Restart, o.Confirmed = parseLSN(current), parseLSN(restart), parseLSN(confirmed)
	m.last = o
	return o, tables, nil
}

func parseLSN(s *string) LSN {
	if s == nil {
		return 0
	}
	v, err := pglogrepl.ParseLSN(*s)
	if err != nil {
		return 0
	}
	return LSN(v)
}

// connect opens the monitor's session to the node, if none is open.
func (m *Monitor) connect(ctx context.Context) (*pgx.Conn, error) {
	if m.conn != nil && !m.conn.IsClosed() {
		return m.conn, nil
	}
	cfg, err := pgx.ParseConfig(m.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("node %q: the connection string is not valid: %w", m.cfg.Node, parseReason(err))
	}
	cfg.RuntimeParams["application_name"] = applicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to node %q: %w", m.cfg.Node, err)
	}
	m.conn = conn
	return conn, nil
}

// parseReason drops the connection string (which may hold a password) from
// a parse error, keeping its reason.
func parseReason(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		if inner := errors.Unwrap(pe); inner != nil {
			return inner
		}
		return errors.New("cannot parse")
	}
	return err
}

func (m *Monitor) closeConn() {
	if m.conn != nil {
		_ = m.conn.Close(context.Background())
		m.conn = nil
	}
}

// readPublished finds the last transaction published on the node's stream:
// the stream's last message, or capture's position when the stream no longer
// holds it (interest retention removes what every target applied).
func (m *Monitor) readPublished(ctx context.Context, o *origin) error {
	if c := m.cfg.Agent.Capture(); c != nil {
		if p := LSN(c.Status().Published.Load()); p > m.pubLSN {
			m.pubLSN = p
		}
	}
	o.StreamRead = false
	err := m.readLastStored(ctx)
	if err == nil {
		o.StreamRead = true
	}
	o.Published, o.PublishedTime = m.pubLSN, m.pubTime
	o.LastStored, o.LastStoredSeq = m.storedLSN, m.storedSeq
	return err
}

// readLastStored reads the stream's last transaction message.
func (m *Monitor) readLastStored(ctx context.Context) error {
	st, err := m.stream(ctx)
	if err != nil {
		return err
	}
	msg, err := st.GetLastMsgForSubject(ctx, stream.TxnSubject(m.cfg.Group, m.cfg.Node))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		m.storedSeq = 0
		return nil
	case err != nil:
		m.st = nil
		return fmt.Errorf("read the last message of stream %s: %w", stream.StreamName(m.cfg.Group, m.cfg.Node), err)
	}
	m.storedSeq = msg.Sequence
	if lsn, t, ok := commitOf(msg.Header); ok {
		m.storedLSN = max(m.storedLSN, lsn)
		if lsn >= m.pubLSN {
			m.pubLSN, m.pubTime = lsn, t
		}
	}
	return nil
}

// commitOf reads a transaction message's commit LSN and time headers.
func commitOf(h nats.Header) (LSN, time.Time, bool) {
	lsn, err := pglogrepl.ParseLSN(h.Get(stream.HeaderCommitLSN))
	if err != nil {
		return 0, time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, h.Get(stream.HeaderCommitTime))
	if err != nil {
		return 0, time.Time{}, false
	}
	return LSN(lsn), t, true
}

// consumerBacklog reads the consumer through which target applies origin's
// stream: its backlog, the last delivered transaction and the oldest one not
// acknowledged. It returns nil without error when the consumer does not exist.
func consumerBacklog(ctx context.Context, st jetstream.Stream, group, originNode, target string) (*backlog, error) {
	name := stream.ConsumerName(target)
	c, err := st.Consumer(ctx, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read consumer %s on %s: %w", name, stream.StreamName(group, originNode), err)
	}
	info := c.CachedInfo()
	b := &backlog{Pending: int64(info.NumPending) + int64(info.NumAckPending), AckFloor: info.AckFloor.Stream}
	if info.Delivered.Stream > info.AckFloor.Stream {
		if msg, err := st.GetMsg(ctx, info.Delivered.Stream); err == nil {
			if lsn, _, ok := commitOf(msg.Header); ok {
				b.Delivered = lsn
			}
		}
	}
	if b.Pending > 0 {
		msg, err := st.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(stream.TxnSubject(group, originNode)))
		if err == nil {
			if _, t, ok := commitOf(msg.Header); ok {
				b.Oldest = t
			}
		}
	}
	return b, nil
}
