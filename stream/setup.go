package stream

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	// Options (authentication, TLS; see ClientAuth) applied after the defaults.
	Options []nats.Option
}

// ClientAuth is how a client proves who it is to NATS and checks the
// servers: at most one of user and password, token, NKey seed file or
// credentials file, plus optional TLS files.
type ClientAuth struct {
	User         string
	Password     string
	Token        string
	NKeySeedFile string
	CredsFile    string
	// TLSCA verifies the servers' certificates; TLSCert and TLSKey are this
	// client's certificate, for servers that verify clients.
	TLSCA   string
	TLSCert string
	TLSKey  string
}

// Options returns the nats options for a, reading the files it names. Its
// errors never hold a secret.
func (a ClientAuth) Options() ([]nats.Option, error) {
	methods := 0
	for _, set := range []bool{a.User != "" || a.Password != "", a.Token != "", a.NKeySeedFile != "", a.CredsFile != ""} {
		if set {
			methods++
		}
	}
	switch {
	case methods > 1:
		return nil, errors.New("NATS client: use one of user and password, token, NKey seed or credentials file")
	case a.User != "" && a.Password == "":
		return nil, fmt.Errorf("NATS client: user %q has no password", a.User)
	case a.User == "" && a.Password != "":
		return nil, errors.New("NATS client: a password is set without a user")
	case (a.TLSCert == "") != (a.TLSKey == ""):
		return nil, errors.New("NATS client: a TLS client certificate needs both the certificate and its key")
	}
	var opts []nats.Option
	switch {
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	case a.Token != "":
		opts = append(opts, nats.Token(a.Token))
	case a.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(a.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("NATS client: read NKey seed file %s: %w", a.NKeySeedFile, err)
		}
		opts = append(opts, o)
	case a.CredsFile != "":
		if _, err := os.Stat(a.CredsFile); err != nil {
			return nil, fmt.Errorf("NATS client: credentials file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	for what, path := range map[string]string{"TLS CA file": a.TLSCA, "TLS certificate": a.TLSCert, "TLS key": a.TLSKey} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("NATS client: %s: %w", what, err)
		}
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	return opts, nil
}

// Connect opens a NATS connection that reconnects forever and returns it with
// its JetStream context. It waits (until ctx ends) for JetStream to answer,
// which on a cluster needs a meta leader, hence a majority of its servers.
func Connect(ctx context.Context, o ConnectOptions, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.Timeout(5 * time.Second), // TLS and authentication on a busy or distant server
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
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w%s", RedactURLs(o.URLs), err, connectHint(err))
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("open JetStream: %w", err)
	}
	if err := waitJetStream(ctx, js, log); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("JetStream is not available at %s: %w", RedactURLs(o.URLs), err)
	}
	return nc, js, nil
}

// connectHint names the likely fix of a refused connection.
func connectHint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var badName x509.HostnameError
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return " (the server refused the credentials: check the NATS user and password, token, NKey seed or credentials file)"
	case errors.As(err, &unknownCA):
		return " (the server's certificate is not signed by a trusted CA: give the CA file)"
	case errors.As(err, &badName):
		return " (the server's certificate does not name the host of the URL: connect by a name the certificate holds)"
	case errors.Is(err, nats.ErrSecureConnRequired):
		return " (the server requires TLS: give the CA file of its certificate)"
	case strings.Contains(err.Error(), "certificate required"):
		return " (the server requires a client certificate: give the client certificate and key)"
	case strings.Contains(err.Error(), "unknown certificate authority"), strings.Contains(err.Error(), "bad certificate"):
		return " (the server does not accept the client certificate: use one signed by the CA the server verifies clients with)"
	case strings.Contains(err.Error(), "closed by remote after TLS handshake"):
		return " (the server closed the connection after the TLS handshake, as it does when it refuses the client certificate: check the client certificate and key)"
	}
	return ""
}

var errNoJetStreamAnswer = errors.New("no answer from JetStream: a cluster answers once a majority of its servers are up and routed to each other")

// waitJetStream waits until JetStream answers, logging once while it waits.
// A server without JetStream fails at once.
func waitJetStream(ctx context.Context, js jetstream.JetStream, log *slog.Logger) error {
	logged := false
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		switch {
		case err == nil:
			if logged {
				log.Info("JetStream available")
			}
			return nil
		case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
			return fmt.Errorf("%w (is the server started with JetStream enabled?)", err)
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = errNoJetStreamAnswer
		}
		if !logged {
			log.Warn("waiting for JetStream", "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return errNoJetStreamAnswer
			}
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// RedactURLs hides the credentials in a comma-separated list of NATS URLs.
func RedactURLs(urls string) string {
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
//
// An existing stream is left as it is: updating a stream while consumers of
// it are being created races inside nats-server.
func (l *Layout) EnsureStream(ctx context.Context, node string) (jetstream.Stream, error) {
	var s jetstream.Stream
	err := retryTransient(ctx, func() (err error) { s, err = l.ensureStream(ctx, node); return err })
	return s, err
}

func (l *Layout) ensureStream(ctx context.Context, node string) (jetstream.Stream, error) {
	name := StreamName(l.Group, node)
	if s, err := l.JS.Stream(ctx, name); err == nil {
		return s, nil
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("look up stream %s: %w", name, err)
	}
	s, err := l.JS.CreateStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: "pgactive transactions of node " + node,
		Subjects:    []string{SubjectPrefix(l.Group, node) + ".>"},
		Retention:   jetstream.InterestPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    l.replicas(),
		Duplicates:  10 * time.Minute,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true, // lets `nats stream view` page an interest stream
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return l.JS.Stream(ctx, name) // created concurrently
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", name, err)
	}
	return s, nil
}

// EnsureConsumer creates the durable consumer through which target applies
// origin's stream, delivering everything the stream still holds.
func (l *Layout) EnsureConsumer(ctx context.Context, origin, target string) (jetstream.Consumer, error) {
	var c jetstream.Consumer
	err := retryTransient(ctx, func() (err error) { c, err = l.ensureConsumer(ctx, origin, target); return err })
	return c, err
}

func (l *Layout) ensureConsumer(ctx context.Context, origin, target string) (jetstream.Consumer, error) {
	sname, cname := StreamName(l.Group, origin), ConsumerName(target)
	if c, err := l.JS.Consumer(ctx, sname, cname); err == nil {
		return c, nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("look up consumer %s on %s: %w", cname, sname, err)
	}
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
	var kv jetstream.KeyValue
	err := retryTransient(ctx, func() (err error) { kv, err = l.ensureBucket(ctx); return err })
	return kv, err
}

func (l *Layout) ensureBucket(ctx context.Context) (jetstream.KeyValue, error) {
	name := BucketName(l.Group)
	if kv, err := l.JS.KeyValue(ctx, name); err == nil {
		return kv, nil
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("look up key-value bucket %s: %w", name, err)
	}
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
	if s, err := l.JS.Stream(ctx, name); err == nil {
		return s, nil
	}
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

// transientWait bounds how long Layout retries requests that a cluster
// cannot answer for a moment.
const transientWait = 30 * time.Second

// retryTransient calls f until it succeeds, fails for good, transientWait
// has passed or ctx ends. On a cluster, requests about a stream or consumer
// whose replicas have no leader yet (just created, or the leader's server just
// went away) time out or find JetStream unavailable for a few seconds.
func retryTransient(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(transientWait)
	for {
		err := f()
		if err == nil || !transient(ctx, err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// jsErrCodeTemporarilyUnavailable is JetStream's "system temporarily
// unavailable", answered while a cluster has no meta leader.
const jsErrCodeTemporarilyUnavailable jetstream.ErrorCode = 10008

func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var apiErr *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeTemporarilyUnavailable)
}

// AckWait is how long a delivered, unacknowledged message waits before the
// server delivers it again. Apply keeps long transactions alive with
// in-progress acknowledgements, so this only bounds the pause after a crash.
const AckWait = 15 * time.Second
