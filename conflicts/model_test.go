package conflicts

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// This file holds a naive model of nodes for the property and scenario tests:
// a replica keeps, per key, the row value and its Version (tombstones
// included) and applies incoming changes the way the apply worker does, with
// Decide and the checks PostgreSQL would make.

// rowChange is one change of the model: an operation on one key, with the
// new row value for inserts and updates.
type rowChange struct {
	Key   string
	Value string
	Change
}

func (c rowChange) String() string {
	s := fmt.Sprintf("%v %s", c.Op, c.Key)
	if c.Op != Delete {
		s += "=" + c.Value
	}
	if !c.FullRow && c.Op != Delete {
		s += " (partial)"
	}
	return s
}

// cell is the state of one key on a replica.
type cell struct {
	Value string
	Version
}

// replica is one node of the model.
type replica struct {
	self NodeID
	rows map[string]cell
}

func newReplica(self NodeID) *replica {
	return &replica{self: self, rows: map[string]cell{}}
}

// write performs a local write, as a user's statement on this node would: it
// replaces the key's state and records a tombstone for a delete. Like
// PostgreSQL, it records origin 0 (roident 0) for local writes.
func (r *replica) write(c rowChange) {
	v := Version{CommitTime: c.CommitTime}
	if c.Op == Delete {
		v.Tombstone = true
		r.rows[c.Key] = cell{Version: v}
		return
	}
	v.Exists = true
	r.rows[c.Key] = cell{Value: c.Value, Version: v}
}

// deliver applies an incoming change with Decide. It returns an error when
// the decision would fail in PostgreSQL (an INSERT of an existing key, an
// UPDATE or DELETE that finds no row) or is not a valid action. A Retry
// changes nothing.
func (r *replica) deliver(c rowChange) (Decision, error) {
	cur := r.rows[c.Key]
	d := Decide(cur.Version, c.Change, r.self)
	written := cell{Value: c.Value, Version: Version{Exists: true, CommitTime: c.CommitTime, Origin: c.Origin}}
	switch {
	case d.Action == ApplyAsIs && c.Op == Insert, d.Action == ApplyAsInsert:
		if cur.Exists {
			return d, fmt.Errorf("%v: INSERT of %s %v: duplicate key", r.name(), c, d.Action)
		}
		if !c.FullRow {
			return d, fmt.Errorf("%v: INSERT of %s %v without the full row", r.name(), c, d.Action)
		}
		r.rows[c.Key] = written
	case d.Action == ApplyAsIs && c.Op == Update, d.Action == ApplyAsUpdate:
		if !cur.Exists {
			return d, fmt.Errorf("%v: UPDATE of %s %v: no row", r.name(), c, d.Action)
		}
		r.rows[c.Key] = written
	case d.Action == ApplyAsIs && c.Op == Delete:
		if !cur.Exists {
			return d, fmt.Errorf("%v: DELETE of %s: no row", r.name(), c)
		}
		delete(r.rows, c.Key)
	case d.Action == Skip, d.Action == Keep, d.Action == Retry:
	default:
		return d, fmt.Errorf("%v: %s: invalid decision %+v", r.name(), c, d)
	}
	if d.RecordTombstone {
		if r.rows[c.Key].Exists {
			return d, fmt.Errorf("%v: %s: tombstone for a row that exists", r.name(), c)
		}
		r.rows[c.Key] = cell{Version: Version{Tombstone: true, CommitTime: c.CommitTime, Origin: c.Origin}}
	}
	return d, nil
}

func (r *replica) name() string { return "node " + r.self.String() }

// state renders the replica's keys, sorted, with local origins (0) named by
// the node's ID so that replicas compare equal.
func (r *replica) state() string { return r.stateWith(numeric) }

// stateWith is state with nodes named by node.
func (r *replica) stateWith(node func(NodeID) string) string {
	norm := make(map[string]cell, len(r.rows))
	for k, c := range r.rows {
		if c.Origin.IsZero() {
			c.Origin = r.self
		}
		norm[k] = c
	}
	return render(norm, node)
}

// numeric names a node by its ID.
func numeric(id NodeID) string { return id.String() }

// render prints one line per key: "k=value @time/origin" for a row,
// "k deleted @time/origin" for a tombstone.
func render(rows map[string]cell, node func(NodeID) string) string {
	keys := make([]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		c := rows[k]
		switch {
		case c.Exists:
			fmt.Fprintf(&b, "%s=%s @%s/%s\n", k, c.Value, stamp(c.CommitTime), node(c.Origin))
		case c.Tombstone:
			fmt.Fprintf(&b, "%s deleted @%s/%s\n", k, stamp(c.CommitTime), node(c.Origin))
		}
	}
	return b.String()
}

// stamp prints a model time as its offset from epoch.
func stamp(t time.Time) string { return t.Sub(epoch).String() }

// reference is the naive specification, independent of Wins: for each key,
// the change with the greatest (commit time, origin) wins, and a winning delete leaves the key
// deleted. Of equal versions (one transaction writing a key twice), the later
// in the list wins.
func reference(changes []rowChange) string {
	win := map[string]rowChange{}
	for _, c := range changes {
		w, ok := win[c.Key]
		older := ok && (w.CommitTime.After(c.CommitTime) || w.CommitTime.Equal(c.CommitTime) && c.Origin.Less(w.Origin))
		if !older {
			win[c.Key] = c
		}
	}
	rows := make(map[string]cell, len(win))
	for k, c := range win {
		v := Version{CommitTime: c.CommitTime, Origin: c.Origin}
		if c.Op == Delete {
			v.Tombstone = true
			rows[k] = cell{Version: v}
			continue
		}
		v.Exists = true
		rows[k] = cell{Value: c.Value, Version: v}
	}
	return render(rows, numeric)
}
