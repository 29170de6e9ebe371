package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/stream"
)

// Config is what one capture worker needs.
type Config struct {
	Group string
	Node  string
	SysID uint64
	// DSN is a libpq connection string with credentials resolved. It is never logged.
	DSN  string
	Slot string
	// ChunkSize is the target encoded size of one message (default 256 KiB);
	// it must stay well under the server's max payload.
	ChunkSize int
	// MaxPending and MaxPendingBytes bound the unacknowledged publishes
	// (default 1024 messages, 32 MiB).
	MaxPending      int
	MaxPendingBytes int
	// MaxPayload is the server's largest accepted message; a transaction
	// with a single row larger than it cannot be published.
	MaxPayload int
	// StatusInterval is how often the slot's position is reported (default 1 s).
	StatusInterval time.Duration
}

func (c *Config) setDefaults() {
	if c.ChunkSize <= 0 {
		c.ChunkSize = 256 << 10
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 1024
	}
	if c.MaxPendingBytes <= 0 {
		c.MaxPendingBytes = 32 << 20
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = time.Second
	}
}

// Validate reports a configuration capture cannot run with.
func (c *Config) Validate() error {
	switch {
	case c.Group == "" || c.Node == "":
		return errors.New("capture: group and node name are required")
	case c.SysID == 0:
		return errors.New("capture: node sysid is required")
	case c.DSN == "" || c.Slot == "":
		return errors.New("capture: DSN and slot are required")
	}
	return nil
}

// Status is the live position of a capture worker, for lag reporting.
type Status struct {
	Running      atomic.Bool
	Confirmed    atomic.Uint64 // slot position JetStream has stored everything before
	Received     atomic.Uint64 // last WAL position received from PostgreSQL
	Published    atomic.Uint64 // commit LSN of the last transaction handed to JetStream
	Transactions atomic.Uint64
	Changes      atomic.Uint64
	Bytes        atomic.Uint64
	// Messages counts the JetStream messages published: whole transactions
	// decoded at once share one (see session.add).
	Messages atomic.Uint64
	// Delay is how long transactions took from their commit to being
	// decoded here (the walsender waits for the commit to be flushed, then
	// decodes it).
	Delay stream.Delays
}

// Capturer is the capture worker of one node.
type Capturer struct {
	cfg    Config
	js     jetstream.JetStream
	log    *slog.Logger
	status Status
}

// New returns a capture worker publishing through js.
func New(cfg Config, js jetstream.JetStream, log *slog.Logger) (*Capturer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With("node", cfg.Node, "slot", cfg.Slot, "stream", stream.StreamName(cfg.Group, cfg.Node))
	return &Capturer{cfg: cfg, js: js, log: log}, nil
}

// Status returns the worker's live position.
func (c *Capturer) Status() *Status { return &c.status }

// Run captures until ctx ends, restarting the replication session with
// backoff after errors. It returns nil when ctx is cancelled.
func (c *Capturer) Run(ctx context.Context) error {
	backoff := time.Second
	for {
		start := time.Now()
		err := c.session(ctx)
		c.status.Running.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		c.log.Warn("capture session ended, restarting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (c *Capturer) connect(ctx context.Context) (*pgconn.PgConn, error) {
	pc, err := pgconn.ParseConfig(c.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("parse DSN of node %q: %w", c.cfg.Node, err)
	}
	pc.RuntimeParams["replication"] = "database"
	pc.RuntimeParams["application_name"] = "pgactive:" + strconv.FormatUint(c.cfg.SysID, 10) + ":send"
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open replication connection: %w", err)
	}
	return conn, nil
}

// slotConfirmed reads the slot's confirmed position, which feedback must
// never go below, and the end of the WAL.
func slotConfirmed(ctx context.Context, conn *pgconn.PgConn, slot string) (confirmed, walEnd pglogrepl.LSN, err error) {
	res, err := conn.Exec(ctx, "SELECT confirmed_flush_lsn, pg_current_wal_lsn() FROM pg_replication_slots WHERE slot_name = '"+slot+"'").ReadAll()
	if err != nil {
		return 0, 0, fmt.Errorf("read slot %q: %w", slot, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || res[0].Rows[0][0] == nil {
		return 0, 0, fmt.Errorf("slot %q does not exist", slot)
	}
	if confirmed, err = pglogrepl.ParseLSN(string(res[0].Rows[0][0])); err != nil {
		return 0, 0, err
	}
	walEnd, err = pglogrepl.ParseLSN(string(res[0].Rows[0][1]))
	return confirmed, walEnd, err
}

// session runs one replication connection until an error.
func (c *Capturer) session(ctx context.Context) error {
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	confirmed, walEnd, err := slotConfirmed(ctx, conn, c.cfg.Slot)
	if err != nil {
		return err
	}
	stored, err := c.stored(ctx, walEnd)
	if err != nil {
		return err
	}
	if err := startReplication(ctx, conn, c.cfg.Slot); err != nil {
		return err
	}
	c.status.Running.Store(true)
	c.status.Confirmed.Store(uint64(confirmed))
	c.log.Info("capture started", "lsn", confirmed)

	s := &session{
		c:       c,
		conn:    conn,
		asm:     NewAssembler(c.cfg.Node, c.cfg.SysID, c.cfg.ChunkSize),
		win:     newWindow(c.js, stream.StreamName(c.cfg.Group, c.cfg.Node), c.cfg.MaxPending, c.cfg.MaxPendingBytes, confirmed, stored.seq),
		subject: stream.TxnSubject(c.cfg.Group, c.cfg.Node),
		stored:  stored,
	}
	err = s.loop(ctx)
	// Final feedback with what is durably stored, whatever ended the
	// session (the connection may be gone: then the slot keeps the last
	// feedback). The next session starts from the slot, after it.
	_ = s.win.drain()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = s.sendStatus(fctx)
	return err
}

type session struct {
	c          *Capturer
	conn       *pgconn.PgConn
	asm        *Assembler
	win        *window
	subject    string
	lastStatus time.Time
	// readDeadline is the connection's read deadline (see receive).
	readDeadline time.Time
	// batch holds whole transactions decoded but not yet published (see
	// flushBatch); batchEnd is the end of the last transaction it covers.
	batch    stream.Batch
	batchEnd pglogrepl.LSN
	// stored is what the stream held when the session began.
	stored storedEnd
}

// maxBatchTxns bounds the transactions of one message; Config.ChunkSize
// bounds its size.
const maxBatchTxns = 256

func (s *session) loop(ctx context.Context) error {
	for {
		if err := s.win.drain(); err != nil {
			return err
		}
		s.c.status.Confirmed.Store(uint64(s.win.confirmed))
		if time.Since(s.lastStatus) >= s.c.cfg.StatusInterval {
			if err := s.sendStatus(ctx); err != nil {
				return err
			}
		}
		// Transactions wait in the batch only while more of the stream is
		// already read: the next read could block.
		if s.batch.Len() > 0 && s.conn.Frontend().ReadBufferLen() == 0 {
			if err := s.flushBatch(ctx); err != nil {
				return err
			}
		}
		raw, err := s.receive()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if isTimeout(err) {
				continue
			}
			return fmt.Errorf("receive from slot: %w", err)
		}
		if err := s.handle(ctx, raw); err != nil {
			return err
		}
	}
}

// receiveWait is how long a receive waits before the loop looks at the
// window, the status interval and the context again.
const receiveWait = 500 * time.Millisecond

// receive reads the next message of the replication stream. It bounds the
// wait with the connection's read deadline, moved forward at most every
// receiveWait/2, rather than a context per message: a context with a
// deadline costs more than decoding a small message.
func (s *session) receive() (pgproto3.BackendMessage, error) {
	if now := time.Now(); s.readDeadline.Sub(now) < receiveWait/2 {
		s.readDeadline = now.Add(receiveWait)
		if err := s.conn.Conn().SetReadDeadline(s.readDeadline); err != nil {
			return nil, fmt.Errorf("set read deadline: %w", err)
		}
	}
	return s.conn.ReceiveMessage(context.Background())
}

// isTimeout reports a receive that ended at the read deadline.
func isTimeout(err error) bool {
	var netErr net.Error
	return pgconn.Timeout(err) || (errors.As(err, &netErr) && netErr.Timeout())
}

func (s *session) handle(ctx context.Context, raw pgproto3.BackendMessage) error {
	switch msg := raw.(type) {
	case *pgproto3.ErrorResponse:
		return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
	case *pgproto3.CopyData:
		if len(msg.Data) == 0 {
			return nil
		}
		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("parse keepalive: %w", err)
			}
			// Between transactions with nothing outstanding, every commit
			// before the sent position is stored: the slot may pass it.
			if !s.asm.InTxn() && s.batch.Len() == 0 && s.win.empty() && pkm.ServerWALEnd > s.win.confirmed {
				s.win.confirmed = pkm.ServerWALEnd
			}
			if pkm.ReplyRequested {
				return s.sendStatus(ctx)
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("parse XLogData: %w", err)
			}
			s.c.status.Received.Store(uint64(xld.WALStart) + uint64(len(xld.WALData)))
			return s.xlog(ctx, xld.WALData)
		}
	}
	return nil
}

func (s *session) xlog(ctx context.Context, data []byte) error {
	ev, err := s.asm.Add(data)
	if err != nil {
		return err
	}
	if ev.Chunk != nil {
		return s.add(ctx, ev)
	}
	if ev.Done {
		s.ended(ev.EndLSN)
	}
	return nil
}

// ended records a transaction that publishes nothing, ending at end.
func (s *session) ended(end pglogrepl.LSN) {
	if s.batch.Len() > 0 {
		s.batchEnd = end // confirmed with the batch
		return
	}
	s.win.done(end)
}

// add puts a decoded transaction or chunk in the batch, publishing the batch
// first when the two do not go in one message, and after when it is full.
func (s *session) add(ctx context.Context, ev Event) error {
	txn := ev.Chunk
	if s.stored.holds(txn) {
		// Stored by an earlier session: nothing to publish. Confirmed with
		// what is published next, or at once.
		if txn.Last {
			s.ended(ev.EndLSN)
		}
		return nil
	}
	limit := s.c.cfg.ChunkSize
	if max := s.c.cfg.MaxPayload; max > 0 {
		limit = min(limit, max-1024) // only a transaction alone can exceed it
	}
	ok, err := s.batch.Add(txn, limit)
	if err == nil && !ok {
		if err := s.flushBatch(ctx); err != nil {
			return err
		}
		_, err = s.batch.Add(txn, limit)
	}
	if err != nil {
		return err
	}
	s.batchEnd = 0
	if txn.Last {
		s.batchEnd = ev.EndLSN
		s.c.status.Delay.Observe(txn.Time(), time.Now())
		s.c.status.Transactions.Add(1)
	}
	s.c.status.Changes.Add(uint64(len(txn.Changes)))
	if !txn.Last || txn.Chunk > 0 || s.batch.Len() >= maxBatchTxns || s.batch.Size() >= limit {
		return s.flushBatch(ctx)
	}
	return nil
}

// flushBatch publishes the batch as one message.
func (s *session) flushBatch(ctx context.Context) error {
	last := *s.batch.Last()
	m := s.batch.Msg(s.subject)
	if max := s.c.cfg.MaxPayload; max > 0 && len(m.Data)+1024 > max {
		// Retrying cannot help; the slot keeps the transaction until the
		// operator raises the limit, so nothing is lost.
		return fmt.Errorf("transaction %s has a row of %d bytes encoded, over the NATS server's max_payload of %d bytes: raise max_payload in the NATS server configuration (up to 64MB) and restart it",
			last.CommitLSN, len(m.Data), max)
	}
	if err := s.win.publish(ctx, m, s.batchEnd); err != nil {
		return err
	}
	s.c.status.Bytes.Add(uint64(len(m.Data)))
	s.c.status.Messages.Add(1)
	if last.Last {
		s.c.status.Published.Store(uint64(last.CommitLSN))
	}
	return nil
}

func (s *session) sendStatus(ctx context.Context) error {
	s.lastStatus = time.Now()
	pos := s.win.confirmed
	if pos == 0 {
		return nil
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos,
	})
	if err != nil {
		return fmt.Errorf("send slot feedback: %w", err)
	}
	return nil
}
