package monitor

import (
	"strconv"
	"time"
)

// origin is what a node knows about its own side of every outgoing path.
type origin struct {
	Node      string
	SysID     uint64
	Slot      string
	Current   LSN // pg_current_wal_lsn()
	Restart   LSN // slot restart_lsn
	Confirmed LSN // slot confirmed_flush_lsn
	// Stored is capture's live position: JetStream holds everything before it.
	Stored     LSN
	SlotActive bool
	ActivePID  *int32
	// Published and PublishedTime are the commit LSN and time of the last
	// transaction on the node's stream (zero when not known).
	Published      LSN
	PublishedTime  time.Time
	CaptureRunning bool
	// LastStored is the newest transaction known stored in the stream, and
	// LastStoredSeq the sequence of the stream's last message (0 when the
	// stream is empty: every target acknowledged everything). StreamRead is
	// false when the stream could not be read this round.
	LastStored    LSN
	LastStoredSeq uint64
	StreamRead    bool
}

// backlog is the JetStream view of one path: the consumer apply_<target> on
// the origin's stream.
type backlog struct {
	// Pending is the consumer's pending plus ack-pending messages.
	Pending int64
	// AckFloor is the stream sequence of the last message acknowledged with
	// everything before it.
	AckFloor uint64
	// Delivered is the commit LSN of the last message delivered (0: not known).
	Delivered LSN
	// Oldest is the commit time of the oldest message not acknowledged
	// (zero: not known or none).
	Oldest time.Time
}

// target is a member the origin replicates to.
type target struct {
	Node  string
	SysID uint64
}

// pathRow computes the lag row of o → t. apply is the target's last report
// (nil: none yet); b is the consumer's state (nil: no consumer). It is pure:
// now is the origin's clock.
func pathRow(o origin, t target, apply *ApplyState, b *backlog, now time.Time, staleAfter time.Duration) Row {
	var replay, flush LSN
	if apply != nil {
		replay, flush = apply.AppliedLSN, apply.AppliedLSN
		if apply.FlushedLSN != 0 {
			flush = min(apply.FlushedLSN, replay)
		}
	}
	if b != nil && b.Pending == 0 && o.StreamRead && b.AckFloor >= o.LastStoredSeq {
		// The target acknowledges only what it committed and flushed, and
		// it has acknowledged the stream's last message: it flushed
		// everything the stream holds.
		flush = max(flush, o.LastStored)
		replay = max(replay, flush)
	}
	sent := max(o.Published, replay)
	write := replay
	if b != nil {
		write = max(write, min(b.Delivered, sent))
	}
	r := Row{
		NodeName:           t.Node,
		NodeSysID:          strconv.FormatUint(t.SysID, 10),
		ApplicationName:    "pgactive:" + strconv.FormatUint(o.SysID, 10) + ":send",
		SlotName:           o.Slot,
		ActivePID:          o.ActivePID,
		PendingWALDecoding: lsnDiff(o.Current, max(o.Confirmed, o.Stored)),
		PendingWALToApply:  lsnDiff(sent, replay),
		RestartLSN:         o.Restart,
		ConfirmedFlushLSN:  o.Confirmed,
		SentLSN:            sent,
		WriteLSN:           write,
		FlushLSN:           flush,
		ReplayLSN:          replay,
		OriginNode:         o.Node,
		TargetNode:         t.Node,
		UpdatedAt:          now.UTC(),
	}
	if b != nil {
		r.PendingMessages = max(b.Pending, 0)
	}
	if apply != nil && (b == nil || r.PendingMessages > 0) {
		// An error with nothing left to apply (a lost connection, say)
		// holds nothing back: it is not shown.
		r.LastError = apply.LastError
	}
	r.LagSeconds = lagSeconds(o, apply, b, r, now)
	r.Active = o.SlotActive && o.CaptureRunning && b != nil && apply != nil && apply.Running &&
		now.Sub(apply.UpdatedAt) < staleAfter
	return r
}

// lagSeconds is how long ago the oldest transaction the target has not
// applied committed on the origin; 0 when nothing is pending.
func lagSeconds(o origin, apply *ApplyState, b *backlog, r Row, now time.Time) float64 {
	if r.PendingMessages == 0 && r.PendingWALToApply == 0 {
		return 0
	}
	if b != nil && !b.Oldest.IsZero() {
		return max(now.Sub(b.Oldest).Seconds(), 0)
	}
	// Without the oldest message: the newest published commit against the
	// last applied one.
	if apply != nil && apply.AppliedCommitTime != nil && !o.PublishedTime.IsZero() {
		return max(o.PublishedTime.Sub(*apply.AppliedCommitTime).Seconds(), 0)
	}
	return 0
}

// lsnDiff is a − b in bytes, never negative.
func lsnDiff(a, b LSN) int64 {
	if a <= b {
		return 0
	}
	return int64(a - b)
}
