package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgactive-go/pgactive/monitor"
	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

var _ monitor.Agent = (*node.Agent)(nil)

// runningMonitor is a monitor started by startMonitor.
type runningMonitor struct {
	*monitor.Monitor
	cancel context.CancelFunc
	done   chan error
}

// startMonitor runs the monitor of agent a (configured as cfg) until Stop
// or the end of the test.
func startMonitor(t *testing.T, natsURL string, a *Agent, cfg node.Config) *runningMonitor {
	t.Helper()
	_, js := ConnectNATS(t, natsURL)
	m, err := monitor.New(monitor.Config{Group: cfg.Group, Node: cfg.Node, DSN: cfg.DSN, JS: js, Agent: a.Agent,
		Interval: time.Second}, TestLogger())
	if err != nil {
		t.Fatalf("new monitor of %s: %v", cfg.Node, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rm := &runningMonitor{Monitor: m, cancel: cancel, done: make(chan error, 1)}
	go func() { rm.done <- m.Run(ctx) }()
	t.Cleanup(rm.Stop)
	return rm
}

// Stop stops the monitor and waits for it.
func (m *runningMonitor) Stop() {
	m.cancel()
	select {
	case err := <-m.done:
		m.done <- err
	case <-time.After(30 * time.Second):
	}
}

// lagView is one path's lag as one of the three outputs shows it.
type lagView struct {
	Source             string
	Active             bool
	PendingMessages    int64
	PendingWALToApply  int64
	PendingWALDecoding int64
	LagSeconds         float64
}

func (v lagView) String() string {
	return fmt.Sprintf("%s: active=%v pending_messages=%d pending_wal_to_apply=%d pending_wal_decoding=%d lag_seconds=%.1f",
		v.Source, v.Active, v.PendingMessages, v.PendingWALToApply, v.PendingWALDecoding, v.LagSeconds)
}

// sqlLag reads the row of the path to target from pgactive_get_replication_lag_info().
func sqlLag(conn *pgx.Conn, target string) (lagView, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	v := lagView{Source: "SQL"}
	var app, slot, sent, flush string
	err := conn.QueryRow(ctx, `SELECT active, pending_messages, pending_wal_to_apply, pending_wal_decoding, lag_seconds,
			application_name, slot_name, sent_lsn::text, flush_lsn::text
		FROM pgactive.pgactive_get_replication_lag_info() WHERE node_name = $1`, target).
		Scan(&v.Active, &v.PendingMessages, &v.PendingWALToApply, &v.PendingWALDecoding, &v.LagSeconds, &app, &slot, &sent, &flush)
	if err != nil {
		return v, fmt.Errorf("SQL lag row of %s: %w", target, err)
	}
	if !strings.HasPrefix(app, "pgactive:") || !strings.HasSuffix(app, ":send") || !strings.HasPrefix(slot, "pgactive_") {
		return v, fmt.Errorf("SQL lag row of %s: application_name %q, slot_name %q", target, app, slot)
	}
	return v, nil
}

// httpGet returns the status and body of url.
func httpGet(url string) (int, []byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// httpLag reads the path origin → target from GET /lag.
func httpLag(base, origin, target string) (lagView, error) {
	v := lagView{Source: "/lag"}
	code, body, err := httpGet(base + "/lag")
	if err != nil || code != http.StatusOK {
		return v, fmt.Errorf("GET /lag: %d %v", code, err)
	}
	var rows []monitor.Row
	if err := json.Unmarshal(body, &rows); err != nil {
		return v, fmt.Errorf("GET /lag: %w: %s", err, body)
	}
	for _, r := range rows {
		if r.OriginNode == origin && r.TargetNode == target {
			v.Active, v.PendingMessages, v.PendingWALToApply = r.Active, r.PendingMessages, r.PendingWALToApply
			v.PendingWALDecoding, v.LagSeconds = r.PendingWALDecoding, r.LagSeconds
			return v, nil
		}
	}
	return v, fmt.Errorf("GET /lag: no row %s → %s in %s", origin, target, body)
}

// scrape parses GET /metrics with the Prometheus text parser.
func scrape(base string) (map[string]*dto.MetricFamily, error) {
	code, body, err := httpGet(base + "/metrics")
	if err != nil || code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d %v", code, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return fams, nil
}

// metricValue is the value of family name's series with exactly labels.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if len(got) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			match = match && got[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// metricsLag reads the path origin → target from GET /metrics.
func metricsLag(base, group, origin, target string) (lagView, error) {
	v := lagView{Source: "/metrics"}
	fams, err := scrape(base)
	if err != nil {
		return v, err
	}
	labels := map[string]string{"group": group, "origin": origin, "target": target}
	get := func(name string) float64 {
		x, ok := metricValue(fams, name, labels)
		if !ok && err == nil {
			err = fmt.Errorf("/metrics has no %s%v", name, labels)
		}
		return x
	}
	v.Active = get("pgactive_lag_active") == 1
	v.PendingMessages = int64(get("pgactive_lag_pending_messages"))
	v.PendingWALToApply = int64(get("pgactive_lag_pending_wal_to_apply_bytes"))
	v.PendingWALDecoding = int64(get("pgactive_lag_pending_wal_decoding_bytes"))
	v.LagSeconds = get("pgactive_lag_seconds")
	return v, err
}

// waitLag waits until the path node1 → node2 satisfies check in SQL on
// node1, in /lag and in /metrics, and returns the three views.
func waitLag(t *testing.T, what string, conn *pgx.Conn, base string, check func(v lagView) error) []lagView {
	t.Helper()
	var views []lagView
	WaitFor(t, 90*time.Second, what, func() (bool, error) {
		views = views[:0]
		var errs []error
		for _, read := range []func() (lagView, error){
			func() (lagView, error) { return sqlLag(conn, "node2") },
			func() (lagView, error) { return httpLag(base, "node1", "node2") },
			func() (lagView, error) { return metricsLag(base, "app", "node1", "node2") },
		} {
			v, err := read()
			if err == nil {
				err = check(v)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", v, err))
			}
			views = append(views, v)
		}
		return len(errs) == 0, errors.Join(errs...)
	})
	for _, v := range views {
		t.Logf("%s: %s", what, v)
	}
	return views
}

func caughtUp(v lagView) error {
	if !v.Active || v.PendingMessages != 0 || v.PendingWALToApply != 0 || v.LagSeconds != 0 {
		return errors.New("not caught up")
	}
	return nil
}

// TestLagWhileTargetStopped stops node2's agent and writes on node1: the
// path node1 → node2 turns inactive and its lag grows in messages, bytes and
// seconds, as SQL on node1, /lag and /metrics show; once node2's agent is
// back, all of it returns to zero and active.
func TestLagWhileTargetStopped(t *testing.T) {
	ns, pgs, agents, conns := startNodes(t, 2, itemsSchema)
	cfgs := make([]node.Config, 2)
	for i := range cfgs {
		createSchema(t, conns[i])
		cfgs[i] = node.Config{Group: "app", Node: fmt.Sprintf("node%d", i+1), DSN: pgs[i].DSN("app")}
	}
	set := &monitor.Set{}
	mons := []*runningMonitor{startMonitor(t, ns.URL(), agents[0], cfgs[0]), startMonitor(t, ns.URL(), agents[1], cfgs[1])}
	set.Add(mons[0].Monitor)
	set.Add(mons[1].Monitor)
	srv := httptest.NewServer(monitor.NewHandler(monitor.HandlerConfig{Monitors: set.List, Agents: 2, Log: TestLogger()}))
	t.Cleanup(srv.Close)
	a := conns[0]

	mustExec(t, a, `INSERT INTO items SELECT g, 'before' FROM generate_series(1, 10) g`)
	WaitSameRows(t, 30*time.Second, "items", a, conns[1])
	waitLag(t, "node1 → node2 caught up", a, srv.URL, caughtUp)
	waitStatus(t, srv.URL+"/healthz", http.StatusOK, `"status": "ok"`)
	waitStatus(t, srv.URL+"/readyz", http.StatusOK, `"ready": true`)
	if got := count(t, a, `SELECT count(*) FROM pgactive.pgactive_get_replication_lag_info()`); got != 2 {
		t.Fatalf("lag rows on node1: got %d, want 2 (both paths of the group)", got)
	}

	mons[1].Stop()
	agents[1].Stop()
	for i := 11; i <= 30; i++ {
		execPublished(t, a, agents[0], `INSERT INTO items VALUES ($1, 'while node2 is stopped')`, i)
	}
	first := waitLag(t, "node1 → node2 inactive and behind", a, srv.URL, func(v lagView) error {
		if v.Active || v.PendingMessages < 20 || v.PendingWALToApply <= 0 || v.LagSeconds < 1 {
			return errors.New("not yet inactive with 20 messages, some bytes and a second behind")
		}
		return nil
	})
	execPublished(t, a, agents[0], `INSERT INTO items SELECT g, 'more' FROM generate_series(31, 40) g`)
	execPublished(t, a, agents[0], `UPDATE items SET n = n + 1 WHERE id <= 20`)
	waitLag(t, "node1 → node2 lag growing", a, srv.URL, func(v lagView) error {
		var f lagView
		for _, x := range first {
			if x.Source == v.Source {
				f = x
			}
		}
		if v.Active || v.PendingMessages < f.PendingMessages+2 || v.PendingWALToApply <= f.PendingWALToApply || v.LagSeconds <= f.LagSeconds {
			return fmt.Errorf("not grown past %s", f)
		}
		return nil
	})
	// The stopped agent's workers are not running: the process serving it
	// says so.
	waitStatus(t, srv.URL+"/healthz", http.StatusServiceUnavailable, "node node2: capture", "node node2: apply of node1")
	checkNoSecrets(t, ns.URL(), srv.URL, pgs...)

	agents[1] = StartAgent(t, ns.URL(), cfgs[1])
	WaitAppliers(t, agents[1], "node1")
	set.Remove(mons[1].Monitor)
	mons[1] = startMonitor(t, ns.URL(), agents[1], cfgs[1])
	set.Add(mons[1].Monitor)
	WaitSameRows(t, time.Minute, "items", a, conns[1])
	waitLag(t, "node1 → node2 caught up again", a, srv.URL, caughtUp)
	var sent, flush, replay string
	if err := a.QueryRow(context.Background(), `SELECT sent_lsn::text, flush_lsn::text, replay_lsn::text
		FROM pgactive.pgactive_get_replication_lag_info() WHERE node_name = 'node2'`).Scan(&sent, &flush, &replay); err != nil {
		t.Fatal(err)
	}
	if sent != flush || flush != replay {
		t.Errorf("caught up: sent %s, flush %s, replay %s, want equal", sent, flush, replay)
	}
	waitStatus(t, srv.URL+"/healthz", http.StatusOK, `"status": "ok"`)
	waitStatus(t, srv.URL+"/readyz", http.StatusOK, `"ready": true`)
	// The restarted node2 applied the backlog: 30 transactions.
	WaitFor(t, 30*time.Second, "apply counters on /metrics", func() (bool, error) {
		fams, err := scrape(srv.URL)
		if err != nil {
			return false, err
		}
		txns, _ := metricValue(fams, "pgactive_apply_transactions_total", map[string]string{"group": "app", "node": "node2", "origin": "node1"})
		captured, _ := metricValue(fams, "pgactive_capture_transactions_total", map[string]string{"group": "app", "node": "node1"})
		conflicts, ok := metricValue(fams, "pgactive_apply_conflicts_total", map[string]string{"group": "app", "node": "node2", "origin": "node1", "type": "update_update"})
		if txns < 22 || captured < 23 || !ok || conflicts != 0 {
			return false, fmt.Errorf("apply transactions %v (want ≥ 22), capture transactions %v (want ≥ 23), update_update conflicts %v %v (want 0)", txns, captured, conflicts, ok)
		}
		// Every transaction counted is in the delay histograms too.
		delays := map[string]float64{}
		delays["captured"], _ = metricValue(fams, "pgactive_capture_delay_seconds", map[string]string{"group": "app", "node": "node1"})
		for _, stage := range []string{"delivered", "committed"} {
			delays[stage], _ = metricValue(fams, "pgactive_apply_delay_seconds", map[string]string{"group": "app", "node": "node2", "origin": "node1", "stage": stage})
		}
		if delays["captured"] != captured || delays["committed"] != txns || delays["delivered"] < txns {
			return false, fmt.Errorf("delay observations %v, want captured = %v, delivered ≥ committed = %v", delays, captured, txns)
		}
		return true, nil
	})
	WaitFor(t, 30*time.Second, "pgactive_get_stats() on node2", func() (bool, error) {
		var commits int64
		err := conns[1].QueryRow(context.Background(), `SELECT coalesce(sum(nr_commit), 0)::int8 FROM pgactive.pgactive_get_stats()`).Scan(&commits)
		return err == nil && commits >= 22, fmt.Errorf("nr_commit %d (want ≥ 22), %v", commits, err)
	})
}

// waitStatus waits until url answers code with a body holding every one of want.
func waitStatus(t *testing.T, url string, code int, want ...string) {
	t.Helper()
	WaitFor(t, 30*time.Second, fmt.Sprintf("%s answering %d", url, code), func() (bool, error) {
		got, body, err := httpGet(url)
		if err != nil {
			return false, err
		}
		if got != code {
			return false, fmt.Errorf("got %d: %s", got, body)
		}
		for _, w := range want {
			if !strings.Contains(string(body), w) {
				return false, fmt.Errorf("body without %q: %s", w, body)
			}
		}
		return true, nil
	})
}

// checkNoSecrets fails the test if a password of pgs shows in the group's
// bucket or the HTTP endpoint.
func checkNoSecrets(t *testing.T, natsURL, base string, pgs ...*Postgres) {
	t.Helper()
	_, js := ConnectNATS(t, natsURL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, stream.BucketName("app"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		texts = append(texts, k+" = "+string(e.Value()))
	}
	for _, path := range []string{"/lag", "/healthz", "/readyz", "/metrics"} {
		_, body, err := httpGet(base + path)
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, path+" = "+string(body))
	}
	for _, p := range pgs {
		for _, text := range texts {
			if strings.Contains(text, p.Password) || strings.Contains(text, "password") {
				t.Errorf("a credential shows in %s", text)
			}
		}
	}
}
