package conflicts

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

var (
	seedFlag       = flag.Uint64("seed", 0, "run the property tests for this one seed (0: all seeds)")
	iterationsFlag = flag.Int("iterations", 4000, "histories per property test")
)

// forEachSeed runs check for every seed (or only -seed) and stops at the
// first failure, naming the seed that reproduces it.
func forEachSeed(t *testing.T, check func(rng *rand.Rand) error) {
	t.Helper()
	first, last := uint64(1), uint64(*iterationsFlag)
	if testing.Short() {
		last = uint64(*iterationsFlag / 10)
	}
	if *seedFlag != 0 {
		first, last = *seedFlag, *seedFlag
	}
	for seed := first; seed <= last; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		if err := check(rng); err != nil {
			t.Fatalf("seed %d (rerun with: go test -run '^%s$' -seed %d): %v", seed, t.Name(), seed, err)
		}
	}
}

// nodeIDs returns n distinct random node IDs, so that the tie-break order
// differs from the order of creation; some are above 1<<63, and some share
// a sysid (databases of one cluster).
func nodeIDs(rng *rand.Rand, n int) []NodeID {
	ids := make([]NodeID, 0, n)
	seen := map[NodeID]bool{{}: true}
	for len(ids) < n {
		id := NodeID{SysID: rng.Uint64N(8) + 1, DBOID: uint32(rng.IntN(3))}
		if rng.IntN(2) == 0 {
			id = NodeID{SysID: rng.Uint64()}
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

func keyName(rng *rand.Rand, keys int) string { return string(rune('a' + rng.IntN(keys))) }

func tick(n int) time.Time { return epoch.Add(time.Duration(n) * time.Millisecond) }

// mesh is a set of replicas and, per (origin, target), the queue of changes
// not yet delivered, in the origin's commit order.
type mesh struct {
	rng      *rand.Rand
	replicas []*replica
	queues   map[[2]int][]rowChange // [origin index, target index]
	all      []rowChange
	seen     map[outcome]int // decisions taken, for the generator's coverage
}

// outcome is a decision with the operation it was taken for.
type outcome struct {
	Op Op
	Decision
}

func newMesh(rng *rand.Rand, ids []NodeID, seen map[outcome]int) *mesh {
	m := &mesh{rng: rng, queues: map[[2]int][]rowChange{}, seen: seen}
	for _, id := range ids {
		m.replicas = append(m.replicas, newReplica(id))
	}
	return m
}

// publish records a change of replica from, to be delivered to every other
// replica.
func (m *mesh) publish(from int, c rowChange) {
	m.all = append(m.all, c)
	for to := range m.replicas {
		if to != from {
			m.queues[[2]int{from, to}] = append(m.queues[[2]int{from, to}], c)
		}
	}
}

// deliverNext delivers the head of queue q. Sometimes it delivers it twice in
// a row and checks nothing changed, and sometimes it leaves it at the head to
// be delivered again later, as a redelivery after a lost ack would (before any
// later change of the same origin, which exactly-once apply guarantees).
func (m *mesh) deliverNext(q [2]int) error {
	c := m.queues[q][0]
	r := m.replicas[q[1]]
	d, err := r.deliver(c)
	if err != nil {
		return err
	}
	m.seen[outcome{c.Op, d}]++
	if d.Action == Retry {
		return fmt.Errorf("%v: %s from %s: unexpected retry %+v", r.name(), c, c.Origin, d)
	}
	if m.rng.IntN(8) == 0 {
		before := r.state()
		if _, err := r.deliver(c); err != nil {
			return fmt.Errorf("duplicate delivery: %w", err)
		}
		if after := r.state(); after != before {
			return fmt.Errorf("%v: delivering %s from %s twice changed\n%s\nto\n%s", r.name(), c, c.Origin, before, after)
		}
	}
	if m.rng.IntN(8) != 0 {
		m.queues[q] = m.queues[q][1:]
	}
	return nil
}

// pending returns the non-empty queues, in a fixed order.
func (m *mesh) pending(ready func(rowChange) bool) [][2]int {
	var qs [][2]int
	for from := range m.replicas {
		for to := range m.replicas {
			q := [2]int{from, to}
			if len(m.queues[q]) > 0 && ready(m.queues[q][0]) {
				qs = append(qs, q)
			}
		}
	}
	return qs
}

// drain delivers everything left, picking a random non-empty queue each time.
func (m *mesh) drain() error {
	for {
		qs := m.pending(func(rowChange) bool { return true })
		if len(qs) == 0 {
			return nil
		}
		if err := m.deliverNext(qs[m.rng.IntN(len(qs))]); err != nil {
			return err
		}
	}
}

// check compares every replica with the reference model.
func (m *mesh) check() error {
	want := reference(m.all)
	for _, r := range m.replicas {
		if got := r.state(); got != want {
			return fmt.Errorf("%v diverged from the reference after %d changes %s\ngot:\n%swant:\n%s",
				r.name(), len(m.all), history(m.all), got, want)
		}
	}
	return nil
}

func history(cs []rowChange) string {
	s := ""
	for _, c := range cs {
		s += fmt.Sprintf("\n  %s@%s: %s", c.Origin, stamp(c.CommitTime), c)
	}
	return s + "\n"
}

// TestConvergenceConcurrent generates concurrent changes on three nodes
// (random operations, keys and commit times, increasing per node, often
// equal across nodes, some in one transaction with several changes), lets each node write its own changes first, delivers
// the others' in a random order per node (per origin in commit order), and
// checks that all nodes, and two observers that write nothing, end equal to
// the reference: the greatest (commit time, origin) wins per key.
func TestConvergenceConcurrent(t *testing.T) {
	seen := map[outcome]int{}
	defer checkCoverage(t, seen)
	forEachSeed(t, func(rng *rand.Rand) error {
		ids := nodeIDs(rng, 5)
		m := newMesh(rng, ids, seen)
		keys := 1 + rng.IntN(4)
		for n := range 3 {
			clock := rng.IntN(3)
			for j := range rng.IntN(7) {
				if j == 0 || rng.IntN(4) != 0 { // else: same transaction as the last change
					clock += 1 + rng.IntN(3)
				}
				c := rowChange{
					Key:    keyName(rng, keys),
					Value:  fmt.Sprintf("n%d.%d", n, j),
					Change: Change{Op: Op(1 + rng.IntN(3)), CommitTime: tick(clock), Origin: ids[n], FullRow: true},
				}
				m.replicas[n].write(c)
				m.publish(n, c)
			}
		}
		if err := m.drain(); err != nil {
			return err
		}
		return m.check()
	})
}

// TestConvergenceCausal simulates three nodes writing and replicating at the
// same time on a shared clock: a node writes against its own current state
// (insert a missing key, update or delete a present one) at the current
// time, so writes made after seeing a change are later than it, while writes
// on different nodes in the same tick are concurrent with equal commit
// times. Changes are delivered in random order (per origin in commit order)
// while writes go on. This reaches the cases of three nodes: an update or
// delete arriving before the insert it follows, a delete racing an update.
func TestConvergenceCausal(t *testing.T) {
	seen := map[outcome]int{}
	defer checkCoverage(t, seen)
	forEachSeed(t, func(rng *rand.Rand) error {
		ids := nodeIDs(rng, 4)
		m := newMesh(rng, ids, seen)
		keys := 1 + rng.IntN(3)
		clock := 1
		wrote := map[int]int{} // node → last tick it wrote in
		for range 10 + rng.IntN(60) {
			if rng.IntN(3) == 0 {
				clock++
			}
			if rng.IntN(5) < 2 {
				n := rng.IntN(3)
				if wrote[n] == clock && rng.IntN(2) == 0 {
					clock++ // else: same transaction as the node's last write
				}
				wrote[n] = clock
				m.localWrite(n, keyName(rng, keys), clock)
				continue
			}
			// Deliver only what was committed before now.
			qs := m.pending(func(c rowChange) bool { return c.CommitTime.Before(tick(clock)) })
			if len(qs) > 0 {
				if err := m.deliverNext(qs[rng.IntN(len(qs))]); err != nil {
					return err
				}
			}
		}
		if err := m.drain(); err != nil {
			return err
		}
		return m.check()
	})
}

// checkCoverage fails the test if a full run did not reach every decision a
// history of full rows can lead to, so that a weakened generator is noticed.
func checkCoverage(t *testing.T, seen map[outcome]int) {
	t.Helper()
	if t.Failed() || *seedFlag != 0 || testing.Short() {
		return
	}
	tomb := func(d Decision) Decision { d.RecordTombstone = true; return d }
	want := []outcome{
		{Insert, Decision{Action: ApplyAsIs}},
		{Insert, Decision{Action: ApplyAsUpdate}},
		{Insert, conflict(ApplyAsUpdate, InsertInsert, KeepRemote)},
		{Insert, conflict(Keep, InsertInsert, KeepLocal)},
		{Insert, conflict(Skip, UpdateDelete, SkipChange)},
		{Update, Decision{Action: ApplyAsIs}},
		{Update, conflict(ApplyAsIs, UpdateUpdate, KeepRemote)},
		{Update, conflict(Keep, UpdateUpdate, KeepLocal)},
		{Update, conflict(ApplyAsInsert, UpdateDelete, ApplyChange)},
		{Update, conflict(Skip, UpdateDelete, SkipChange)},
		{Delete, Decision{Action: ApplyAsIs, RecordTombstone: true}},
		{Delete, conflict(Keep, UpdateDelete, KeepLocal)},
		{Delete, tomb(conflict(Skip, DeleteDelete, SkipChange))},
		{Delete, conflict(Skip, DeleteDelete, SkipChange)},
	}
	for _, o := range want {
		if seen[o] == 0 {
			t.Errorf("no history reached %v → %+v", o.Op, o.Decision)
		}
	}
	t.Logf("decisions reached: %v", seen)
}

// localWrite makes node n write key at tick clock, choosing an operation its
// own state allows, and publishes it.
func (m *mesh) localWrite(n int, key string, clock int) {
	r := m.replicas[n]
	op := Insert
	if r.rows[key].Exists {
		op = Update
		if m.rng.IntN(3) == 0 {
			op = Delete
		}
	}
	c := rowChange{
		Key:    key,
		Value:  fmt.Sprintf("%d.%d", n, len(m.all)),
		Change: Change{Op: op, CommitTime: tick(clock), Origin: r.self, FullRow: true},
	}
	r.write(c)
	m.publish(n, c)
}

// TestDecideIdempotent checks that delivering any change twice in a row
// leaves the state it left the first time, from any local state.
func TestDecideIdempotent(t *testing.T) {
	forEachSeed(t, func(rng *rand.Rand) error {
		ids := nodeIDs(rng, 3)
		r := newReplica(ids[0])
		key := "k"
		switch rng.IntN(3) {
		case 0:
			r.rows[key] = cell{Value: "old", Version: Version{Exists: true, CommitTime: tick(rng.IntN(4)), Origin: ids[rng.IntN(3)]}}
		case 1:
			r.rows[key] = cell{Version: Version{Tombstone: true, CommitTime: tick(rng.IntN(4)), Origin: ids[rng.IntN(3)]}}
		}
		c := rowChange{Key: key, Value: "new", Change: Change{
			Op: Op(1 + rng.IntN(3)), CommitTime: tick(rng.IntN(4)), Origin: ids[1+rng.IntN(2)], FullRow: true,
		}}
		if _, err := r.deliver(c); err != nil {
			return err
		}
		once := r.state()
		if _, err := r.deliver(c); err != nil {
			return err
		}
		if twice := r.state(); twice != once {
			return fmt.Errorf("delivering %s from %s twice: once\n%stwice\n%s", c, c.Origin, once, twice)
		}
		return nil
	})
}
