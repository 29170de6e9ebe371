package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgactive-go/pgactive/monitor"
)

// runLag prints the lag of every path of the group: from
// pgactive_get_replication_lag_info() with --dsn, from an agent's GET /lag
// with --http.
func runLag(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseInspect("lag", args, stderr, true, false)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	var rows []monitor.Row
	if o.DSN != "" {
		rows, err = lagFromSQL(ctx, o.DSN)
	} else {
		rows, err = lagFromHTTP(ctx, o.HTTP)
	}
	if err != nil {
		return err
	}
	if o.JSON {
		if rows == nil {
			rows = []monitor.Row{}
		}
		return printJSON(stdout, rows)
	}
	table := make([][]string, 0, len(rows))
	for _, r := range rows {
		pid := ""
		if r.ActivePID != nil {
			pid = strconv.Itoa(int(*r.ActivePID))
		}
		table = append(table, []string{r.OriginNode, r.NodeName, strconv.FormatBool(r.Active), pid,
			strconv.FormatInt(r.PendingMessages, 10), strconv.FormatInt(r.PendingWALDecoding, 10),
			strconv.FormatInt(r.PendingWALToApply, 10), strconv.FormatFloat(r.LagSeconds, 'f', 1, 64),
			r.SentLSN.String(), r.FlushLSN.String(), strings.Join(strings.Fields(r.LastError), " ")})
	}
	return printTable(stdout, []string{"ORIGIN", "TARGET", "ACTIVE", "PID", "PENDING_MESSAGES", "PENDING_WAL_DECODING",
		"PENDING_WAL_TO_APPLY", "LAG_SECONDS", "SENT_LSN", "FLUSH_LSN", "LAST_ERROR"}, table)
}

// lagSQL reads pgactive_get_replication_lag_info() with each row's origin
// node and update time, which the function does not return.
const lagSQL = `SELECT l.origin_node, l.target_node, f.node_name, f.node_sysid, f.application_name, f.slot_name,
		f.active, f.active_pid, f.pending_wal_decoding, f.pending_wal_to_apply,
		f.restart_lsn::text, f.confirmed_flush_lsn::text, f.sent_lsn::text, f.write_lsn::text,
		f.flush_lsn::text, f.replay_lsn::text, f.pending_messages, f.lag_seconds, l.updated_at, f.last_error
	FROM pgactive.pgactive_get_replication_lag_info() f
	LEFT JOIN pgactive.pgactive_lag l
		ON coalesce(l.node_name, l.target_node) = f.node_name AND l.slot_name IS NOT DISTINCT FROM f.slot_name`

func lagFromSQL(ctx context.Context, dsn string) ([]monitor.Row, error) {
	conn, err := connectInspect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, lagSQL)
	if err != nil {
		return nil, explainSQL("pgactive_get_replication_lag_info()", conn, err)
	}
	out, err := pgx.CollectRows(rows, scanLag)
	if err != nil {
		return nil, explainSQL("pgactive_get_replication_lag_info()", conn, err)
	}
	return out, nil
}

func scanLag(row pgx.CollectableRow) (monitor.Row, error) {
	var r monitor.Row
	var origin, target, name, sysid, app, slot, lastErr *string
	var decoding, toApply, pending *int64
	var lag *float64
	var updated *time.Time
	var lsns [6]*string
	err := row.Scan(&origin, &target, &name, &sysid, &app, &slot, &r.Active, &r.ActivePID, &decoding, &toApply,
		&lsns[0], &lsns[1], &lsns[2], &lsns[3], &lsns[4], &lsns[5], &pending, &lag, &updated, &lastErr)
	if err != nil {
		return r, err
	}
	str := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	num := func(n *int64) int64 {
		if n == nil {
			return 0
		}
		return *n
	}
	r.OriginNode, r.TargetNode, r.NodeName, r.NodeSysID = str(origin), str(target), str(name), str(sysid)
	r.ApplicationName, r.SlotName, r.LastError = str(app), str(slot), str(lastErr)
	r.PendingWALDecoding, r.PendingWALToApply, r.PendingMessages = num(decoding), num(toApply), num(pending)
	if lag != nil {
		r.LagSeconds = *lag
	}
	if updated != nil {
		r.UpdatedAt = updated.UTC()
	}
	for i, dst := range []*monitor.LSN{&r.RestartLSN, &r.ConfirmedFlushLSN, &r.SentLSN, &r.WriteLSN, &r.FlushLSN, &r.ReplayLSN} {
		if lsns[i] != nil {
			v, err := pglogrepl.ParseLSN(*lsns[i])
			if err != nil {
				return r, fmt.Errorf("LSN %q: %w", *lsns[i], err)
			}
			*dst = monitor.LSN(v)
		}
	}
	return r, nil
}

// lagURL turns an --http address (host:port or a URL) into the /lag URL.
func lagURL(addr string) string {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/") + "/lag"
}

func lagFromHTTP(ctx context.Context, addr string) ([]monitor.Row, error) {
	url := lagURL(addr)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, usagef("lag: --http %q is not a valid address: %v", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s (is `pgactive run` serving --http there?): %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	var rows []monitor.Row
	if err := json.Unmarshal(body, &rows); err != nil {
		return nil, fmt.Errorf("GET %s: not a list of lag rows: %w", url, err)
	}
	return rows, nil
}
