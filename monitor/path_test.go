package monitor

import (
	"encoding/json"
	"testing"
	"time"
)

func TestPathRow(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	pid := int32(4242)
	o := origin{Node: "node1", SysID: 7412711576138986882, Slot: "pgactive_16385_7412711576138986882",
		Current: 0x3000, Restart: 0x800, Confirmed: 0x1000, Stored: 0x2000, SlotActive: true, ActivePID: &pid,
		Published: 0x1F00, PublishedTime: now.Add(-time.Second), CaptureRunning: true,
		LastStored: 0x1F00, LastStoredSeq: 0, StreamRead: true}
	tgt := target{Node: "node2", SysID: 7412711618745234863}
	running := func(applied LSN, commit *time.Time) *ApplyState {
		return &ApplyState{Origin: "node1", Target: "node2", Running: true, AppliedLSN: applied,
			AppliedCommitTime: commit, UpdatedAt: now.Add(-time.Second)}
	}
	tests := []struct {
		name  string
		o     origin
		apply *ApplyState
		b     *backlog
		want  Row
	}{{
		name:  "caught up",
		o:     o,
		apply: running(0x1F00, ago(time.Second)),
		b:     &backlog{},
		want: Row{Active: true, PendingWALDecoding: 0x1000, SentLSN: 0x1F00, WriteLSN: 0x1F00,
			FlushLSN: 0x1F00, ReplayLSN: 0x1F00},
	}, {
		name: "applied, flush pending",
		o:    o,
		apply: &ApplyState{Origin: "node1", Target: "node2", Running: true, AppliedLSN: 0x1E00, FlushedLSN: 0x1C00,
			AppliedCommitTime: ago(time.Second), UpdatedAt: now.Add(-time.Second)},
		b: &backlog{Pending: 3, Delivered: 0x1E00},
		want: Row{Active: true, PendingWALDecoding: 0x1000, PendingWALToApply: 0x100, SentLSN: 0x1F00, WriteLSN: 0x1E00,
			FlushLSN: 0x1C00, ReplayLSN: 0x1E00, PendingMessages: 3},
	}, {
		name:  "target stopped with a backlog",
		o:     o,
		apply: &ApplyState{Running: false, AppliedLSN: 0x1000, AppliedCommitTime: ago(time.Minute), UpdatedAt: now.Add(-time.Second)},
		b:     &backlog{Pending: 7, Delivered: 0x1400, Oldest: now.Add(-12 * time.Second)},
		want: Row{PendingWALDecoding: 0x1000, PendingWALToApply: 0xF00, SentLSN: 0x1F00, WriteLSN: 0x1400,
			FlushLSN: 0x1000, ReplayLSN: 0x1000, PendingMessages: 7, LagSeconds: 12},
	}, {
		name:  "oldest message unknown: newest published against last applied",
		o:     o,
		apply: running(0x1000, ago(31*time.Second)),
		b:     &backlog{Pending: 2},
		want: Row{Active: true, PendingWALDecoding: 0x1000, PendingWALToApply: 0xF00, SentLSN: 0x1F00,
			WriteLSN: 0x1000, FlushLSN: 0x1000, ReplayLSN: 0x1000, PendingMessages: 2, LagSeconds: 30},
	}, {
		name:  "target report stale",
		o:     o,
		apply: &ApplyState{Running: true, AppliedLSN: 0x1F00, UpdatedAt: now.Add(-31 * time.Second)},
		b:     &backlog{},
		want:  Row{PendingWALDecoding: 0x1000, SentLSN: 0x1F00, WriteLSN: 0x1F00, FlushLSN: 0x1F00, ReplayLSN: 0x1F00},
	}, {
		name: "no target report yet, consumer empty: all flushed",
		o:    o,
		b:    &backlog{},
		want: Row{PendingWALDecoding: 0x1000, SentLSN: 0x1F00, WriteLSN: 0x1F00, FlushLSN: 0x1F00, ReplayLSN: 0x1F00},
	}, {
		name:  "consumer has not counted the stream's last message yet",
		o:     origin{Node: "node1", SysID: o.SysID, Slot: o.Slot, Published: 0x1F00, LastStored: 0x1F00, LastStoredSeq: 5, StreamRead: true},
		apply: &ApplyState{Running: true, AppliedLSN: 0x1000, UpdatedAt: now},
		b:     &backlog{AckFloor: 4},
		want:  Row{PendingWALToApply: 0xF00, SentLSN: 0x1F00, WriteLSN: 0x1000, FlushLSN: 0x1000, ReplayLSN: 0x1000},
	}, {
		name:  "stream not read this round",
		o:     origin{Node: "node1", SysID: o.SysID, Slot: o.Slot, Published: 0x1F00, LastStored: 0x1F00},
		apply: &ApplyState{Running: true, AppliedLSN: 0x1000, UpdatedAt: now},
		b:     &backlog{},
		want:  Row{PendingWALToApply: 0xF00, SentLSN: 0x1F00, WriteLSN: 0x1000, FlushLSN: 0x1000, ReplayLSN: 0x1000},
	}, {
		name:  "no consumer",
		o:     o,
		apply: running(0x1000, ago(time.Minute)),
		want: Row{PendingWALDecoding: 0x1000, PendingWALToApply: 0xF00, SentLSN: 0x1F00, WriteLSN: 0x1000,
			FlushLSN: 0x1000, ReplayLSN: 0x1000, LagSeconds: 59},
	}, {
		name:  "target ahead of what the origin knows it published",
		o:     origin{Node: "node1", SysID: o.SysID, Slot: o.Slot, Current: 0x100, Confirmed: 0x200, SlotActive: true, CaptureRunning: true},
		apply: running(0x5000, nil),
		b:     &backlog{Delivered: 0x6000},
		want:  Row{Active: true, SentLSN: 0x5000, WriteLSN: 0x5000, FlushLSN: 0x5000, ReplayLSN: 0x5000},
	}, {
		name:  "apply failing on a transaction",
		o:     o,
		apply: &ApplyState{Running: true, AppliedLSN: 0x1000, UpdatedAt: now, LastError: "table x does not exist: create it"},
		b:     &backlog{Pending: 1, Oldest: now.Add(-5 * time.Second)},
		want: Row{Active: true, PendingWALDecoding: 0x1000, PendingWALToApply: 0xF00, SentLSN: 0x1F00, WriteLSN: 0x1000,
			FlushLSN: 0x1000, ReplayLSN: 0x1000, PendingMessages: 1, LagSeconds: 5, LastError: "table x does not exist: create it"},
	}, {
		name:  "an old error with nothing pending is not shown",
		o:     o,
		apply: &ApplyState{Running: true, AppliedLSN: 0x1F00, UpdatedAt: now, LastError: "fetch: connection closed"},
		b:     &backlog{},
		want: Row{Active: true, PendingWALDecoding: 0x1000, SentLSN: 0x1F00, WriteLSN: 0x1F00,
			FlushLSN: 0x1F00, ReplayLSN: 0x1F00},
	}, {
		name:  "slot not streaming",
		o:     origin{Node: "node1", SysID: o.SysID, Slot: o.Slot, Current: 0x3000, Confirmed: 0x1000, Published: 0x1F00},
		apply: running(0x1F00, nil),
		b:     &backlog{},
		want: Row{PendingWALDecoding: 0x2000, ConfirmedFlushLSN: 0x1000, SentLSN: 0x1F00, WriteLSN: 0x1F00,
			FlushLSN: 0x1F00, ReplayLSN: 0x1F00},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pathRow(tt.o, tgt, tt.apply, tt.b, now, DefaultStaleAfter)
			want := tt.want
			want.NodeName, want.NodeSysID, want.OriginNode, want.TargetNode = "node2", "7412711618745234863", "node1", "node2"
			want.ApplicationName = "pgactive:7412711576138986882:send"
			want.SlotName = "pgactive_16385_7412711576138986882"
			want.UpdatedAt = now
			want.ActivePID, want.RestartLSN = tt.o.ActivePID, tt.o.Restart
			if want.ConfirmedFlushLSN == 0 {
				want.ConfirmedFlushLSN = tt.o.Confirmed
			}
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLSNJSON(t *testing.T) {
	b, err := json.Marshal(struct {
		L LSN `json:"l"`
	}{0x1996D90})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"l":"0/1996D90"}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	var back struct {
		L LSN `json:"l"`
	}
	if err := json.Unmarshal([]byte(`{"l":"16/B374D848"}`), &back); err != nil {
		t.Fatal(err)
	}
	if got, want := back.L, LSN(0x16B374D848); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if err := json.Unmarshal([]byte(`{"l":"nonsense"}`), &back); err == nil {
		t.Fatal("parsed a malformed LSN")
	}
}

func TestShownMarksStaleRowsInactive(t *testing.T) {
	now := time.Now()
	rows := []Row{
		{OriginNode: "b", TargetNode: "a", Active: true, UpdatedAt: now.Add(-time.Second)},
		{OriginNode: "a", TargetNode: "b", Active: true, UpdatedAt: now.Add(-31 * time.Second)},
	}
	got := shown(rows, now, DefaultStaleAfter)
	if got[0].OriginNode != "a" || got[0].Active {
		t.Errorf("stale row a→b: got origin %s active %v, want a, false", got[0].OriginNode, got[0].Active)
	}
	if got[1].OriginNode != "b" || !got[1].Active {
		t.Errorf("fresh row b→a: got origin %s active %v, want b, true", got[1].OriginNode, got[1].Active)
	}
	if !rows[1].Active {
		t.Error("shown changed its input")
	}
}

func TestLearnPublishedFromTargets(t *testing.T) {
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	later := at.Add(time.Second)
	m := &Monitor{cfg: Config{Node: "node1"}, pubLSN: 0x2000}
	snap := &bucketSnapshot{apply: map[pathKey]ApplyState{
		{"node1", "node2"}: {AppliedLSN: 0x2000, AppliedCommitTime: &at},
		{"node1", "node3"}: {AppliedLSN: 0x1000, AppliedCommitTime: &later},
		{"node2", "node1"}: {AppliedLSN: 0x9000, AppliedCommitTime: &later}, // another origin
	}}
	var o origin
	m.learnPublished(&o, snap)
	if o.Published != 0x2000 || !o.PublishedTime.Equal(at) {
		t.Errorf("got %s at %s, want 0/2000 at %s (its time, from node2's report)", o.Published, o.PublishedTime, at)
	}
	snap.apply[pathKey{"node1", "node3"}] = ApplyState{AppliedLSN: 0x3000, AppliedCommitTime: &later}
	m.learnPublished(&o, snap)
	if o.Published != 0x3000 || !o.PublishedTime.Equal(later) {
		t.Errorf("got %s at %s, want 0/3000 at %s (applied by node3, so published)", o.Published, o.PublishedTime, later)
	}
}
