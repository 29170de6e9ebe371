package conflicts

import (
	"fmt"
	"strconv"
	"time"
)

// NodeID identifies a node: the system identifier (sysid) of its
// PostgreSQL cluster and the OID of its database, since the databases of one
// cluster share the sysid. The zero NodeID never names a node.
type NodeID struct {
	SysID uint64
	DBOID uint32
}

// IsZero reports whether id names no node.
func (id NodeID) IsZero() bool { return id == NodeID{} }

// Less orders nodes by sysid, then by database OID: the fixed order that
// breaks ties between equal commit times.
func (id NodeID) Less(o NodeID) bool {
	if id.SysID != o.SysID {
		return id.SysID < o.SysID
	}
	return id.DBOID < o.DBOID
}

// String is the sysid, followed by "/" and the database OID when known.
func (id NodeID) String() string {
	s := strconv.FormatUint(id.SysID, 10)
	if id.DBOID != 0 {
		s += "/" + strconv.FormatUint(uint64(id.DBOID), 10)
	}
	return s
}

// Version is the version of one row, by primary key, as the local node sees it.
//
// For a row that exists, CommitTime and Origin come from
// pg_xact_commit_timestamp_origin(xmin): for a row written by apply they are
// the remote transaction's original commit time and the remote node, because
// apply commits in a replication-origin session with
// pg_replication_origin_xact_setup. For a local write the roident is 0 and
// the caller passes the local node's ID instead.
//
// The zero Version means "no row and no remembered delete".
type Version struct {
	// Exists is true when the row is present. It takes precedence over
	// Tombstone.
	Exists bool
	// CommitTime is the commit time of the transaction that last wrote the
	// row (or, for a tombstone, that deleted it).
	CommitTime time.Time
	// Origin is the node whose transaction last wrote (or deleted) the row.
	Origin NodeID
	// Tombstone is true when the row is absent but a delete of this key is
	// remembered; CommitTime and Origin then describe that delete.
	Tombstone bool
}

// Op is the kind of an incoming row change.
type Op uint8

// The row operations Decide knows. The zero Op is invalid.
const (
	Insert Op = iota + 1
	Update
	Delete
)

// String returns the operation's SQL verb in lower case.
func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Change is one incoming row change of a remote transaction.
type Change struct {
	Op Op
	// CommitTime is the origin's commit time of the transaction.
	CommitTime time.Time
	// Origin is the node that committed the transaction.
	Origin NodeID
	// FullRow is true when every column value of the new row is known: always
	// for an insert decoded from pgoutput, and for an update whose new tuple
	// holds no unchanged-TOAST marker (or whose markers the caller filled in
	// from a full old tuple, REPLICA IDENTITY FULL). It matters only when the
	// row has to be created from the change. Deletes ignore it.
	FullRow bool
}

// Action is what the apply worker must do with a change.
type Action uint8

// The actions of a Decision. The zero Action is invalid.
const (
	// ApplyAsIs performs the change as it came: INSERT the new row, UPDATE
	// the row with that key, or DELETE it.
	ApplyAsIs Action = iota + 1
	// ApplyAsUpdate overwrites the existing row with that key with the
	// incoming insert's new row: UPDATE every column the change carries.
	ApplyAsUpdate
	// ApplyAsInsert creates the row an incoming update targets, which is
	// missing locally: INSERT the change's full new row. If a unique
	// violation on the key shows that a row appeared meanwhile (a concurrent
	// local insert), roll back and decide again; never upsert blindly.
	ApplyAsInsert
	// Skip drops the change: there is nothing to do (the row is already gone)
	// or a later delete supersedes it.
	Skip
	// Keep drops the change because the local row is newer.
	Keep
	// Retry rolls the transaction back and retries it later, with backoff:
	// the change cannot be applied yet and must not be dropped.
	Retry
)

// String returns the action's name as used in logs and scenario traces.
func (a Action) String() string {
	switch a {
	case ApplyAsIs:
		return "apply"
	case ApplyAsUpdate:
		return "apply_as_update"
	case ApplyAsInsert:
		return "apply_as_insert"
	case Skip:
		return "skip"
	case Keep:
		return "keep"
	case Retry:
		return "retry"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Decision is what Decide concluded for one change.
type Decision struct {
	Action Action
	// Conflict is true when the change is a conflict to record as one row of
	// pgactive_conflict_history; Type and Resolution are then set.
	Conflict   bool
	Type       Type
	Resolution Resolution
	// RecordTombstone is true when the caller must remember, in the same
	// local transaction, that this key was deleted with the change's commit
	// time and origin (replacing an older tombstone of the key).
	RecordTombstone bool
}

// Wins reports whether version a (aTime, aOrigin) is later than version b
// under last-update-wins: the later commit time wins; on equal commit times
// the higher node ID (NodeID.Less) wins. Times are compared at microsecond precision,
// PostgreSQL's, so every node reaches the same answer from the same values.
// Equal times and origins do not win.
func Wins(aTime time.Time, aOrigin NodeID, bTime time.Time, bOrigin NodeID) bool {
	if c := aTime.Truncate(time.Microsecond).Compare(bTime.Truncate(time.Microsecond)); c != 0 {
		return c > 0
	}
	return bOrigin.Less(aOrigin)
}

// Decide returns what the apply worker running on node self must do with the
// incoming change in, given the local version of the row with the same
// primary key. It is a pure function: the same inputs give the same Decision
// on every node.
//
// The incoming change supersedes the local version when it comes from the
// same origin (changes of one origin arrive in commit order, so it is the
// newer one whatever the clocks say) or when it Wins by last-update-wins.
// A delete that finds no row, a write that finds an older tombstone, and a
// write or delete that meets a newer local version are resolved so that every
// node ends with the newest version; the package documentation lists the
// cases. An invalid change (see Validate) yields Abort().
func Decide(local Version, in Change, self NodeID) Decision {
	if Validate(in, self) != nil {
		return Abort()
	}
	if local.Origin.IsZero() {
		local.Origin = self // roident 0: written locally
	}
	switch {
	case local.Exists:
		return decideOnRow(local, in)
	case local.Tombstone:
		return decideOnTombstone(local, in)
	default:
		return decideOnNothing(in)
	}
}

// supersedes reports whether in replaces the version v.
func supersedes(in Change, v Version) bool {
	return in.Origin == v.Origin || Wins(in.CommitTime, in.Origin, v.CommitTime, v.Origin)
}

// decideOnRow decides a change whose row exists locally.
func decideOnRow(local Version, in Change) Decision {
	sameOrigin := in.Origin == local.Origin
	newer := supersedes(in, local)
	switch in.Op {
	case Insert:
		switch {
		case sameOrigin:
			return Decision{Action: ApplyAsUpdate}
		case newer:
			return conflict(ApplyAsUpdate, InsertInsert, KeepRemote)
		default:
			return conflict(Keep, InsertInsert, KeepLocal)
		}
	case Update:
		switch {
		case sameOrigin:
			return Decision{Action: ApplyAsIs}
		case newer:
			return conflict(ApplyAsIs, UpdateUpdate, KeepRemote)
		default:
			return conflict(Keep, UpdateUpdate, KeepLocal)
		}
	default: // Delete
		if newer {
			return Decision{Action: ApplyAsIs, RecordTombstone: true}
		}
		// A delete racing a later update: the update wins everywhere.
		return conflict(Keep, UpdateDelete, KeepLocal)
	}
}

// decideOnTombstone decides a change whose row is absent but whose delete is
// remembered.
func decideOnTombstone(tomb Version, in Change) Decision {
	newer := supersedes(in, tomb)
	switch in.Op {
	case Insert:
		switch {
		case !newer:
			// The later delete wins: the row stays deleted.
			return conflict(Skip, UpdateDelete, SkipChange)
		case !in.FullRow:
			return conflict(Retry, UnhandledTxAbort, Unhandled)
		default:
			return Decision{Action: ApplyAsIs}
		}
	case Update:
		switch {
		case !newer:
			return conflict(Skip, UpdateDelete, SkipChange)
		case !in.FullRow:
			return conflict(Retry, UpdateDelete, Unhandled)
		default:
			return conflict(ApplyAsInsert, UpdateDelete, ApplyChange)
		}
	default: // Delete
		d := conflict(Skip, DeleteDelete, SkipChange)
		d.RecordTombstone = newer
		return d
	}
}

// decideOnNothing decides a change whose row is absent with no remembered
// delete: either it was never here (its insert has not arrived yet) or its
// tombstone has been forgotten.
func decideOnNothing(in Change) Decision {
	switch in.Op {
	case Insert:
		if !in.FullRow {
			return conflict(Retry, UnhandledTxAbort, Unhandled)
		}
		return Decision{Action: ApplyAsIs}
	case Update:
		if !in.FullRow {
			return conflict(Retry, UpdateDelete, Unhandled)
		}
		return conflict(ApplyAsInsert, UpdateDelete, ApplyChange)
	default: // Delete
		d := conflict(Skip, DeleteDelete, SkipChange)
		d.RecordTombstone = true
		return d
	}
}

func conflict(a Action, t Type, r Resolution) Decision {
	return Decision{Action: a, Conflict: true, Type: t, Resolution: r}
}

// Abort returns the decision for a change whose transaction cannot be
// applied (an error from PostgreSQL such as a constraint violation, a type
// mismatch or a missing table, or an invalid change): roll back, record one
// unhandled_tx_abort conflict with the error, and retry with backoff. Nothing
// is skipped unless an operator asks.
func Abort() Decision {
	return conflict(Retry, UnhandledTxAbort, Unhandled)
}

// Validate returns an error wrapping ErrInvalidChange when in cannot be
// decided by node self: an unknown operation, no origin, or the local node
// as origin (a node never applies its own changes).
func Validate(in Change, self NodeID) error {
	switch {
	case in.Op < Insert || in.Op > Delete:
		return fmt.Errorf("%w: unknown operation %v", ErrInvalidChange, in.Op)
	case in.Origin.IsZero():
		return fmt.Errorf("%w: no origin node", ErrInvalidChange)
	case !self.IsZero() && in.Origin == self:
		return fmt.Errorf("%w: origin %s is the local node", ErrInvalidChange, in.Origin)
	}
	return nil
}
