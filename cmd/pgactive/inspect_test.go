package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pgactive-go/pgactive/extension"
	"github.com/pgactive-go/pgactive/integration"
	"github.com/pgactive-go/pgactive/monitor"
)

func TestInspectUsage(t *testing.T) {
	t.Setenv("PGACTIVE_DSN", "")
	tests := []struct {
		name string
		run  func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) error
		args []string
		want string
	}{
		{"lag with both sources", lagCmd, []string{"--dsn", "dbname=x", "--http", "127.0.0.1:1"}, "either --dsn or --http"},
		{"conflicts over HTTP", conflictsCmd, []string{"--http", "127.0.0.1:1"}, "flag provided but not defined: -http"},
		{"nodes without a database", nodesCmd, nil, "no database given"},
		{"negative limit", conflictsCmd, []string{"--dsn", "dbname=x", "--limit", "-1"}, "--limit -1"},
		{"stray argument", lagCmd, []string{"--json", "extra"}, `unexpected argument "extra"`},
		{"bad DSN", nodesCmd, []string{"--dsn", "host=x password=hunter2 port=notaport"}, "not a valid connection string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := tt.run(context.Background(), tt.args, &out, &errOut)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a usage error", err)
			}
			if msg := err.Error() + errOut.String(); !strings.Contains(msg, tt.want) || strings.Contains(msg, "hunter2") {
				t.Errorf("got %q, want it to say %q and hold no password", msg, tt.want)
			}
		})
	}
}

func lagCmd(ctx context.Context, args []string, out, errOut *bytes.Buffer) error {
	return runLag(ctx, args, out, errOut)
}

func conflictsCmd(ctx context.Context, args []string, out, errOut *bytes.Buffer) error {
	return runConflicts(ctx, args, out, errOut)
}

func nodesCmd(ctx context.Context, args []string, out, errOut *bytes.Buffer) error {
	return runNodes(ctx, args, out, errOut)
}

func TestLagOverHTTP(t *testing.T) {
	pid := int32(4711)
	rows := []monitor.Row{
		{OriginNode: "node1", TargetNode: "node2", NodeName: "node2", NodeSysID: "22", Active: false,
			PendingMessages: 20, PendingWALToApply: 7048, LagSeconds: 12.34, SentLSN: 0x1996D90, FlushLSN: 0x1990000,
			UpdatedAt: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)},
		{OriginNode: "node2", TargetNode: "node1", NodeName: "node1", NodeSysID: "11", Active: true, ActivePID: &pid,
			UpdatedAt: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)},
	}
	down := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/lag" || down {
			http.Error(w, "not here", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(rows)
	}))
	defer srv.Close()
	ctx := context.Background()

	var out, errOut bytes.Buffer
	if err := runLag(ctx, []string{"--http", strings.TrimPrefix(srv.URL, "http://")}, &out, &errOut); err != nil {
		t.Fatalf("lag --http host:port: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ORIGIN") || lines[3] != "(2 rows)" {
		t.Fatalf("table:\n%s", out.String())
	}
	for _, want := range [][]string{{"node1", "node2", "false", "20", "7048", "12.3", "0/1996D90", "0/1990000"}, {"node2", "node1", "true", "4711"}} {
		i := 1
		if want[0] == "node2" {
			i = 2
		}
		if got := strings.Fields(lines[i]); !containsInOrder(got, want) {
			t.Errorf("table row %d: got %q, want %q in order", i, got, want)
		}
	}

	out.Reset()
	if err := runLag(ctx, []string{"--http", srv.URL + "/", "--json"}, &out, &errOut); err != nil {
		t.Fatalf("lag --json: %v", err)
	}
	var back []monitor.Row
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatalf("lag --json: %v\n%s", err, out.String())
	}
	if len(back) != 2 || back[0].PendingMessages != 20 || back[0].SentLSN != 0x1996D90 || *back[1].ActivePID != 4711 {
		t.Errorf("lag --json: got %+v", back)
	}

	down = true
	if err := runLag(ctx, []string{"--http", srv.URL}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("lag from an endpoint answering 503: got %v", err)
	}
}

func containsInOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestInspectSQL reads lag, nodes and conflicts from a database holding the
// pgactive schema, as an agent fills it.
func TestInspectSQL(t *testing.T) {
	p := integration.StartPostgres(t)
	p.CreateDatabase(t, "app")
	dsn := p.DSN("app")
	ctx := context.Background()
	var out, errOut bytes.Buffer

	err := runNodes(ctx, []string{"--dsn", dsn}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "CREATE EXTENSION pgactive") || strings.Contains(err.Error(), p.Password) {
		t.Fatalf("nodes without the schema: got %v, want a hint to create the extension", err)
	}

	conn := p.Connect(t, "app")
	if err := extension.CreateSchema(ctx, conn); err != nil {
		t.Fatal(err)
	}
	p.Exec(t, "app", `INSERT INTO pgactive.pgactive_lag (origin_node, target_node, node_name, node_sysid, application_name,
			slot_name, active, active_pid, pending_wal_decoding, pending_wal_to_apply, restart_lsn, confirmed_flush_lsn,
			sent_lsn, write_lsn, flush_lsn, replay_lsn, pending_messages, lag_seconds, updated_at, last_error)
		VALUES ('node1', 'node2', 'node2', '22', 'pgactive:11:send', 'pgactive_5_11', true, 4711, 0, 2048, '0/100', '0/200',
			'0/1F00', '0/1800', '0/1700', '0/1700', 3, 2.5, now(), e'table "public"."t" does not exist on node "node2":\tcreate it'),
		('node2', 'node1', 'node1', '11', 'pgactive:22:send', 'pgactive_5_22', true, NULL, 0, 0, '0/100', '0/200',
			'0/300', '0/300', '0/300', '0/300', 0, 0, now() - interval '1 minute', '')`)
	p.Exec(t, "app", `INSERT INTO pgactive.pgactive_nodes (node_sysid, node_timeline, node_dboid, node_status, node_name, node_dsn, node_group, node_seq_id)
		VALUES ('11', 1, 5, 'r', 'node1', 'host=a password=topsecret dbname=app', 'app', 0),
		('22', 1, 5, 'c', 'node2', 'host=b password=topsecret dbname=app', 'app', 1)`)
	p.Exec(t, "app", `INSERT INTO pgactive.pgactive_conflict_history (local_node_sysid, local_conflict_xid, local_conflict_lsn,
			local_conflict_time, object_schema, object_name, remote_node_sysid, remote_txid, remote_commit_time,
			remote_commit_lsn, conflict_type, conflict_resolution, local_tuple, remote_tuple, error_message)
		VALUES ('11', '700', '0/1DCBEA8', '2023-08-31 12:22:10+00', 'inventory', 'products', '22', '738',
			'2023-08-31 12:23:10+00', '0/1DCDBF0', 'update_update', 'last_update_wins_keep_remote',
			'{"product_name":"sapone"}', '{"product_name":"savon"}', NULL),
		('11', '701', '0/1DCC000', '2023-08-31 12:30:00+00', 'public', 'items', '22', '740',
			'2023-08-31 12:29:00+00', '0/1DCE000', 'unhandled_tx_abort', 'unhandled_tx_abort', NULL, NULL,
			e'duplicate key value violates unique constraint "items_pkey"\nDETAIL: more')`)

	out.Reset()
	if err := runLag(ctx, []string{"--dsn", dsn, "--json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var rows []monitor.Row
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("lag --json: %v\n%s", err, out.String())
	}
	if len(rows) != 2 {
		t.Fatalf("lag --json: got %d rows, want 2:\n%s", len(rows), out.String())
	}
	if r := rows[0]; r.OriginNode != "node1" || r.TargetNode != "node2" || !r.Active || *r.ActivePID != 4711 ||
		r.PendingWALToApply != 2048 || r.PendingMessages != 3 || r.LagSeconds != 2.5 || r.SentLSN != 0x1F00 || r.FlushLSN != 0x1700 ||
		r.LastError != "table \"public\".\"t\" does not exist on node \"node2\":\tcreate it" {
		t.Errorf("row node1 → node2: got %+v", r)
	}
	if r := rows[1]; r.OriginNode != "node2" || r.Active || r.ActivePID != nil || r.LastError != "" {
		t.Errorf("row node2 → node1, a minute old: got %+v, want not active", r)
	}
	out.Reset()
	if err := runLag(ctx, []string{"--dsn", dsn}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "PENDING_WAL_TO_APPLY") || !strings.Contains(out.String(), "(2 rows)") ||
		!strings.Contains(out.String(), "LAST_ERROR") || !strings.Contains(out.String(), `does not exist on node "node2": create it`) {
		t.Errorf("lag table:\n%s", out.String())
	}

	out.Reset()
	if err := runNodes(ctx, []string{"--dsn", dsn}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "r (ready)") || !strings.Contains(s, "c (catching up)") || strings.Contains(s, "topsecret") {
		t.Errorf("nodes table:\n%s", s)
	}
	out.Reset()
	if err := runNodes(ctx, []string{"--dsn", dsn, "--json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var nodes []nodeRow
	if err := json.Unmarshal(out.Bytes(), &nodes); err != nil || len(nodes) != 2 || nodes[1].Status != "c" || *nodes[1].SeqID != 1 {
		t.Errorf("nodes --json: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "topsecret") || strings.Contains(out.String(), "dsn") {
		t.Errorf("nodes --json shows connection strings:\n%s", out.String())
	}

	out.Reset()
	if err := runConflicts(ctx, []string{"--dsn", dsn}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[1], "inventory.products") || !strings.Contains(lines[1], "last_update_wins_keep_remote") ||
		!strings.Contains(lines[2], `duplicate key value violates unique constraint "items_pkey"`) || strings.Contains(out.String(), "DETAIL") {
		t.Errorf("conflicts table:\n%s", out.String())
	}
	out.Reset()
	if err := runConflicts(ctx, []string{"--dsn", dsn, "--json", "--limit", "1"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var history []map[string]any
	if err := json.Unmarshal(out.Bytes(), &history); err != nil || len(history) != 1 {
		t.Fatalf("conflicts --json --limit 1: %v\n%s", err, out.String())
	}
	if history[0]["conflict_type"] != "unhandled_tx_abort" || history[0]["object_name"] != "items" {
		t.Errorf("conflicts --limit 1: got %v, want the most recent (unhandled_tx_abort on items)", history[0])
	}
}
