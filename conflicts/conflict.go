package conflicts

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Type is the kind of a conflict: a value of pgactive's pgactive_conflict_type
// enum.
type Type string

// The conflict types Decide reports.
const (
	InsertInsert     Type = "insert_insert"
	UpdateUpdate     Type = "update_update"
	UpdateDelete     Type = "update_delete"
	DeleteDelete     Type = "delete_delete"
	UnhandledTxAbort Type = "unhandled_tx_abort"
)

// Resolution is how a conflict was resolved: a value of pgactive's
// pgactive_conflict_resolution enum.
type Resolution string

// The resolutions Decide reports.
const (
	KeepLocal   Resolution = "last_update_wins_keep_local"
	KeepRemote  Resolution = "last_update_wins_keep_remote"
	SkipChange  Resolution = "skip_change"
	ApplyChange Resolution = "apply_change"
	Unhandled   Resolution = "unhandled_tx_abort"
)

// Sentinel errors, one per conflict type, matched by a *Conflict of that type
// with errors.Is.
var (
	ErrInsertInsert     = errors.New("insert_insert conflict")
	ErrUpdateUpdate     = errors.New("update_update conflict")
	ErrUpdateDelete     = errors.New("update_delete conflict")
	ErrDeleteDelete     = errors.New("delete_delete conflict")
	ErrUnhandledTxAbort = errors.New("unhandled_tx_abort")
	// ErrInvalidChange is wrapped by Validate's errors.
	ErrInvalidChange = errors.New("invalid change")
)

// Err returns the sentinel error of the conflict type, or nil for an unknown
// type.
func (t Type) Err() error {
	switch t {
	case InsertInsert:
		return ErrInsertInsert
	case UpdateUpdate:
		return ErrUpdateUpdate
	case UpdateDelete:
		return ErrUpdateDelete
	case DeleteDelete:
		return ErrDeleteDelete
	case UnhandledTxAbort:
		return ErrUnhandledTxAbort
	}
	return nil
}

// Conflict is one detected conflict with its context: what the apply worker
// records in pgactive_conflict_history and returns or logs. It matches the
// sentinel of its type with errors.Is, and unwraps to its cause, if any.
type Conflict struct {
	// Table is the schema-qualified table name.
	Table string
	// Key is the row's primary key rendered as text, e.g. "(id)=(42)"; empty
	// when the error concerns no single row.
	Key string
	// Local is the local row's version when the conflict was decided: its
	// origin and commit time.
	Local Version
	// Remote is the incoming change: its origin and commit time.
	Remote Change
	// Decision is what was decided.
	Decision Decision
	// Err is the cause of an unhandled_tx_abort, or nil.
	Err error
}

// NewConflict returns the Conflict for decision d taken on the given local
// version and incoming change.
func NewConflict(table, key string, local Version, remote Change, d Decision) *Conflict {
	return &Conflict{Table: table, Key: key, Local: local, Remote: remote, Decision: d}
}

// AbortConflict returns the unhandled_tx_abort Conflict for a change whose
// transaction failed to apply with cause. Its Decision is Abort().
func AbortConflict(table, key string, local Version, remote Change, cause error) *Conflict {
	c := NewConflict(table, key, local, remote, Abort())
	c.Err = cause
	return c
}

// Error describes the conflict: type, row, both versions and the resolution
// (or the cause).
func (c *Conflict) Error() string {
	var b strings.Builder
	b.WriteString(string(c.Decision.Type))
	fmt.Fprintf(&b, " on %s", c.Table)
	if c.Key != "" {
		fmt.Fprintf(&b, " key %s", c.Key)
	}
	fmt.Fprintf(&b, ": remote %s from node %s at %s", c.Remote.Op, c.Remote.Origin, formatTime(c.Remote.CommitTime))
	switch {
	case c.Local.Exists:
		fmt.Fprintf(&b, ", local row from node %s at %s", c.Local.Origin, formatTime(c.Local.CommitTime))
	case c.Local.Tombstone:
		fmt.Fprintf(&b, ", local delete from node %s at %s", c.Local.Origin, formatTime(c.Local.CommitTime))
	default:
		b.WriteString(", no local row")
	}
	if c.Err != nil {
		fmt.Fprintf(&b, ": %v", c.Err)
	} else if c.Decision.Resolution != "" {
		fmt.Fprintf(&b, ": %s", c.Decision.Resolution)
	}
	return b.String()
}

// Is reports whether target is the sentinel error of the conflict's type.
func (c *Conflict) Is(target error) bool {
	s := c.Decision.Type.Err()
	return s != nil && target == s
}

// Unwrap returns the cause of an unhandled_tx_abort, or nil.
func (c *Conflict) Unwrap() error { return c.Err }

func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}
