// Package monitor reports replication lag and worker health; it only reads
// what the other stages do.
//
// Stage: beside the data flow. Each agent runs one [Monitor], which every
// interval (2 s by default):
//
//   - publishes its node's origin-side state (WAL position, slot, last
//     published transaction) under wal.<node> in the group's key-value bucket,
//     and the state of each of its apply workers under apply.<origin>.<node>;
//   - computes one [Row] per outgoing path node → target, from its own WAL and
//     slot, its stream's consumer apply_<target> (pending and ack-pending
//     messages, delivered position) and the target's apply.<node>.<target>
//     entry, and puts it under lag.<node>.<target>;
//   - copies every lag.*.* row of the group into pgactive.pgactive_lag, so
//     pgactive_get_replication_lag_info() shows the whole group on any node,
//     and its apply counters into pgactive.pgactive_stats.
//
// The origin computes a path's row, not the target: a target whose agent is
// stopped cannot report that it fell behind, while the origin still sees
// the consumer's backlog grow.
//
// [NewHandler] serves GET /lag, /metrics (Prometheus, on a registry of its
// own), /healthz and /readyz for every agent of a process.
//
// Invariants: a row not refreshed for StaleAfter (30 s) reads as not active,
// wherever it is shown; byte and message counts are never negative; no
// connection string or credential is ever put in a key-value entry, a row,
// a log line or an HTTP response.
package monitor
