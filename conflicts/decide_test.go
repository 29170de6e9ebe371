package conflicts

import (
	"errors"
	"testing"
	"time"
)

// Nodes of the table tests: the local node is self.
var (
	self  = NodeID{SysID: 10}
	lower = NodeID{SysID: 5}  // a remote node with a lower ID than self
	upper = NodeID{SysID: 20} // a remote node with a higher ID than self
	other = NodeID{SysID: 30}
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return epoch.Add(time.Duration(sec) * time.Second) }

func row(sec int, origin NodeID) Version {
	return Version{Exists: true, CommitTime: at(sec), Origin: origin}
}

func tomb(sec int, origin NodeID) Version {
	return Version{Tombstone: true, CommitTime: at(sec), Origin: origin}
}

func change(op Op, sec int, origin NodeID) Change {
	return Change{Op: op, CommitTime: at(sec), Origin: origin, FullRow: true}
}

func partial(c Change) Change { c.FullRow = false; return c }

func applied(a Action) Decision { return Decision{Action: a} }

func deleted() Decision { return Decision{Action: ApplyAsIs, RecordTombstone: true} }

func withTomb(d Decision) Decision { d.RecordTombstone = true; return d }

func TestDecide(t *testing.T) {
	tests := []struct {
		name  string
		local Version
		in    Change
		want  Decision
	}{
		// insert
		{"insert on nothing", Version{}, change(Insert, 5, upper), applied(ApplyAsIs)},
		{"insert on row, remote later", row(5, self), change(Insert, 6, upper), conflict(ApplyAsUpdate, InsertInsert, KeepRemote)},
		{"insert on row, local later", row(7, self), change(Insert, 6, upper), conflict(Keep, InsertInsert, KeepLocal)},
		{"insert on row of third node, remote later", row(5, other), change(Insert, 6, upper), conflict(ApplyAsUpdate, InsertInsert, KeepRemote)},
		{"insert on row, same origin", row(5, upper), change(Insert, 5, upper), applied(ApplyAsUpdate)},
		{"insert on row, same origin, older time", row(9, upper), change(Insert, 5, upper), applied(ApplyAsUpdate)},
		{"insert on row, tie, remote higher ID", row(5, self), change(Insert, 5, upper), conflict(ApplyAsUpdate, InsertInsert, KeepRemote)},
		{"insert on row, tie, remote lower ID", row(5, self), change(Insert, 5, lower), conflict(Keep, InsertInsert, KeepLocal)},
		{"insert on row, partial, remote later", row(5, self), partial(change(Insert, 6, upper)), conflict(ApplyAsUpdate, InsertInsert, KeepRemote)},
		{"insert on older tombstone", tomb(5, other), change(Insert, 6, upper), applied(ApplyAsIs)},
		{"insert on newer tombstone", tomb(7, other), change(Insert, 6, upper), conflict(Skip, UpdateDelete, SkipChange)},
		{"insert on tombstone, tie, remote higher ID", tomb(6, self), change(Insert, 6, upper), applied(ApplyAsIs)},
		{"insert on tombstone, tie, remote lower ID", tomb(6, self), change(Insert, 6, lower), conflict(Skip, UpdateDelete, SkipChange)},
		{"insert on tombstone, same origin", tomb(6, upper), change(Insert, 7, upper), applied(ApplyAsIs)},
		{"insert on tombstone, same transaction", tomb(6, upper), change(Insert, 6, upper), applied(ApplyAsIs)},
		{"insert on tombstone, same origin, older time", tomb(9, upper), change(Insert, 6, upper), applied(ApplyAsIs)},
		{"insert on nothing, partial", Version{}, partial(change(Insert, 5, upper)), conflict(Retry, UnhandledTxAbort, Unhandled)},
		{"insert on older tombstone, partial", tomb(5, other), partial(change(Insert, 6, upper)), conflict(Retry, UnhandledTxAbort, Unhandled)},
		{"insert on newer tombstone, partial", tomb(7, other), partial(change(Insert, 6, upper)), conflict(Skip, UpdateDelete, SkipChange)},

		// update
		{"update on row, same origin", row(5, upper), change(Update, 6, upper), applied(ApplyAsIs)},
		{"update on row, same origin, older time", row(9, upper), change(Update, 6, upper), applied(ApplyAsIs)},
		{"update on local row, remote later", row(5, self), change(Update, 6, upper), conflict(ApplyAsIs, UpdateUpdate, KeepRemote)},
		{"update on local row, local later", row(7, self), change(Update, 6, upper), conflict(Keep, UpdateUpdate, KeepLocal)},
		{"update on third node's row, remote later", row(5, other), change(Update, 6, upper), conflict(ApplyAsIs, UpdateUpdate, KeepRemote)},
		{"update on third node's row, remote earlier", row(7, other), change(Update, 6, upper), conflict(Keep, UpdateUpdate, KeepLocal)},
		{"update on row, tie, remote higher ID", row(6, self), change(Update, 6, upper), conflict(ApplyAsIs, UpdateUpdate, KeepRemote)},
		{"update on row, tie, remote lower ID", row(6, self), change(Update, 6, lower), conflict(Keep, UpdateUpdate, KeepLocal)},
		{"update on row, partial, remote later", row(5, self), partial(change(Update, 6, upper)), conflict(ApplyAsIs, UpdateUpdate, KeepRemote)},
		{"update on row, roident 0 means local", Version{Exists: true, CommitTime: at(7)}, change(Update, 6, upper), conflict(Keep, UpdateUpdate, KeepLocal)},
		{"update on nothing: insert not arrived", Version{}, change(Update, 6, upper), conflict(ApplyAsInsert, UpdateDelete, ApplyChange)},
		{"update on nothing, partial", Version{}, partial(change(Update, 6, upper)), conflict(Retry, UpdateDelete, Unhandled)},
		{"update on older tombstone", tomb(5, other), change(Update, 6, upper), conflict(ApplyAsInsert, UpdateDelete, ApplyChange)},
		{"update on older tombstone, partial", tomb(5, other), partial(change(Update, 6, upper)), conflict(Retry, UpdateDelete, Unhandled)},
		{"update on newer tombstone", tomb(7, other), change(Update, 6, upper), conflict(Skip, UpdateDelete, SkipChange)},
		{"update on newer tombstone, partial", tomb(7, other), partial(change(Update, 6, upper)), conflict(Skip, UpdateDelete, SkipChange)},
		{"update on local newer tombstone", tomb(7, self), change(Update, 6, upper), conflict(Skip, UpdateDelete, SkipChange)},
		{"update on tombstone, tie, remote higher ID", tomb(6, self), change(Update, 6, upper), conflict(ApplyAsInsert, UpdateDelete, ApplyChange)},
		{"update on tombstone, tie, remote lower ID", tomb(6, self), change(Update, 6, lower), conflict(Skip, UpdateDelete, SkipChange)},
		{"update on tombstone, same origin", tomb(6, upper), change(Update, 7, upper), conflict(ApplyAsInsert, UpdateDelete, ApplyChange)},
		{"update on tombstone, same origin, older time", tomb(9, upper), change(Update, 7, upper), conflict(ApplyAsInsert, UpdateDelete, ApplyChange)},
		{"update on row and tombstone: row counts", Version{Exists: true, Tombstone: true, CommitTime: at(5), Origin: upper}, change(Update, 6, upper), applied(ApplyAsIs)},

		// delete
		{"delete on row, same origin", row(5, upper), change(Delete, 6, upper), deleted()},
		{"delete on row, same transaction", row(6, upper), change(Delete, 6, upper), deleted()},
		{"delete on row, same origin, older time", row(9, upper), change(Delete, 6, upper), deleted()},
		{"delete on row, remote later", row(5, self), change(Delete, 6, upper), deleted()},
		{"delete on row, remote later, partial", row(5, self), partial(change(Delete, 6, upper)), deleted()},
		{"delete on third node's row, remote later", row(5, other), change(Delete, 6, upper), deleted()},
		{"delete racing a later update", row(7, other), change(Delete, 6, upper), conflict(Keep, UpdateDelete, KeepLocal)},
		{"delete racing a later local update", row(7, self), change(Delete, 6, upper), conflict(Keep, UpdateDelete, KeepLocal)},
		{"delete on row, tie, remote higher ID", row(6, self), change(Delete, 6, upper), deleted()},
		{"delete on row, tie, remote lower ID", row(6, self), change(Delete, 6, lower), conflict(Keep, UpdateDelete, KeepLocal)},
		{"delete on nothing", Version{}, change(Delete, 6, upper), withTomb(conflict(Skip, DeleteDelete, SkipChange))},
		{"delete on older tombstone", tomb(5, other), change(Delete, 6, upper), withTomb(conflict(Skip, DeleteDelete, SkipChange))},
		{"delete on newer tombstone", tomb(7, other), change(Delete, 6, upper), conflict(Skip, DeleteDelete, SkipChange)},
		{"delete on tombstone, same origin", tomb(5, upper), change(Delete, 6, upper), withTomb(conflict(Skip, DeleteDelete, SkipChange))},
		{"delete on tombstone, same origin, older time", tomb(9, upper), change(Delete, 6, upper), withTomb(conflict(Skip, DeleteDelete, SkipChange))},

		// invalid changes
		{"unknown op", Version{}, change(0, 6, upper), Abort()},
		{"op out of range", Version{}, change(Delete+1, 6, upper), Abort()},
		{"no origin", row(5, upper), change(Update, 6, NodeID{}), Abort()},
		{"another database of the same cluster", row(5, NodeID{SysID: self.SysID, DBOID: 2}), change(Update, 6, NodeID{SysID: self.SysID, DBOID: 3}), conflict(ApplyAsIs, UpdateUpdate, KeepRemote)},
		{"own change", row(5, upper), change(Update, 6, self), Abort()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.local, tt.in, self)
			if got != tt.want {
				t.Errorf("Decide(%+v, %+v) = %+v, want %+v", tt.local, tt.in, got, tt.want)
			}
		})
	}
}

func TestDecideConflictFields(t *testing.T) {
	// Every decision is well-formed: a conflict has a type and a resolution,
	// a non-conflict has neither, and only deletes record tombstones.
	versions := []Version{{}, row(5, self), row(5, upper), row(7, other), tomb(5, self), tomb(7, upper), tomb(6, other)}
	for _, local := range versions {
		for _, op := range []Op{Insert, Update, Delete} {
			for _, origin := range []NodeID{lower, upper, other} {
				for _, full := range []bool{true, false} {
					in := Change{Op: op, CommitTime: at(6), Origin: origin, FullRow: full}
					d := Decide(local, in, self)
					if d.Action == 0 {
						t.Errorf("Decide(%+v, %+v): no action", local, in)
					}
					if d.Conflict != (d.Type != "") || d.Conflict != (d.Resolution != "") {
						t.Errorf("Decide(%+v, %+v) = %+v: conflict flag, type and resolution disagree", local, in, d)
					}
					if d.RecordTombstone && op != Delete {
						t.Errorf("Decide(%+v, %+v) = %+v: tombstone for a %v", local, in, d, op)
					}
					if d.Conflict && d.Type.Err() == nil {
						t.Errorf("Decide(%+v, %+v) = %+v: type has no sentinel", local, in, d)
					}
				}
			}
		}
	}
}

func TestWins(t *testing.T) {
	tests := []struct {
		name    string
		aTime   time.Time
		aOrigin NodeID
		bTime   time.Time
		bOrigin NodeID
		want    bool
	}{
		{"later time wins", at(2), lower, at(1), upper, true},
		{"earlier time loses", at(1), upper, at(2), lower, false},
		{"tie: higher node ID wins", at(1), upper, at(1), lower, true},
		{"tie: lower node ID loses", at(1), lower, at(1), upper, false},
		{"same version does not win", at(1), upper, at(1), upper, false},
		{"one microsecond later wins", at(1).Add(time.Microsecond), lower, at(1), upper, true},
		{"sub-microsecond difference is a tie", at(1).Add(999 * time.Nanosecond), lower, at(1), upper, false},
		{"sub-microsecond difference is a tie, other way", at(1), upper, at(1).Add(999 * time.Nanosecond), lower, true},
		{"time zone does not matter", at(1).In(time.FixedZone("X", 3600)), lower, at(1), upper, false},
		{"node IDs compare unsigned", at(1), NodeID{SysID: 1 << 63}, at(1), NodeID{SysID: 1<<63 - 1}, true},
		{"tie, same cluster: higher database OID wins", at(1), NodeID{SysID: 7, DBOID: 16385}, at(1), NodeID{SysID: 7, DBOID: 16384}, true},
		{"tie: sysid before database OID", at(1), NodeID{SysID: 8, DBOID: 1}, at(1), NodeID{SysID: 7, DBOID: 99999}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Wins(tt.aTime, tt.aOrigin, tt.bTime, tt.bOrigin)
			if got != tt.want {
				t.Errorf("Wins(%v, %s, %v, %s) = %v, want %v", tt.aTime, tt.aOrigin, tt.bTime, tt.bOrigin, got, tt.want)
			}
		})
	}
}

func TestWinsIsATotalOrder(t *testing.T) {
	// For distinct versions exactly one wins over the other.
	times := []time.Time{at(1), at(1).Add(time.Microsecond), at(2)}
	origins := []NodeID{{SysID: 1}, {SysID: 2}, {SysID: 2, DBOID: 5}, {SysID: 1 << 40}}
	for _, aT := range times {
		for _, aO := range origins {
			for _, bT := range times {
				for _, bO := range origins {
					ab, ba := Wins(aT, aO, bT, bO), Wins(bT, bO, aT, aO)
					same := aT.Equal(bT) && aO == bO
					if same && (ab || ba) || !same && ab == ba {
						t.Errorf("Wins(%v,%s | %v,%s) = %v, reverse %v", aT, aO, bT, bO, ab, ba)
					}
				}
			}
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		in      Change
		wantErr bool
	}{
		{"valid", change(Update, 1, upper), false},
		{"unknown op", change(0, 1, upper), true},
		{"no origin", change(Insert, 1, NodeID{}), true},
		{"own origin", change(Delete, 1, self), true},
		{"another database of the local cluster", change(Delete, 1, NodeID{SysID: self.SysID, DBOID: 7}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.in, self)
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("Validate(%+v) = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidChange) {
				t.Errorf("Validate(%+v) = %v, want it to wrap ErrInvalidChange", tt.in, err)
			}
		})
	}
}

func TestFutureCommit(t *testing.T) {
	tests := []struct {
		name      string
		commit    time.Time
		now       time.Time
		wantAhead time.Duration
		wantWarn  bool
	}{
		{"past", at(1), at(5), 0, false},
		{"now", at(5), at(5), 0, false},
		{"within tolerance", at(5).Add(time.Second), at(5), time.Second, false},
		{"beyond tolerance", at(10), at(5), 5 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ahead, warn := FutureCommit(tt.commit, tt.now, DefaultSkewTolerance)
			if ahead != tt.wantAhead || warn != tt.wantWarn {
				t.Errorf("FutureCommit(%v, %v) = %v, %v, want %v, %v", tt.commit, tt.now, ahead, warn, tt.wantAhead, tt.wantWarn)
			}
		})
	}
}
