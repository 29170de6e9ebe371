package monitor

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgactive-go/pgactive/apply"
	"github.com/pgactive-go/pgactive/capture"
	"github.com/pgactive-go/pgactive/stream"
)

// fakeAgent holds real workers that never run; tests set their statuses.
type fakeAgent struct {
	c  *capture.Capturer
	ws map[string]*apply.Worker
}

var _ Agent = (*fakeAgent)(nil)

func (f *fakeAgent) Capture() *capture.Capturer         { return f.c }
func (f *fakeAgent) Appliers() map[string]*apply.Worker { return f.ws }

func newFakeAgent(t *testing.T, group, node string, origins ...string) *fakeAgent {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	c, err := capture.New(capture.Config{Group: group, Node: node, SysID: 1, DSN: "dbname=x", Slot: "s"}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAgent{c: c, ws: map[string]*apply.Worker{}}
	for _, o := range origins {
		w, err := apply.New(apply.Config{Group: group, Origin: o, OriginSysID: 2, OriginDBOID: 5, Target: node, TargetSysID: 1, TargetDBOID: 5, DSN: "dbname=x"},
			&stream.Layout{Group: group}, &nats.Conn{}, log)
		if err != nil {
			t.Fatal(err)
		}
		f.ws[o] = w
	}
	return f
}

// fakeMonitor is a monitor of a fake agent that has read rows.
func fakeMonitor(group, node string, a Agent, rows []Row, at time.Time) *Monitor {
	m := &Monitor{cfg: Config{Group: group, Node: node, Agent: a, StaleAfter: DefaultStaleAfter}}
	m.cluster, m.clusterAt, m.ready = rows, at, true
	return m
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// exampleGroup is a two-node group app served by one process: node1 is
// streaming, node2 is behind and its path row stale.
func exampleGroup(t *testing.T) []*Monitor {
	now := time.Now()
	pid := int32(321)
	rows := []Row{
		{OriginNode: "node1", TargetNode: "node2", NodeName: "node2", NodeSysID: "2", SlotName: "pgactive_5_1",
			ApplicationName: "pgactive:1:send", Active: true, ActivePID: &pid, PendingWALDecoding: 10, PendingWALToApply: 2048,
			PendingMessages: 3, LagSeconds: 4.5, SentLSN: 0x2000, FlushLSN: 0x1800, UpdatedAt: now.Add(-time.Second),
			LastError: `table "public"."t" does not exist on node "node2": create it`},
		{OriginNode: "node2", TargetNode: "node1", NodeName: "node1", NodeSysID: "1", SlotName: "pgactive_5_2",
			ApplicationName: "pgactive:2:send", Active: true, UpdatedAt: now.Add(-time.Minute)},
	}
	a1 := newFakeAgent(t, "app", "node1", "node2")
	a1.c.Status().Running.Store(true)
	a1.c.Status().Transactions.Add(7)
	a1.c.Status().Changes.Add(70)
	a1.c.Status().Bytes.Add(7000)
	a1.c.Status().Messages.Add(3)
	w := a1.ws["node2"].Status()
	w.Running.Store(true)
	w.Transactions.Add(5)
	w.Changes.Add(50)
	w.Errors.Add(1)
	w.Parked.Add(2)
	w.AppliedTime.Store(now.UnixMicro())
	a2 := newFakeAgent(t, "app", "node2", "node1")
	return []*Monitor{
		fakeMonitor("app", "node1", a1, rows, now.Add(-time.Second)),
		fakeMonitor("app", "node2", a2, rows[:1], now.Add(-5*time.Second)), // older read: not shown
	}
}

func TestHandlerLag(t *testing.T) {
	ms := exampleGroup(t)
	h := NewHandler(HandlerConfig{Monitors: func() []*Monitor { return ms }})
	code, body := get(t, h, "/lag")
	if code != http.StatusOK {
		t.Fatalf("GET /lag: got %d, want 200: %s", code, body)
	}
	var rows []Row
	if err := json.Unmarshal([]byte(body), &rows); err != nil {
		t.Fatalf("GET /lag: %v: %s", err, body)
	}
	if len(rows) != 2 {
		t.Fatalf("GET /lag: got %d rows, want 2 (the freshest read of the group): %s", len(rows), body)
	}
	if r := rows[0]; r.OriginNode != "node1" || !r.Active || r.PendingMessages != 3 || r.SentLSN != 0x2000 || *r.ActivePID != 321 ||
		!strings.Contains(r.LastError, "does not exist") {
		t.Errorf("row node1 → node2: got %+v", r)
	}
	if r := rows[1]; r.OriginNode != "node2" || r.Active {
		t.Errorf("row node2 → node1, a minute old: got active %v, want false", r.Active)
	}
	for _, col := range []string{`"node_name"`, `"node_sysid"`, `"application_name"`, `"slot_name"`, `"active"`, `"active_pid"`,
		`"pending_wal_decoding"`, `"pending_wal_to_apply"`, `"restart_lsn"`, `"confirmed_flush_lsn"`, `"sent_lsn": "0/2000"`,
		`"write_lsn"`, `"flush_lsn": "0/1800"`, `"replay_lsn"`, `"pending_messages"`, `"lag_seconds"`, `"origin_node"`,
		`"target_node"`, `"updated_at"`, `"last_error": ""`} {
		if !strings.Contains(body, col) {
			t.Errorf("GET /lag: no %s in %s", col, body)
		}
	}
	if code, body := get(t, NewHandler(HandlerConfig{Monitors: func() []*Monitor { return nil }}), "/lag"); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("GET /lag without agents: got %d %s, want 200 []", code, body)
	}
}

func scrapeHandler(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, h, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: got %d: %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range f.GetMetric() {
		var got []string
		for _, l := range m.GetLabel() {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		if strings.Join(got, ",") == strings.Join(labels, ",") {
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s{%s}", name, strings.Join(labels, ","))
	return 0
}

func TestHandlerMetrics(t *testing.T) {
	ms := exampleGroup(t)
	fams := scrapeHandler(t, NewHandler(HandlerConfig{Monitors: func() []*Monitor { return ms }}))
	path := []string{"group=app", "origin=node1", "target=node2"}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pgactive_lag_pending_wal_decoding_bytes", path, 10},
		{"pgactive_lag_pending_wal_to_apply_bytes", path, 2048},
		{"pgactive_lag_pending_messages", path, 3},
		{"pgactive_lag_seconds", path, 4.5},
		{"pgactive_lag_active", path, 1},
		{"pgactive_lag_active", []string{"group=app", "origin=node2", "target=node1"}, 0},
		{"pgactive_apply_failing", path, 1},
		{"pgactive_apply_failing", []string{"group=app", "origin=node2", "target=node1"}, 0},
		{"pgactive_apply_running", []string{"group=app", "node=node1", "origin=node2"}, 1},
		{"pgactive_apply_running", []string{"group=app", "node=node2", "origin=node1"}, 0},
		{"pgactive_apply_transactions_total", []string{"group=app", "node=node1", "origin=node2"}, 5},
		{"pgactive_apply_changes_total", []string{"group=app", "node=node1", "origin=node2"}, 50},
		{"pgactive_apply_errors_total", []string{"group=app", "node=node1", "origin=node2"}, 1},
		{"pgactive_apply_parked_messages_total", []string{"group=app", "node=node1", "origin=node2"}, 2},
		{"pgactive_apply_conflicts_total", []string{"group=app", "node=node1", "origin=node2", "type=update_update"}, 0},
		{"pgactive_capture_running", []string{"group=app", "node=node1"}, 1},
		{"pgactive_capture_transactions_total", []string{"group=app", "node=node1"}, 7},
		{"pgactive_capture_changes_total", []string{"group=app", "node=node1"}, 70},
		{"pgactive_capture_bytes_total", []string{"group=app", "node=node1"}, 7000},
		{"pgactive_capture_messages_total", []string{"group=app", "node=node1"}, 3},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s{%v}: got %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := len(fams["pgactive_apply_conflicts_total"].GetMetric()); got != 2*len(conflictTypes()) {
		t.Errorf("conflict series: got %d, want %d (every type of both workers)", got, 2*len(conflictTypes()))
	}
	if got := fams["pgactive_apply_transactions_total"].GetType(); got != dto.MetricType_COUNTER {
		t.Errorf("pgactive_apply_transactions_total is a %v, want a counter", got)
	}
	// The handler's registry is its own: nothing went to the global one.
	global, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range global {
		if strings.HasPrefix(f.GetName(), "pgactive_") {
			t.Errorf("%s is in the global registry", f.GetName())
		}
	}
}

func TestHandlerHealth(t *testing.T) {
	ms := exampleGroup(t)
	h := NewHandler(HandlerConfig{Monitors: func() []*Monitor { return ms }, Agents: 2})
	code, body := get(t, h, "/healthz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("GET /healthz with node2's workers stopped: got %d, want 503: %s", code, body)
	}
	var hl Health
	if err := json.Unmarshal([]byte(body), &hl); err != nil {
		t.Fatal(err)
	}
	want := []string{"node node2: capture", "node node2: apply of node1"}
	if hl.Status != "failing" || strings.Join(hl.NotRunning, "|") != strings.Join(want, "|") {
		t.Errorf("GET /healthz: got %+v, want failing with %v", hl, want)
	}
	ms[1].Agent().Capture().Status().Running.Store(true)
	ms[1].Agent().Appliers()["node1"].Status().Running.Store(true)
	if code, body := get(t, h, "/healthz"); code != http.StatusOK || !strings.Contains(body, `"status": "ok"`) {
		t.Errorf("GET /healthz with every worker running: got %d, want 200: %s", code, body)
	}
}

func TestHandlerReady(t *testing.T) {
	ms := exampleGroup(t)
	ms[1].ready = false
	var set Set
	set.Add(ms[0])
	h := NewHandler(HandlerConfig{Monitors: set.List, Agents: 2})
	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz with 1 of 2 agents: got %d, want 503: %s", code, body)
	}
	set.Add(ms[1])
	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"node2"`) {
		t.Errorf("GET /readyz with node2 not ready: got %d, want 503 naming node2: %s", code, body)
	}
	ms[1].ready = true
	if code, body := get(t, h, "/readyz"); code != http.StatusOK {
		t.Errorf("GET /readyz with both ready: got %d, want 200: %s", code, body)
	}
	set.Remove(ms[0])
	if got := set.List(); len(got) != 1 || got[0] != ms[1] {
		t.Errorf("set after Remove: got %v", got)
	}
	var none *Set
	none.Add(ms[0]) // a nil set ignores agents
	if none.List() != nil {
		t.Error("nil set lists monitors")
	}
}

func TestHandlerMethods(t *testing.T) {
	h := NewHandler(HandlerConfig{Monitors: func() []*Monitor { return nil }})
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/lag", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /lag: got %d, want 405", resp.StatusCode)
	}
	if code, _ := get(t, h, "/nothing"); code != http.StatusNotFound {
		t.Errorf("GET /nothing: got %d, want 404", code)
	}
}
