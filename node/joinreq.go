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

// joinGroup carries out pgactive_join_group: it copies the source node's
// database, then starts the agent. On failure it undoes the registration so
// the user can fix the cause and call pgactive_join_group again.
func (c *Controller) joinGroup(ctx context.Context, args map[string]any) error {
	n, err := c.local(ctx)
	if err != nil {
		return err
	}
	if n == nil {
		return errors.New("no local node row: call pgactive_join_group first")
	}
	joinDSN, _ := args["join_using_dsn"].(string)
	if joinDSN == "" {
		joinDSN = n.InitFrom
	}
	// What the agent needs once the copy is done, checked before it starts.
	if err := CheckReplication(ctx, c.conn, n.Name); err != nil {
		return c.joinFailed(ctx, n, "", err)
	}
	srcDSN, err := ResolveDSN(ctx, c.conn, joinDSN)
	if err != nil {
		return c.joinFailed(ctx, n, "", fmt.Errorf("join_using_dsn: %w", err))
	}
	source, group, err := sourceNode(ctx, srcDSN)
	if err != nil {
		return c.joinFailed(ctx, n, "", err)
	}
	if _, err := c.conn.Exec(ctx, `UPDATE pgactive.pgactive_nodes SET node_group = $1 WHERE node_name = $2`, group, n.Name); err != nil {
		return fmt.Errorf("record group: %w", err)
	}
	if err := c.setStatus(ctx, StateCopying); err != nil {
		return err
	}
	progress, err := Connect(ctx, c.cfg.DSN, n.Name)
	if err != nil {
		return err
	}
	defer progress.Close(context.WithoutCancel(ctx))
	report := func(p JoinProgress) { c.reportJoin(ctx, progress, n.Name, p) }
	err = Join(ctx, JoinConfig{Group: group, Node: n.Name, DSN: c.cfg.DSN, SourceNode: source, SourceDSN: srcDSN,
		Layout: c.layout(group), PGBinDir: c.cfg.PGBinDir, Progress: report, Log: c.log})
	if err != nil {
		return c.joinFailed(ctx, n, group, err)
	}
	if err := c.setStatus(ctx, StateCatchup); err != nil {
		return err
	}
	n.Group, n.Status = group, StateCatchup
	return c.startAgent(ctx, n)
}

// sourceNode reads the name and group of the node at dsn.
func sourceNode(ctx context.Context, dsn string) (name, group string, err error) {
	conn, err := Connect(ctx, dsn, "")
	if err != nil {
		return "", "", fmt.Errorf("join_using_dsn: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var status string
	var g *string
	err = conn.QueryRow(ctx, `SELECT node_name, node_group, node_status::text FROM pgactive.pgactive_nodes
		WHERE node_name = pgactive.pgactive_get_local_node_name()`).Scan(&name, &g, &status)
	if errors.Is(err, pgx.ErrNoRows) || schemaGone(err) {
		return "", "", errors.New("the database at join_using_dsn is not a node of a group: run pgactive_create_group there first")
	}
	if err != nil {
		return "", "", fmt.Errorf("read the node at join_using_dsn: %w", err)
	}
	if status != StateReady || g == nil || *g == "" {
		return "", "", fmt.Errorf("the node %q at join_using_dsn is not ready (status %s): wait for it with pgactive_wait_for_node_ready() there", name, status)
	}
	return name, *g, nil
}

// reportJoin records join progress for pgactive_wait_for_node_ready.
func (c *Controller) reportJoin(ctx context.Context, conn *pgx.Conn, node string, p JoinProgress) {
	var finished *time.Time
	if !p.Finished.IsZero() {
		finished = &p.Finished
	}
	_, err := conn.Exec(ctx, `INSERT INTO pgactive.pgactive_join_progress
		(node_name, source_node, dbname, phase, total_bytes, copied_bytes, started_at, finished_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (node_name) DO UPDATE SET source_node = excluded.source_node, dbname = excluded.dbname,
			phase = excluded.phase, total_bytes = excluded.total_bytes, copied_bytes = excluded.copied_bytes,
			started_at = excluded.started_at, finished_at = excluded.finished_at`,
		node, p.SourceNode, p.DBName, p.Phase, p.TotalBytes, p.CopiedBytes, p.Started, finished)
	if err != nil {
		c.log.Warn("could not record join progress", "err", err)
	}
}

// joinFailed undoes a join's registration and returns its cause. With no
// group, it only deletes the local node row, so that the user can fix the
// cause and call pgactive_join_group (or pgactive_create_group) again.
func (c *Controller) joinFailed(ctx context.Context, n *localNode, group string, cause error) error {
	if group != "" {
		l := c.layout(group)
		if kv, err := l.EnsureBucket(ctx); err == nil {
			if err := kv.Delete(ctx, stream.NodeKey(n.Name)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				c.log.Warn("could not delete the member record of a failed join", "err", err)
			}
		}
		if err := l.DeleteStream(ctx, n.Name); err != nil {
			c.log.Warn("could not delete the stream of a failed join", "err", err)
		}
	}
	_, err := c.conn.Exec(ctx, `DELETE FROM pgactive.pgactive_nodes WHERE node_sysid = $1 AND node_timeline = $2 AND node_dboid = $3`,
		strconv.FormatUint(c.id.SysID, 10), c.id.Timeline, c.id.DBOID)
	if err != nil {
		c.log.Warn("could not delete the local node row of a failed join", "err", err)
	}
	return cause
}
