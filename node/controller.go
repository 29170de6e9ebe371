package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/monitor"
	"github.com/pgactive-go/pgactive/stream"
)

// RequestChannel is the NOTIFY channel the SQL functions signal requests on.
const RequestChannel = "pgactive_requests"

// ControllerConfig is what the controller of one database needs.
type ControllerConfig struct {
	// DSN of the database, credentials resolved. Never logged.
	DSN      string
	NC       *nats.Conn
	JS       jetstream.JetStream
	Replicas int
	// CreateSchema, when set, creates the pgactive objects if the extension
	// is not installed (for managed PostgreSQL).
	CreateSchema func(ctx context.Context, conn *pgx.Conn) error
	PGBinDir     string
	// Monitors lists the lag monitor of the agent while it runs (optional).
	Monitors *monitor.Set
	Log      *slog.Logger
}

// Controller serves the pgactive SQL surface of one database: it waits for
// the extension, carries out the requests the SQL functions record, runs the
// node's Agent once the node is in a group, and mirrors the group's
// membership into pgactive.pgactive_nodes.
type Controller struct {
	cfg  ControllerConfig
	log  *slog.Logger
	conn *pgx.Conn // the attached session: application_name pgactive:agent
	id   Identity

	agent       *Agent
	agentCancel context.CancelFunc // also stops the mirror
	agentDone   chan error
	group       string // group of the running (or last run) agent
	node        string // its node name
}

// NewController returns a controller for cfg.
func NewController(cfg ControllerConfig) *Controller {
	return &Controller{cfg: cfg, log: cfg.Log}
}

// Run serves the database until ctx ends. It returns an error for what
// retrying cannot mend: a database it cannot reach at start, or bad settings.
// A session lost later (PostgreSQL restarted) is reconnected.
func (c *Controller) Run(ctx context.Context) error {
	conn, err := Connect(ctx, c.cfg.DSN, "")
	if err != nil {
		return err
	}
	c.conn = conn
	defer func() { c.conn.Close(context.WithoutCancel(ctx)) }()
	if c.id, err = Check(ctx, conn, ""); err != nil {
		return err
	}
	c.log = c.log.With("db", c.id.DBName)
	if err := c.waitForExtension(ctx); err != nil {
		return err
	}
	if err := listen(ctx, conn); err != nil {
		return err
	}
	c.log.Info("serving pgactive requests")
	defer c.stopAgent()
	for {
		if err := c.step(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if c.conn.IsClosed() {
				if err := c.reconnect(ctx, err); err != nil {
					return err
				}
				continue
			}
			if !schemaGone(err) {
				return err
			}
			// DROP EXTENSION pgactive: stop, finish a removal whose request
			// went with the schema, and wait for the extension again.
			c.vanished(ctx)
			if err := c.waitForExtension(ctx); err != nil {
				return err
			}
			if err := listen(ctx, c.conn); err != nil {
				return err
			}
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			if !c.conn.IsClosed() {
				return fmt.Errorf("wait for requests: %w", err)
			}
			if err := c.reconnect(ctx, err); err != nil {
				return err
			}
		}
	}
}

// listen subscribes conn to the requests the SQL functions signal.
func listen(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "LISTEN "+RequestChannel); err != nil {
		return fmt.Errorf("listen for requests: %w", err)
	}
	return nil
}

// reconnect replaces the attached session after it was lost (PostgreSQL
// restarted, or the network failed), trying again with backoff until ctx
// ends. The node's agent keeps running meanwhile: its workers reconnect on
// their own. It fails only when the database is no longer the same one.
func (c *Controller) reconnect(ctx context.Context, cause error) error {
	c.log.Warn("lost the attached session, reconnecting", "err", cause)
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
		conn, err := Connect(ctx, c.cfg.DSN, "")
		if err == nil {
			var id Identity
			if id, err = Check(ctx, conn, ""); err == nil && (id.SysID != c.id.SysID || id.DBOID != c.id.DBOID) {
				conn.Close(ctx)
				return fmt.Errorf("%w: after reconnecting, the DSN leads to another database (system %d, database oid %d; was %d, %d)",
					ErrNotReady, id.SysID, id.DBOID, c.id.SysID, c.id.DBOID)
			}
			if err == nil {
				err = listen(ctx, conn)
			}
			if err == nil {
				c.conn.Close(context.WithoutCancel(ctx))
				c.conn = conn
				c.log.Info("attached session restored")
				return nil
			}
			conn.Close(context.WithoutCancel(ctx))
		}
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("reconnecting the attached session failed, trying again", "err", err, "in", backoff)
	}
}

func (c *Controller) waitForExtension(ctx context.Context) error {
	logged := false
	for {
		var ok bool
		err := c.conn.QueryRow(ctx, `SELECT to_regclass('pgactive.pgactive_requests') IS NOT NULL`).Scan(&ok)
		if err != nil {
			return fmt.Errorf("look for the pgactive extension: %w", err)
		}
		if ok {
			return nil
		}
		if c.cfg.CreateSchema != nil {
			if err := c.cfg.CreateSchema(ctx, c.conn); err != nil {
				return fmt.Errorf("create the pgactive schema: %w", err)
			}
			continue
		}
		if !logged {
			c.log.Info("waiting for the pgactive extension: run CREATE EXTENSION pgactive in this database")
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// localNode is this database's row in pgactive_nodes.
type localNode struct {
	Name, Status, Group, DSN, InitFrom string
}

func (c *Controller) local(ctx context.Context) (*localNode, error) {
	var n localNode
	var group, dsn, from *string
	err := c.conn.QueryRow(ctx, `SELECT node_name, node_status::text, node_group, node_dsn, node_init_from_dsn
		FROM pgactive.pgactive_nodes WHERE node_sysid = $1 AND node_timeline = $2 AND node_dboid = $3`,
		strconv.FormatUint(c.id.SysID, 10), c.id.Timeline, c.id.DBOID).Scan(&n.Name, &n.Status, &group, &dsn, &from)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the local node: %w", err)
	}
	n.Group, n.DSN, n.InitFrom = deref(group), deref(dsn), deref(from)
	return &n, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// step carries out pending requests and keeps the agent running when the
// node is in a group.
func (c *Controller) step(ctx context.Context) error {
	if err := c.checkAgent(ctx); err != nil {
		return err
	}
	if c.agent != nil {
		var paused bool
		err := c.conn.QueryRow(ctx, `SELECT coalesce(bool_or(paused), false) FROM pgactive.pgactive_apply_state`).Scan(&paused)
		if err != nil {
			return fmt.Errorf("read apply state: %w", err)
		}
		c.agent.SetPaused(paused)
	}
	for {
		req, err := c.nextRequest(ctx)
		if err != nil || req == nil {
			return err
		}
		c.log.Info("carrying out request", "request", req.Kind, "id", req.ID)
		rerr := c.carryOut(ctx, req)
		if err := c.finishRequest(ctx, req, rerr); err != nil {
			return err
		}
	}
}

type request struct {
	ID   int64
	Kind string
	Args map[string]any
}

func (c *Controller) nextRequest(ctx context.Context) (*request, error) {
	var r request
	var args []byte
	err := c.conn.QueryRow(ctx, `UPDATE pgactive.pgactive_requests SET state = 'running'
		WHERE request_id = (SELECT request_id FROM pgactive.pgactive_requests WHERE state IN ('pending', 'running')
			ORDER BY request_id LIMIT 1)
		RETURNING request_id, request, args::text`).Scan(&r.ID, &r.Kind, &args)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read requests: %w", err)
	}
	if err := json.Unmarshal(args, &r.Args); err != nil {
		r.Args = map[string]any{}
	}
	return &r, nil
}

func (c *Controller) finishRequest(ctx context.Context, r *request, rerr error) error {
	state, msg := "done", (*string)(nil)
	if rerr != nil {
		state = "failed"
		s := rerr.Error()
		msg = &s
		c.log.Error("request failed", "request", r.Kind, "id", r.ID, "err", rerr)
	}
	_, err := c.conn.Exec(ctx, `UPDATE pgactive.pgactive_requests SET state = $2, error = $3, finished_at = now() WHERE request_id = $1`,
		r.ID, state, msg)
	if err != nil {
		return fmt.Errorf("record request %d: %w", r.ID, err)
	}
	return nil
}

func (c *Controller) carryOut(ctx context.Context, r *request) error {
	switch r.Kind {
	case "create_group":
		return c.createGroup(ctx)
	case "join_group":
		return c.joinGroup(ctx, r.Args)
	case "detach_nodes":
		return c.detachNodes(ctx, r.Args)
	case "remove":
		return c.remove(ctx, r.Args)
	case "skip_changes":
		return c.skipChanges(ctx, r.Args)
	}
	return fmt.Errorf("request %q is not supported by this agent", r.Kind)
}

func (c *Controller) setStatus(ctx context.Context, status string) error {
	_, err := c.conn.Exec(ctx, `UPDATE pgactive.pgactive_nodes SET node_status = $4
		WHERE node_sysid = $1 AND node_timeline = $2 AND node_dboid = $3`,
		strconv.FormatUint(c.id.SysID, 10), c.id.Timeline, c.id.DBOID, status)
	if err != nil {
		return fmt.Errorf("set node status %s: %w", status, err)
	}
	return nil
}

func (c *Controller) layout(group string) *stream.Layout {
	return &stream.Layout{JS: c.cfg.JS, Group: group, Replicas: c.cfg.Replicas}
}

func (c *Controller) createGroup(ctx context.Context) error {
	n, err := c.local(ctx)
	if err != nil || n == nil {
		return errors.Join(err, errors.New("no local node row: call pgactive_create_group first"))
	}
	if err := CheckReplication(ctx, c.conn, n.Name); err != nil {
		if n.Status == StateBeginning {
			return c.joinFailed(ctx, n, "", err) // nothing done yet: let pgactive_create_group run again
		}
		return err
	}
	if n.Group == "" {
		n.Group = c.id.DBName
		if _, err := c.conn.Exec(ctx, `UPDATE pgactive.pgactive_nodes SET node_group = $1 WHERE node_name = $2`, n.Group, n.Name); err != nil {
			return fmt.Errorf("record group: %w", err)
		}
	}
	kv, err := c.layout(n.Group).EnsureBucket(ctx)
	if err != nil {
		return err
	}
	members, err := Members(ctx, kv)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.Name != n.Name && m.Status != StateDetached {
			return fmt.Errorf("group %q already has member %q on this NATS server: join it with pgactive_join_group instead", n.Group, m.Name)
		}
	}
	return c.startAgent(ctx, n)
}

// schemaGone reports errors meaning the pgactive objects were dropped.
func schemaGone(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000" || pe.Code == "42883")
}

// vanished handles the pgactive schema disappearing under a running node.
func (c *Controller) vanished(ctx context.Context) {
	name := c.node
	c.stopAgent()
	if c.group == "" || name == "" {
		return
	}
	c.log.Info("the pgactive extension was dropped; removing this node from NATS", "node", name)
	if err := c.remove(ctx, map[string]any{"node_name": name, "node_group": c.group}); err != nil {
		c.log.Error("could not remove this node's NATS objects", "err", err)
	}
}
