package monitor

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgactive-go/pgactive/stream"
)

// LSN is a WAL position. It reads and writes as PostgreSQL prints a pg_lsn
// ("0/1996D90"), in JSON too, so rows go into pg_lsn columns unchanged.
type LSN uint64

// String prints the LSN as PostgreSQL prints a pg_lsn.
func (l LSN) String() string { return pglogrepl.LSN(l).String() }

// MarshalJSON writes the LSN as a pg_lsn string.
func (l LSN) MarshalJSON() ([]byte, error) { return json.Marshal(l.String()) }

// UnmarshalJSON reads a pg_lsn string.
func (l *LSN) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("LSN: %w", err)
	}
	v, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return fmt.Errorf("LSN %q: %w", s, err)
	}
	*l = LSN(v)
	return nil
}

// Row is the lag of one origin → target path. Its JSON names are the columns
// of pgactive.pgactive_lag; pgactive_get_replication_lag_info() returns the
// same values without origin_node, target_node and updated_at.
type Row struct {
	// NodeName and NodeSysID identify the target node.
	NodeName  string `json:"node_name"`
	NodeSysID string `json:"node_sysid"`
	// ApplicationName is the origin's capture connection, pgactive:<origin sysid>:send.
	ApplicationName string `json:"application_name"`
	// SlotName is the origin's logical slot (one per node, shared by all targets).
	SlotName string `json:"slot_name"`
	// Active is true while the origin's slot is streaming, the target's apply
	// worker runs and both reported within StaleAfter.
	Active    bool   `json:"active"`
	ActivePID *int32 `json:"active_pid"`
	// PendingWALDecoding is the origin WAL not yet published, in bytes.
	PendingWALDecoding int64 `json:"pending_wal_decoding"`
	// PendingWALToApply is the published WAL not yet applied by the target, in bytes.
	PendingWALToApply int64 `json:"pending_wal_to_apply"`
	RestartLSN        LSN   `json:"restart_lsn"`
	ConfirmedFlushLSN LSN   `json:"confirmed_flush_lsn"`
	// SentLSN is the commit LSN of the origin's last published transaction.
	SentLSN LSN `json:"sent_lsn"`
	// WriteLSN is the commit LSN of the last transaction delivered to the target.
	WriteLSN LSN `json:"write_lsn"`
	// ReplayLSN is the commit LSN of the last transaction the target
	// applied; FlushLSN of the last one whose local commit is flushed to
	// disk (apply commits asynchronously, as PostgreSQL's own apply worker
	// does, and acknowledges only what is flushed).
	FlushLSN  LSN `json:"flush_lsn"`
	ReplayLSN LSN `json:"replay_lsn"`
	// PendingMessages is the JetStream consumer's pending plus ack-pending count.
	PendingMessages int64 `json:"pending_messages"`
	// LagSeconds is how old the oldest transaction the target has not applied
	// is (0 when nothing is pending).
	LagSeconds float64 `json:"lag_seconds"`
	// LastError is the error that keeps the target from applying the
	// origin's next transaction (a schema difference, for instance, with
	// its fix), or "" while nothing is failing.
	LastError  string    `json:"last_error"`
	OriginNode string    `json:"origin_node"`
	TargetNode string    `json:"target_node"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Fresh reports whether the row was refreshed within staleAfter of now.
func (r *Row) Fresh(now time.Time, staleAfter time.Duration) bool {
	return now.Sub(r.UpdatedAt) < staleAfter
}

// shown returns rows as readers see them at now: sorted by path, with active
// false where the row is stale.
func shown(rows []Row, now time.Time, staleAfter time.Duration) []Row {
	out := make([]Row, len(rows))
	copy(out, rows)
	for i := range out {
		out[i].Active = out[i].Active && out[i].Fresh(now, staleAfter)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].OriginNode != out[j].OriginNode {
			return out[i].OriginNode < out[j].OriginNode
		}
		return out[i].TargetNode < out[j].TargetNode
	})
	return out
}

// WALState is a node's origin-side state, published under wal.<node>.
type WALState struct {
	Node     string `json:"node"`
	SysID    string `json:"sysid"`
	SlotName string `json:"slot_name"`
	// CurrentLSN is pg_current_wal_lsn() on the node.
	CurrentLSN        LSN    `json:"current_lsn"`
	RestartLSN        LSN    `json:"restart_lsn"`
	ConfirmedFlushLSN LSN    `json:"confirmed_flush_lsn"`
	SlotActive        bool   `json:"slot_active"`
	ActivePID         *int32 `json:"active_pid"`
	// StoredLSN is where capture has JetStream's acknowledgement for
	// everything before (it may be ahead of the slot's confirmed_flush_lsn,
	// which moves with capture's next feedback).
	StoredLSN LSN `json:"stored_lsn"`
	// PublishedLSN and PublishedCommitTime are the commit LSN and time of the
	// last transaction published on the node's stream.
	PublishedLSN        LSN        `json:"published_lsn"`
	PublishedCommitTime *time.Time `json:"published_commit_time"`
	CaptureRunning      bool       `json:"capture_running"`
	UpdatedAt           time.Time  `json:"updated_at"`
}

// ApplyState is what a target reports about applying one origin, published
// under apply.<origin>.<target>.
type ApplyState struct {
	Origin  string `json:"origin_node"`
	Target  string `json:"target_node"`
	Running bool   `json:"running"`
	// AppliedLSN and AppliedCommitTime are the origin commit LSN and time of
	// the last transaction applied on the target; FlushedLSN that of the
	// last one whose local commit is flushed (0 from agents that do not
	// report it: take AppliedLSN).
	AppliedLSN        LSN        `json:"applied_lsn"`
	FlushedLSN        LSN        `json:"flushed_lsn,omitempty"`
	AppliedCommitTime *time.Time `json:"applied_commit_time"`
	Transactions      uint64     `json:"transactions"`
	Changes           uint64     `json:"changes"`
	Errors            uint64     `json:"errors"`
	Parked            uint64     `json:"parked"`
	// LastError is the apply worker's last error, "" once a transaction
	// applied since.
	LastError string    `json:"last_error,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Key prefixes of the monitor's entries in the group's key-value bucket.
const (
	walPrefix   = "wal."
	applyPrefix = "apply."
	lagPrefix   = "lag."
	nodesPrefix = "nodes."
)

// WALKey is the key-value key of node's origin-side state.
func WALKey(node string) string { return walPrefix + stream.Token(node) }

// ApplyKey is the key-value key of target's state of applying origin.
func ApplyKey(origin, target string) string {
	return applyPrefix + stream.Token(origin) + "." + stream.Token(target)
}
