package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ConnectOptions configures a client connection to NATS.
type ConnectOptions struct {
	// URLs is a comma-separated list of seed URLs.
	URLs string
	// Name is the client name shown by the server.
	Name string
	// Extra options (authentication, TLS) applied after the defaults.
	Options []nats.Option
}

// Connect opens a NATS connection that reconnects forever and returns it with
// its JetStream context.
func Connect(ctx context.Context, o ConnectOptions, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted())
		}),
	}
	opts = append(opts, o.Options...)
	nc, err := nats.Connect(o.URLs, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(o.URLs), err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("open JetStream: %w", err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("JetStream is not available at %s (is the server started with JetStream enabled?): %w", redactURLs(o.URLs), err)
	}
	return nc, js, nil
}

// redactURLs hides passwords and tokens in NATS URLs.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				parts[i] = p[:scheme+3] + "[redacted]" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// Layout creates and finds the JetStream objects of one group.
type Layout struct {
	JS       jetstream.JetStream
	Group    string
	Replicas int // replicas of streams and the bucket; 0 means 1
}

func (l *Layout) replicas() int { return max(l.Replicas, 1) }

// EnsureStream creates or updates the stream of node. Messages are kept until
// every consumer (one per other member) has acknowledged them.
func (l *Layout) EnsureStream(ctx context.Context, node string) (jetstream.Stream, error) {
	name := StreamName(l.Group, node)
	s, err := l.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: "pgactive transactions of node " + node,
		Subjects:    []string{SubjectPrefix(l.Group, node) + ".>"},
		Retention:   jetstream.InterestPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    l.replicas(),
		Duplicates:  10 * time.Minute,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", name, err)
	}
	return s, nil
}

// EnsureConsumer creates the durable consumer through which target applies
// origin's stream, delivering everything the stream still holds.
func (l *Layout) EnsureConsumer(ctx context.Context, origin, target string) (jetstream.Consumer, error) {
	sname, cname := StreamName(l.Group, origin), ConsumerName(target)
	c, err := l.JS.CreateOrUpdateConsumer(ctx, sname, jetstream.ConsumerConfig{
		Durable:       cname,
		Description:   "apply of " + origin + " on " + target,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       AckWait,
		MaxAckPending: -1,
		MaxDeliver:    -1,
		Replicas:      l.replicas(),
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on %s: %w", cname, sname, err)
	}
	return c, nil
}

// Consumer finds the consumer through which target applies origin's stream.
func (l *Layout) Consumer(ctx context.Context, origin, target string) (jetstream.Consumer, error) {
	c, err := l.JS.Consumer(ctx, StreamName(l.Group, origin), ConsumerName(target))
	if err != nil {
		return nil, fmt.Errorf("find consumer %s on %s: %w", ConsumerName(target), StreamName(l.Group, origin), err)
	}
	return c, nil
}

// DeleteConsumer removes target's consumer from origin's stream, if present.
func (l *Layout) DeleteConsumer(ctx context.Context, origin, target string) error {
	err := l.JS.DeleteConsumer(ctx, StreamName(l.Group, origin), ConsumerName(target))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete consumer %s on %s: %w", ConsumerName(target), StreamName(l.Group, origin), err)
	}
	return nil
}

// DeleteStream removes node's stream, if present.
func (l *Layout) DeleteStream(ctx context.Context, node string) error {
	err := l.JS.DeleteStream(ctx, StreamName(l.Group, node))
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete stream %s: %w", StreamName(l.Group, node), err)
	}
	return nil
}

// EnsureBucket creates or opens the group's key-value bucket.
func (l *Layout) EnsureBucket(ctx context.Context) (jetstream.KeyValue, error) {
	name := BucketName(l.Group)
	kv, err := l.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: "pgactive group " + l.Group + ": members, node state, lag rows",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    l.replicas(),
	})
	if err != nil {
		return nil, fmt.Errorf("create key-value bucket %s: %w", name, err)
	}
	return kv, nil
}

// EnsureParked creates the stream that keeps undecodable messages.
func (l *Layout) EnsureParked(ctx context.Context) (jetstream.Stream, error) {
	name := ParkedStreamName(l.Group)
	s, err := l.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: "pgactive messages of group " + l.Group + " that could not be applied",
		Subjects:    []string{"pgactive_parked." + Token(l.Group) + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    l.replicas(),
		MaxAge:      30 * 24 * time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", name, err)
	}
	return s, nil
}

// AckWait is how long a delivered, unacknowledged message waits before the
// server delivers it again. Apply keeps long transactions alive with
// in-progress acknowledgements, so this only bounds the pause after a crash.
const AckWait = 15 * time.Second
