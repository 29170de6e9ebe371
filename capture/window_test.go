package capture

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fakeFuture is a publish acknowledgement the test resolves.
type fakeFuture struct {
	msg *nats.Msg
	ok  chan *jetstream.PubAck
	err chan error
}

func (f *fakeFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *fakeFuture) Err() <-chan error            { return f.err }
func (f *fakeFuture) Msg() *nats.Msg               { return f.msg }

func (f *fakeFuture) ack(seq uint64, duplicate bool) {
	f.ok <- &jetstream.PubAck{Stream: testStream, Sequence: seq, Duplicate: duplicate}
}

func (f *fakeFuture) fail(err error) { f.err <- err }

// fakePublisher records publishes and hands out futures the test resolves,
// at once through onPublish or later through future(i).
type fakePublisher struct {
	mu        sync.Mutex
	futs      []*fakeFuture
	opts      [][]jetstream.PublishOpt
	onPublish func(i int, f *fakeFuture)
	err       error // returned by PublishMsgAsync when set
}

var _ asyncPublisher = (*fakePublisher)(nil)

func (p *fakePublisher) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return nil, p.err
	}
	f := &fakeFuture{msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	p.futs = append(p.futs, f)
	p.opts = append(p.opts, opts)
	if p.onPublish != nil {
		p.onPublish(len(p.futs)-1, f)
	}
	return f, nil
}

func (p *fakePublisher) future(i int) *fakeFuture {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.futs[i]
}

func (p *fakePublisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.futs)
}

// checkExpected checks the stream name and last sequence publish i asked the
// server to check. The options are functions over an unexported struct of
// nats.go, so they are applied to a fresh one by reflection; when its shape
// changes the check is skipped, not failed.
func (p *fakePublisher) checkExpected(t *testing.T, i int, wantSeq uint64) {
	t.Helper()
	p.mu.Lock()
	opts := p.opts[i]
	p.mu.Unlock()
	stream, seq, ok := expectations(opts)
	if !ok {
		t.Logf("publish options are opaque in this nats.go; not checking the expected sequence")
		return
	}
	if stream != testStream || seq != wantSeq {
		t.Errorf("publish %d: got expected stream %q, last sequence %d; want %q, %d", i, stream, seq, testStream, wantSeq)
	}
}

func expectations(opts []jetstream.PublishOpt) (stream string, lastSeq uint64, ok bool) {
	if len(opts) == 0 {
		return "", 0, false
	}
	ft := reflect.TypeOf(opts[0])
	if ft.Kind() != reflect.Func || ft.NumIn() != 1 || ft.In(0).Kind() != reflect.Pointer || ft.In(0).Elem().Kind() != reflect.Struct {
		return "", 0, false
	}
	o := reflect.New(ft.In(0).Elem())
	for _, opt := range opts {
		if out := reflect.ValueOf(opt).Call([]reflect.Value{o}); len(out) != 1 || !out[0].IsNil() {
			return "", 0, false
		}
	}
	s, ls := o.Elem().FieldByName("stream"), o.Elem().FieldByName("lastSeq")
	if s.Kind() != reflect.String || ls.Kind() != reflect.Pointer || ls.Type().Elem().Kind() != reflect.Uint64 || ls.IsNil() {
		return "", 0, false
	}
	return s.String(), ls.Elem().Uint(), true
}

const testStream = "PGACTIVE_g_n1"

func testMsg(id string, size int) *nats.Msg {
	m := nats.NewMsg("pgactive.g.n1.txn")
	m.Header.Set(nats.MsgIdHdr, id)
	m.Data = make([]byte, size)
	return m
}

// pipelined returns a window past its first stored message (sequence 10,
// end LSN 0x100), publishing with sequence expectations.
func pipelined(t *testing.T, p *fakePublisher, maxCount, maxBytes int) *window {
	t.Helper()
	w := newWindow(p, testStream, maxCount, maxBytes, 0x80, 9)
	p.onPublish = func(_ int, f *fakeFuture) { f.ack(10, false) }
	if err := w.publish(context.Background(), testMsg("first", 1), 0x100); err != nil {
		t.Fatalf("publish: %v", err)
	}
	p.onPublish = nil
	if !w.fresh || w.lastSeq != 10 || w.confirmed != 0x100 || !w.empty() {
		t.Fatalf("after the first stored message: got fresh %t, last sequence %d, confirmed %s, empty %t",
			w.fresh, w.lastSeq, w.confirmed, w.empty())
	}
	return w
}

func TestWindowOneAtATimeUntilFirstStored(t *testing.T) {
	ctx := context.Background()
	p := &fakePublisher{}
	w := newWindow(p, testStream, 100, 1<<20, 0x80, 41)
	steps := []struct {
		name      string
		duplicate bool
		seq       uint64
		end       pglogrepl.LSN
		wantSeq   uint64 // expected last sequence sent with the publish
	}{
		{"duplicate", true, 30, 0x100, 41},
		{"another duplicate", true, 31, 0x200, 41},
		{"first stored", false, 77, 0x300, 41},
	}
	for i, s := range steps {
		p.onPublish = func(_ int, f *fakeFuture) { f.ack(s.seq, s.duplicate) }
		if err := w.publish(ctx, testMsg(s.name, 10), s.end); err != nil {
			t.Fatalf("%s: publish: %v", s.name, err)
		}
		p.checkExpected(t, i, s.wantSeq)
		if !w.empty() {
			t.Errorf("%s: publish returned before its acknowledgement", s.name)
		}
		if w.confirmed != s.end {
			t.Errorf("%s: got confirmed %s, want %s", s.name, w.confirmed, s.end)
		}
	}

	// Pipelined now: publishes return at once and expect the sequence after
	// the stored one.
	p.onPublish = nil
	for i, end := range []pglogrepl.LSN{0x400, 0, 0x500} {
		if err := w.publish(ctx, testMsg("pipelined", 10), end); err != nil {
			t.Fatalf("pipelined %d: publish: %v", i, err)
		}
		p.checkExpected(t, 3+i, 77+uint64(i))
	}
	if got, want := len(w.q), 3; got != want {
		t.Fatalf("got %d outstanding, want %d", got, want)
	}
	if w.confirmed != 0x300 {
		t.Errorf("before acknowledgements: got confirmed %s, want 0/300", w.confirmed)
	}
	for i := 3; i < 6; i++ {
		p.future(i).ack(uint64(75+i), false)
	}
	if err := w.drain(); err != nil {
		t.Fatalf("drain: %v", err)
	}
	if !w.empty() || w.confirmed != 0x500 || w.bytes != 0 {
		t.Errorf("after acknowledgements: got empty %t, confirmed %s, bytes %d; want true, 0/500, 0", w.empty(), w.confirmed, w.bytes)
	}
}

func TestWindowConfirmedInOrder(t *testing.T) {
	ctx := context.Background()
	p := &fakePublisher{}
	w := pipelined(t, p, 100, 1<<20)
	// Futures 1..4: transaction A, transaction B in two chunks, transaction C.
	for _, m := range []struct {
		id  string
		end pglogrepl.LSN
	}{{"A", 0x1000}, {"B0", 0}, {"B1", 0x2000}, {"C", 0x3000}} {
		if err := w.publish(ctx, testMsg(m.id, 10), m.end); err != nil {
			t.Fatalf("publish %s: %v", m.id, err)
		}
	}
	steps := []struct {
		name string
		do   func()
		want pglogrepl.LSN
		left int // outstanding entries
	}{
		{"C acknowledged before A", func() { p.future(4).ack(14, false) }, 0x100, 4},
		{"A acknowledged", func() { p.future(1).ack(11, false) }, 0x1000, 3},
		{"empty transaction behind C", func() { w.done(0x3500) }, 0x1000, 4},
		{"last chunk of B acknowledged before the first", func() { p.future(3).ack(13, false) }, 0x1000, 4},
		{"first chunk of B acknowledged", func() { p.future(2).ack(12, false) }, 0x3500, 0},
		{"empty transaction with nothing outstanding", func() { w.done(0x4000) }, 0x4000, 0},
		{"older empty transaction", func() { w.done(0x3800) }, 0x4000, 0},
	}
	for _, s := range steps {
		s.do()
		if err := w.drain(); err != nil {
			t.Fatalf("%s: drain: %v", s.name, err)
		}
		if w.confirmed != s.want || len(w.q) != s.left {
			t.Errorf("%s: got confirmed %s with %d outstanding, want %s with %d", s.name, w.confirmed, len(w.q), s.want, s.left)
		}
	}
}

// publishAsync runs w.publish on another goroutine and delivers its result.
func publishAsync(ctx context.Context, w *window, m *nats.Msg, end pglogrepl.LSN) <-chan error {
	done := make(chan error, 1)
	go func() { done <- w.publish(ctx, m, end) }()
	return done
}

// stillBlocked fails when done delivers within a short while.
func stillBlocked(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("publish returned %v, want it blocked", err)
	case <-time.After(50 * time.Millisecond):
	}
}

// awaitPublish waits for done, failing after a deadline.
func awaitPublish(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("publish still blocked")
		return nil
	}
}

func TestWindowBound(t *testing.T) {
	tests := []struct {
		name     string
		maxCount int
		maxBytes int
		sizes    []int // outstanding messages before the blocked one
		size     int   // the message that waits
	}{
		{"message count", 2, 1 << 20, []int{10, 10}, 10},
		{"bytes", 100, 100, []int{60}, 50},
		{"bytes with room for one more message", 100, 100, []int{30, 30}, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			p := &fakePublisher{}
			w := pipelined(t, p, tt.maxCount, tt.maxBytes)
			for i, size := range tt.sizes {
				if err := w.publish(ctx, testMsg("m", size), pglogrepl.LSN(0x1000*(i+1))); err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
			}
			before := p.count()
			done := publishAsync(ctx, w, testMsg("waits", tt.size), 0x9000)
			stillBlocked(t, done)
			if got := p.count(); got != before {
				t.Fatalf("got %d publishes while the window is full, want %d", got, before)
			}
			p.future(1).ack(11, false) // the head
			if err := awaitPublish(t, done); err != nil {
				t.Fatalf("publish: %v", err)
			}
			if got, want := p.count(), before+1; got != want {
				t.Errorf("got %d publishes, want %d", got, want)
			}
			if got, want := w.confirmed, pglogrepl.LSN(0x1000); got != want {
				t.Errorf("got confirmed %s, want %s", got, want)
			}
			want := tt.size
			for _, size := range tt.sizes[1:] {
				want += size
			}
			if got := w.bytes; got != want {
				t.Errorf("got %d outstanding bytes, want %d", got, want)
			}
		})
	}
}

func TestWindowBoundWaitsForHeadOnly(t *testing.T) {
	ctx := context.Background()
	p := &fakePublisher{}
	w := pipelined(t, p, 2, 1<<20)
	for i := range 2 {
		if err := w.publish(ctx, testMsg("m", 10), pglogrepl.LSN(0x1000*(i+1))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	done := publishAsync(ctx, w, testMsg("waits", 10), 0x9000)
	p.future(2).ack(12, false) // not the head
	stillBlocked(t, done)
	p.future(1).ack(11, false)
	if err := awaitPublish(t, done); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if w.confirmed != 0x1000 {
		t.Errorf("got confirmed %s, want 0/1000: only the head was waited for", w.confirmed)
	}
}

func TestWindowLargeMessageWhenEmpty(t *testing.T) {
	p := &fakePublisher{}
	w := pipelined(t, p, 10, 100)
	if err := w.publish(context.Background(), testMsg("big", 500), 0x1000); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if got, want := p.count(), 2; got != want {
		t.Errorf("got %d publishes, want %d", got, want)
	}
}

func TestWindowCancelWhileFull(t *testing.T) {
	p := &fakePublisher{}
	w := pipelined(t, p, 1, 1<<20)
	if err := w.publish(context.Background(), testMsg("m", 10), 0x1000); err != nil {
		t.Fatalf("publish: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := publishAsync(ctx, w, testMsg("waits", 10), 0x2000)
	stillBlocked(t, done)
	cancel()
	if err := awaitPublish(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("got error %v, want context.Canceled", err)
	}
	if got, want := p.count(), 2; got != want {
		t.Errorf("got %d publishes, want %d", got, want)
	}
	if w.confirmed != 0x100 {
		t.Errorf("got confirmed %s, want 0/100", w.confirmed)
	}
}

func TestWindowErrors(t *testing.T) {
	errStore := errors.New("insufficient resources")
	tests := []struct {
		name string
		run  func(t *testing.T, p *fakePublisher) error
	}{
		{"publish refused", func(t *testing.T, p *fakePublisher) error {
			w := pipelined(t, p, 10, 1<<20)
			p.err = errStore
			return w.publish(context.Background(), testMsg("txn-1", 10), 0x1000)
		}},
		{"acknowledgement fails before the first stored message", func(t *testing.T, p *fakePublisher) error {
			w := newWindow(p, testStream, 10, 1<<20, 0x80, 9)
			p.onPublish = func(_ int, f *fakeFuture) { f.fail(errStore) }
			err := w.publish(context.Background(), testMsg("txn-1", 10), 0x1000)
			if w.confirmed != 0x80 {
				t.Errorf("got confirmed %s, want 0/80", w.confirmed)
			}
			return err
		}},
		{"pipelined acknowledgement fails", func(t *testing.T, p *fakePublisher) error {
			w := pipelined(t, p, 10, 1<<20)
			if err := w.publish(context.Background(), testMsg("txn-1", 10), 0x1000); err != nil {
				t.Fatalf("publish: %v", err)
			}
			p.future(1).fail(errStore)
			err := w.drain()
			if w.confirmed != 0x100 {
				t.Errorf("got confirmed %s, want 0/100", w.confirmed)
			}
			return err
		}},
		{"head fails while the window is full", func(t *testing.T, p *fakePublisher) error {
			w := pipelined(t, p, 1, 1<<20)
			if err := w.publish(context.Background(), testMsg("txn-1", 10), 0x1000); err != nil {
				t.Fatalf("publish: %v", err)
			}
			p.future(1).fail(errStore)
			return w.publish(context.Background(), testMsg("txn-2", 10), 0x2000)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run(t, &fakePublisher{})
			if !errors.Is(err, errStore) {
				t.Fatalf("got error %v, want one wrapping %v", err, errStore)
			}
			if !strings.Contains(err.Error(), "txn-1") {
				t.Errorf("error %q does not name the message", err)
			}
		})
	}
}
