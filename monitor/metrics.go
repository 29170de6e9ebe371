package monitor

import (
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgactive-go/pgactive/conflicts"
	"github.com/pgactive-go/pgactive/stream"
)

// conflictTypes are reported for every apply worker, 0 until one happens,
// so that rates exist from the start.
func conflictTypes() []string {
	return []string{string(conflicts.InsertInsert), string(conflicts.UpdateUpdate), string(conflicts.UpdateDelete),
		string(conflicts.DeleteDelete), string(conflicts.UnhandledTxAbort)}
}

// descs are the metrics the handler exports.
type descs struct {
	// One origin → target path, from the group's lag rows.
	pendingDecoding, pendingApply, lagSeconds, pendingMessages, active, failing, updated *prometheus.Desc
	// The apply workers of the process's agents.
	applyRunning, applyTxns, applyChanges, applyErrors, applyParked, applyConflicts, applyCommit, applyDelay *prometheus.Desc
	// The capture workers of the process's agents.
	captureRunning, captureTxns, captureChanges, captureBytes, captureMsgs, captureDelay *prometheus.Desc
}

func newDescs() descs {
	path := []string{"group", "origin", "target"}
	apply := []string{"group", "node", "origin"}
	capture := []string{"group", "node"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return descs{
		pendingDecoding: d("pgactive_lag_pending_wal_decoding_bytes",
			"Origin WAL not yet published (pending_wal_decoding).", path),
		pendingApply: d("pgactive_lag_pending_wal_to_apply_bytes",
			"Published WAL not yet applied by the target (pending_wal_to_apply).", path),
		lagSeconds: d("pgactive_lag_seconds",
			"Age of the oldest transaction the target has not applied (lag_seconds).", path),
		pendingMessages: d("pgactive_lag_pending_messages",
			"JetStream messages the target's consumer has not acknowledged (pending_messages).", path),
		active: d("pgactive_lag_active",
			"1 while the path replicates: slot streaming, target applying, row fresh (active).", path),
		failing: d("pgactive_apply_failing",
			"1 while the target fails to apply the origin's next transaction (last_error is set).", path),
		updated: d("pgactive_lag_updated_timestamp_seconds",
			"When the origin last refreshed the path's row, in seconds since the Unix epoch.", path),

		applyRunning: d("pgactive_apply_running",
			"1 while the apply worker of origin on node runs.", apply),
		applyTxns: d("pgactive_apply_transactions_total",
			"Transactions of origin applied on node.", apply),
		applyChanges: d("pgactive_apply_changes_total",
			"Row changes of origin applied on node.", apply),
		applyErrors: d("pgactive_apply_errors_total",
			"Apply sessions of origin on node that ended with an error (each is retried).", apply),
		applyParked: d("pgactive_apply_parked_messages_total",
			"Messages of origin that node could not decode and parked.", apply),
		applyConflicts: d("pgactive_apply_conflicts_total",
			"Conflicts node detected applying origin, by conflict type.", append(apply[:len(apply):len(apply)], "type")),
		applyCommit: d("pgactive_apply_last_commit_timestamp_seconds",
			"Origin commit time of the last transaction of origin applied on node.", apply),
		applyDelay: d("pgactive_apply_delay_seconds",
			"Time from a transaction's commit on origin to its delivery to node's apply (stage delivered) and to its commit on node (stage committed); includes any difference between the hosts' clocks.",
			append(apply[:len(apply):len(apply)], "stage")),

		captureRunning: d("pgactive_capture_running",
			"1 while node's capture worker streams from its slot.", capture),
		captureTxns: d("pgactive_capture_transactions_total",
			"Transactions node's capture published.", capture),
		captureChanges: d("pgactive_capture_changes_total",
			"Row changes node's capture published.", capture),
		captureBytes: d("pgactive_capture_bytes_total",
			"Encoded bytes node's capture published.", capture),
		captureMsgs: d("pgactive_capture_messages_total",
			"JetStream messages node's capture published; whole transactions decoded at once share one.", capture),
		captureDelay: d("pgactive_capture_delay_seconds",
			"Time from a transaction's commit on node to its decoding by node's capture (the walsender sends a commit once it is flushed).", capture),
	}
}

func (d *descs) all() []*prometheus.Desc {
	return []*prometheus.Desc{d.pendingDecoding, d.pendingApply, d.lagSeconds, d.pendingMessages, d.active,
		d.failing, d.updated, d.applyRunning, d.applyTxns, d.applyChanges, d.applyErrors, d.applyParked, d.applyConflicts,
		d.applyCommit, d.applyDelay, d.captureRunning, d.captureTxns, d.captureChanges, d.captureBytes, d.captureMsgs, d.captureDelay}
}

// collector reads the lag rows and the workers' live statuses at scrape time.
type collector struct {
	monitors func() []*Monitor
	d        descs
}

var _ prometheus.Collector = (*collector)(nil)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.d.all() {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ms := c.monitors()
	now := time.Now()
	for _, g := range clusterRows(ms, now) {
		for _, r := range g.rows {
			labels := []string{g.group, r.OriginNode, r.TargetNode}
			gauge(ch, c.d.pendingDecoding, float64(r.PendingWALDecoding), labels)
			gauge(ch, c.d.pendingApply, float64(r.PendingWALToApply), labels)
			gauge(ch, c.d.lagSeconds, r.LagSeconds, labels)
			gauge(ch, c.d.pendingMessages, float64(r.PendingMessages), labels)
			gauge(ch, c.d.active, boolValue(r.Active), labels)
			gauge(ch, c.d.failing, boolValue(r.LastError != ""), labels)
			gauge(ch, c.d.updated, float64(r.UpdatedAt.UnixMilli())/1000, labels)
		}
	}
	for _, m := range ms {
		c.collectWorkers(ch, m)
	}
}

func (c *collector) collectWorkers(ch chan<- prometheus.Metric, m *Monitor) {
	group, node := m.Group(), m.Node()
	if cw := m.Agent().Capture(); cw != nil {
		st := cw.Status()
		labels := []string{group, node}
		gauge(ch, c.d.captureRunning, boolValue(st.Running.Load()), labels)
		counter(ch, c.d.captureTxns, st.Transactions.Load(), labels)
		counter(ch, c.d.captureChanges, st.Changes.Load(), labels)
		counter(ch, c.d.captureBytes, st.Bytes.Load(), labels)
		counter(ch, c.d.captureMsgs, st.Messages.Load(), labels)
		histogram(ch, c.d.captureDelay, &st.Delay, labels)
	}
	for origin, w := range m.Agent().Appliers() {
		st := w.Status()
		labels := []string{group, node, origin}
		gauge(ch, c.d.applyRunning, boolValue(st.Running.Load()), labels)
		counter(ch, c.d.applyTxns, st.Transactions.Load(), labels)
		counter(ch, c.d.applyChanges, st.Changes.Load(), labels)
		counter(ch, c.d.applyErrors, st.Errors.Load(), labels)
		counter(ch, c.d.applyParked, st.Parked.Load(), labels)
		if us := st.AppliedTime.Load(); us != 0 {
			gauge(ch, c.d.applyCommit, float64(us)/1e6, labels)
		}
		histogram(ch, c.d.applyDelay, &st.Delivered, append(labels[:len(labels):len(labels)], "delivered"))
		histogram(ch, c.d.applyDelay, &st.Committed, append(labels[:len(labels):len(labels)], "committed"))
		byType := st.Conflicts()
		types := conflictTypes()
		for t := range byType {
			if !slices.Contains(types, t) {
				types = append(types, t)
			}
		}
		for _, t := range types {
			counter(ch, c.d.applyConflicts, byType[t], append(labels[:len(labels):len(labels)], t))
		}
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels []string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, h *stream.Delays, labels []string) {
	cum, count, sum := h.Snapshot()
	buckets := make(map[float64]uint64, len(cum))
	for i, b := range stream.DelayBuckets() {
		buckets[b] = cum[i]
	}
	ch <- prometheus.MustNewConstHistogram(d, count, sum, buckets, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels []string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// groupRows is one group's lag rows.
type groupRows struct {
	group string
	rows  []Row
}

// clusterRows returns, for each group served in the process, the rows of the
// monitor that read the bucket last, as readers see them at now.
func clusterRows(ms []*Monitor, now time.Time) []groupRows {
	type pick struct {
		rows []Row
		at   time.Time
		m    *Monitor
	}
	best := map[string]pick{}
	for _, m := range ms {
		rows, at := m.snapshot()
		if p, ok := best[m.Group()]; !ok || at.After(p.at) {
			best[m.Group()] = pick{rows, at, m}
		}
	}
	out := make([]groupRows, 0, len(best))
	for g, p := range best {
		out = append(out, groupRows{group: g, rows: shown(p.rows, now, p.m.cfg.StaleAfter)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].group < out[j].group })
	return out
}
