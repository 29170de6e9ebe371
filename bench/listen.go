package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// visibleChannel is the LISTEN channel of the arrival triggers.
const visibleChannel = "bench_visible"

// notifySQL creates, on a target, the function the arrival triggers call:
// it notifies the row's id. A notification is delivered when the
// transaction that sent it commits, so its arrival is when the row became
// visible.
const notifySQL = `CREATE FUNCTION bench_visible() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('` + visibleChannel + `', NEW.id::text);
	RETURN NULL;
END $$;`

// visibleTrigger returns the SQL that notifies every row inserted into
// table. ENABLE ALWAYS makes it fire in apply sessions as well, native
// (session_replication_role = replica) and ours alike.
func visibleTrigger(table string) string {
	t := pgx.Identifier{table}.Sanitize()
	trg := pgx.Identifier{table + "_visible"}.Sanitize()
	return fmt.Sprintf("CREATE TRIGGER %s AFTER INSERT ON %s FOR EACH ROW EXECUTE FUNCTION bench_visible();\nALTER TABLE %s ENABLE ALWAYS TRIGGER %s;", trg, t, t, trg)
}

// listener records when each row id became visible on one node.
type listener struct {
	conn   *pgx.Conn
	cancel context.CancelFunc
	done   chan error

	mu   sync.Mutex
	seen map[int64]time.Time
}

func listen(ctx context.Context, c *cluster, db string) (*listener, error) {
	conn, err := c.connect(ctx, db)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+visibleChannel); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("listen on %s: %w", c.name, err)
	}
	lctx, cancel := context.WithCancel(ctx)
	l := &listener{conn: conn, cancel: cancel, done: make(chan error, 1), seen: map[int64]time.Time{}}
	go func() { l.done <- l.loop(lctx) }()
	return l, nil
}

func (l *listener) loop(ctx context.Context) error {
	for {
		n, err := l.conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		at := time.Now()
		id, err := strconv.ParseInt(n.Payload, 10, 64)
		if err != nil {
			continue
		}
		l.mu.Lock()
		if _, dup := l.seen[id]; !dup {
			l.seen[id] = at
		}
		l.mu.Unlock()
	}
}

func (l *listener) stop() {
	l.cancel()
	<-l.done
	l.done <- nil
	l.conn.Close(context.Background())
}

// count returns how many ids seen satisfy keep.
func (l *listener) count(keep func(int64) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for id := range l.seen {
		if keep(id) {
			n++
		}
	}
	return n
}

// snapshot returns what was seen so far.
func (l *listener) snapshot() map[int64]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int64]time.Time, len(l.seen))
	for k, v := range l.seen {
		out[k] = v
	}
	return out
}

// waitCount waits until want ids satisfying keep were seen.
func (l *listener) waitCount(ctx context.Context, want int, keep func(int64) bool, timeout time.Duration) error {
	return poll(ctx, timeout, 20*time.Millisecond, fmt.Sprintf("%d rows to be visible", want), func(context.Context) (bool, error) {
		got := l.count(keep)
		if got >= want {
			return true, nil
		}
		select {
		case err := <-l.done:
			l.done <- err
			return false, fmt.Errorf("listener stopped after %d rows: %w", got, err)
		default:
		}
		return false, fmt.Errorf("%d of %d rows visible", got, want)
	})
}

// commitTimes reads the commit time of every row of table on the node that
// wrote it, for ids satisfying keep.
func commitTimes(ctx context.Context, conn *pgx.Conn, table string, keep func(int64) bool) (map[int64]time.Time, error) {
	rows, err := conn.Query(ctx, "SELECT id, pg_xact_commit_timestamp(xmin) FROM "+pgx.Identifier{table}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("read commit times: %w", err)
	}
	defer rows.Close()
	out := map[int64]time.Time{}
	for rows.Next() {
		var id int64
		var ts *time.Time
		if err := rows.Scan(&id, &ts); err != nil {
			return nil, fmt.Errorf("read commit times: %w", err)
		}
		if ts != nil && keep(id) {
			out[id] = *ts
		}
	}
	return out, rows.Err()
}

// latencies pairs commit times with visibility times; rows committed but
// never seen are counted as missing.
func latencies(committed, seen map[int64]time.Time) (lat []time.Duration, missing int) {
	for id, ct := range committed {
		at, ok := seen[id]
		if !ok {
			missing++
			continue
		}
		lat = append(lat, at.Sub(ct))
	}
	sortDurations(lat)
	return lat, missing
}

func sortDurations(d []time.Duration) { slices.Sort(d) }

// percentile of sorted durations, p in [0, 100].
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

var errNoSamples = errors.New("no latency samples")
