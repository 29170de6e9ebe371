package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/stream"
)

// checkAgent starts the agent when the local node belongs to a group and
// none runs, and notices an agent that stopped.
func (c *Controller) checkAgent(ctx context.Context) error {
	if c.agentDone != nil {
		select {
		case err := <-c.agentDone:
			c.agent, c.agentDone = nil, nil
			if errors.Is(err, ErrDetached) {
				c.log.Info("this node was detached; replication stopped")
				return c.setStatus(ctx, StateDetached)
			}
			if err != nil {
				c.log.Error("agent stopped, restarting", "err", err)
			}
		default:
			return nil
		}
	}
	n, err := c.local(ctx)
	if err != nil || n == nil || n.Group == "" {
		return err
	}
	switch n.Status {
	case StateReady, StateCatchup, StateOutbound:
		return c.startAgent(ctx, n)
	}
	return nil
}

// startAgent runs the replication agent for the local node and the mirror of
// the group's membership.
func (c *Controller) startAgent(ctx context.Context, n *localNode) error {
	if c.agent != nil {
		return nil
	}
	a, err := NewAgent(Config{Group: n.Group, Node: n.Name, DSN: c.cfg.DSN, Replicas: c.cfg.Replicas, Monitors: c.cfg.Monitors},
		c.cfg.NC, c.cfg.JS, c.cfg.Log)
	if err != nil {
		return err
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		cancel()
		return err
	case <-ctx.Done():
		cancel()
		return ctx.Err()
	}
	c.agent, c.agentCancel, c.agentDone, c.group, c.node = a, cancel, done, n.Group, n.Name
	if err := c.setStatus(ctx, StateReady); err != nil {
		return err
	}
	c.startMirror(actx, n.Group)
	return nil
}

func (c *Controller) stopAgent() {
	if c.agent == nil {
		return
	}
	c.agentCancel()
	<-c.agentDone
	c.agent, c.agentDone = nil, nil
}

// startMirror copies the group's member records into pgactive_nodes until ctx ends.
func (c *Controller) startMirror(ctx context.Context, group string) {
	go func() {
		for ctx.Err() == nil {
			err := c.mirror(ctx, group)
			if ctx.Err() != nil || schemaGone(err) {
				return // stopped, or the extension was dropped
			}
			c.log.Warn("membership mirror ended, restarting", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

func (c *Controller) mirror(ctx context.Context, group string) error {
	conn, err := Connect(ctx, c.cfg.DSN, "")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	kv, err := c.layout(group).EnsureBucket(ctx)
	if err != nil {
		return err
	}
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
			if err := mirrorEntry(ctx, conn, e); err != nil {
				return err
			}
		}
	}
}

func mirrorEntry(ctx context.Context, conn *pgx.Conn, e jetstream.KeyValueEntry) error {
	if e.Operation() != jetstream.KeyValuePut {
		return nil // removed members delete their own rows; others keep the last state
	}
	m, err := decodeMember(e.Value())
	if err != nil {
		return nil
	}
	_, err = conn.Exec(ctx, `INSERT INTO pgactive.pgactive_nodes
		(node_sysid, node_timeline, node_dboid, node_status, node_name, node_dsn, node_group, node_seq_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (node_sysid, node_timeline, node_dboid) DO UPDATE
		SET node_status = excluded.node_status, node_name = excluded.node_name, node_group = excluded.node_group,
			node_seq_id = excluded.node_seq_id, node_dsn = coalesce(pgactive_nodes.node_dsn, excluded.node_dsn)`,
		strconv.FormatUint(m.SysID, 10), m.Timeline, m.DBOID, m.Status, m.Name, m.DSN, m.Group, m.SeqID)
	if err != nil {
		return fmt.Errorf("mirror member %q: %w", m.Name, err)
	}
	return nil
}

// detachNodes marks the named members detached in the group: every agent
// stops applying them, they stop replicating, and their consumers go.
func (c *Controller) detachNodes(ctx context.Context, args map[string]any) error {
	n, err := c.local(ctx)
	if err != nil {
		return err
	}
	group := c.group
	if n != nil && n.Group != "" {
		group = n.Group
	}
	if group == "" {
		return errors.New("this database is not in a group")
	}
	names, _ := args["nodes"].([]any)
	kv, err := c.layout(group).EnsureBucket(ctx)
	if err != nil {
		return err
	}
	for _, v := range names {
		name, _ := v.(string)
		e, err := kv.Get(ctx, stream.NodeKey(name))
		if err != nil {
			return fmt.Errorf("node %q is not a member of group %q: %w", name, group, err)
		}
		m, err := decodeMember(e.Value())
		if err != nil {
			return err
		}
		m.Status = StateDetached
		if err := PutMember(ctx, kv, m); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes what this node had in NATS: its stream, its consumers and
// its member record. pgactive_remove() already dropped the local slot,
// origins and publication.
func (c *Controller) remove(ctx context.Context, args map[string]any) error {
	c.stopAgent()
	name, _ := args["node_name"].(string)
	group, _ := args["node_group"].(string)
	if group == "" {
		group = c.group
	}
	if name == "" || group == "" {
		return nil // never joined a group: nothing in NATS
	}
	l := c.layout(group)
	kv, err := l.EnsureBucket(ctx)
	if err != nil {
		return err
	}
	members, err := Members(ctx, kv)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.Name == name {
			continue
		}
		if err := l.DeleteConsumer(ctx, m.Name, name); err != nil {
			return err
		}
		if err := l.DeleteConsumer(ctx, name, m.Name); err != nil {
			return err
		}
	}
	if err := l.DeleteStream(ctx, name); err != nil {
		return err
	}
	if err := kv.Delete(ctx, stream.NodeKey(name)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete member record: %w", err)
	}
	c.group, c.node = "", ""
	return nil
}

// skipChanges carries out pgactive_skip_changes(from_sysid, from_timeline,
// from_dboid, upto_lsn).
func (c *Controller) skipChanges(ctx context.Context, args map[string]any) error {
	if c.agent == nil || c.group == "" {
		return errors.New("this node is not replicating: nothing to skip")
	}
	sysid, _ := args["from_sysid"].(string)
	upto, _ := args["upto_lsn"].(string)
	dboid, _ := args["from_dboid"].(float64)
	kv, err := c.layout(c.group).EnsureBucket(ctx)
	if err != nil {
		return err
	}
	members, err := Members(ctx, kv)
	if err != nil {
		return err
	}
	for _, m := range members {
		if strconv.FormatUint(m.SysID, 10) == sysid && (dboid == 0 || uint32(dboid) == m.DBOID) && m.Name != c.node {
			return c.agent.SkipChanges(ctx, m, upto)
		}
	}
	return fmt.Errorf("no member of group %q has sysid %s and dboid %v: see pgactive.pgactive_nodes", c.group, sysid, dboid)
}
