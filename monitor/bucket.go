package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// member is the part of a node's record (nodes.<node>) the monitor reads.
type member struct {
	Name   string `json:"name"`
	SysID  uint64 `json:"sysid,string"`
	DBOID  uint32 `json:"dboid"`
	Status string `json:"status"`
}

// statusDetached is pgactive_nodes.node_status of a detached node.
const statusDetached = "k"

type pathKey struct{ origin, target string }

// bucketSnapshot is the group's bucket as read at one moment.
type bucketSnapshot struct {
	members map[string]member // by node name
	apply   map[pathKey]ApplyState
	lag     map[pathKey]Row
	keys    map[string]pathKey // key of every lag and apply entry
	wal     map[string]string  // key of every wal entry → node
}

// readBucket reads every current entry of the bucket.
func readBucket(ctx context.Context, kv jetstream.KeyValue) (*bucketSnapshot, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	s := &bucketSnapshot{members: map[string]member{}, apply: map[pathKey]ApplyState{},
		lag: map[pathKey]Row{}, keys: map[string]pathKey{}, wal: map[string]string{}}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read bucket %s: %w", kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("read bucket %s: watch closed", kv.Bucket())
			}
			if e == nil { // every current entry was delivered
				return s, nil
			}
			s.add(e.Key(), e.Value())
		}
	}
}

// add records one entry; entries that cannot be read are left out.
func (s *bucketSnapshot) add(key string, value []byte) {
	switch {
	case strings.HasPrefix(key, nodesPrefix):
		var m member
		if json.Unmarshal(value, &m) == nil && m.Name != "" && m.SysID != 0 {
			s.members[m.Name] = m
		}
	case strings.HasPrefix(key, lagPrefix):
		var r Row
		if json.Unmarshal(value, &r) == nil && r.OriginNode != "" && r.TargetNode != "" {
			k := pathKey{r.OriginNode, r.TargetNode}
			s.lag[k], s.keys[key] = r, k
		}
	case strings.HasPrefix(key, applyPrefix):
		var a ApplyState
		if json.Unmarshal(value, &a) == nil && a.Origin != "" && a.Target != "" {
			k := pathKey{a.Origin, a.Target}
			s.apply[k], s.keys[key] = a, k
		}
	case strings.HasPrefix(key, walPrefix):
		var w WALState
		if json.Unmarshal(value, &w) == nil {
			s.wal[key] = w.Node
		}
	}
}

// active reports whether name is a member that is not detached.
func (s *bucketSnapshot) active(name string) bool {
	m, ok := s.members[name]
	return ok && m.Status != statusDetached
}

// targets lists the members self replicates to, by name.
func (s *bucketSnapshot) targets(self string) []target {
	var out []target
	for name, m := range s.members {
		if name != self && s.active(name) {
			out = append(out, target{Node: name, SysID: m.SysID})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// rows returns the lag rows of paths between current members.
func (s *bucketSnapshot) rows() []Row {
	var out []Row
	for k, r := range s.lag {
		if s.active(k.origin) && s.active(k.target) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].OriginNode != out[j].OriginNode {
			return out[i].OriginNode < out[j].OriginNode
		}
		return out[i].TargetNode < out[j].TargetNode
	})
	return out
}

// putJSON puts v under key.
func putJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if _, err := kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func (m *Monitor) putApply(ctx context.Context, kv jetstream.KeyValue, states []ApplyState) error {
	var errs []error
	for _, a := range states {
		errs = append(errs, putJSON(ctx, kv, ApplyKey(a.Origin, a.Target), a))
	}
	return errors.Join(errs...)
}

// purge deletes the entries of paths that no longer exist: this node's rows
// to nodes it no longer replicates to, and any entry naming a node that left
// the group or was detached.
func (m *Monitor) purge(ctx context.Context, kv jetstream.KeyValue, s *bucketSnapshot, rows []Row) error {
	current := map[pathKey]bool{}
	for _, r := range rows {
		current[pathKey{r.OriginNode, r.TargetNode}] = true
	}
	var gone []string
	for key, k := range s.keys {
		isLag := strings.HasPrefix(key, lagPrefix)
		left := !s.active(k.origin) || !s.active(k.target)
		if left || (isLag && k.origin == m.cfg.Node && !current[k]) {
			gone = append(gone, key)
			if isLag {
				delete(s.lag, k)
			}
		}
	}
	for key, node := range s.wal {
		if !s.active(node) {
			gone = append(gone, key)
		}
	}
	var errs []error
	for _, key := range gone {
		if err := kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			errs = append(errs, fmt.Errorf("delete %s: %w", key, err))
		}
	}
	return errors.Join(errs...)
}
