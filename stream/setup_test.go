package stream

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestClusterTransientErrors(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"request timed out", live, fmt.Errorf("look up consumer: %w", context.DeadlineExceeded), true},
		{"no responders", live, nats.ErrNoResponders, true},
		{"no meta leader", live, &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{"not found", live, jetstream.ErrStreamNotFound, false},
		{"bad request", live, &jetstream.APIError{Code: 400, ErrorCode: 10003}, false},
		{"caller gave up", done, context.DeadlineExceeded, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := transient(tc.ctx, tc.err); got != tc.want {
				t.Errorf("transient(%v): got %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestClusterRetryTransient(t *testing.T) {
	calls := 0
	err := retryTransient(context.Background(), func() error {
		calls++
		if calls < 3 {
			return context.DeadlineExceeded
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("two timeouts then success: got %v after %d calls, want nil after 3", err, calls)
	}
	calls = 0
	err = retryTransient(context.Background(), func() error { calls++; return jetstream.ErrConsumerNotFound })
	if !errors.Is(err, jetstream.ErrConsumerNotFound) || calls != 1 {
		t.Errorf("a lasting error: got %v after %d calls, want it after 1", err, calls)
	}
}
