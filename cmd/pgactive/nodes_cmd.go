package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// nodeRow is a row of pgactive_nodes without its connection strings, which
// may hold credentials.
type nodeRow struct {
	Name     string  `json:"node_name"`
	SysID    string  `json:"node_sysid"`
	Timeline uint32  `json:"node_timeline"`
	DBOID    uint32  `json:"node_dboid"`
	Status   string  `json:"node_status"`
	Group    *string `json:"node_group"`
	SeqID    *int16  `json:"node_seq_id"`
	ReadOnly *bool   `json:"node_read_only"`
}

const nodesSQL = `SELECT node_name, node_sysid, node_timeline::int8, node_dboid::int8, node_status::text, node_group,
		node_seq_id, node_read_only
	FROM pgactive.pgactive_nodes ORDER BY node_name`

// nodeState names a value of pgactive_nodes.node_status.
func nodeState(status string) string {
	switch status {
	case "b":
		return "beginning"
	case "i":
		return "copying initial data"
	case "c":
		return "catching up"
	case "o":
		return "creating outbound"
	case "r":
		return "ready"
	case "k":
		return "detached"
	}
	return ""
}

// runNodes prints the members of the group as this node mirrors them.
func runNodes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseInspect("nodes", args, stderr, false, false)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	conn, err := connectInspect(ctx, o.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, nodesSQL)
	if err != nil {
		return explainSQL("pgactive_nodes", conn, err)
	}
	nodes, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (nodeRow, error) {
		var n nodeRow
		var timeline, dboid int64
		err := row.Scan(&n.Name, &n.SysID, &timeline, &dboid, &n.Status, &n.Group, &n.SeqID, &n.ReadOnly)
		n.Timeline, n.DBOID = uint32(timeline), uint32(dboid)
		return n, err
	})
	if err != nil {
		return explainSQL("pgactive_nodes", conn, err)
	}
	if o.JSON {
		if nodes == nil {
			nodes = []nodeRow{}
		}
		return printJSON(stdout, nodes)
	}
	table := make([][]string, 0, len(nodes))
	for _, n := range nodes {
		status := n.Status
		if s := nodeState(n.Status); s != "" {
			status += " (" + s + ")"
		}
		group, seq := "", ""
		if n.Group != nil {
			group = *n.Group
		}
		if n.SeqID != nil {
			seq = strconv.Itoa(int(*n.SeqID))
		}
		table = append(table, []string{n.Name, group, status, n.SysID, strconv.FormatUint(uint64(n.Timeline), 10),
			strconv.FormatUint(uint64(n.DBOID), 10), seq})
	}
	return printTable(stdout, []string{"NAME", "GROUP", "STATUS", "SYSID", "TIMELINE", "DBOID", "SEQ_ID"}, table)
}
