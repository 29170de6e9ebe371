package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

// logBuffer collects log lines from many goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// debugLogger logs everything, at debug level and up, into a new buffer.
func debugLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// TestSecurityReplicatesWithAuthAndTLS runs two nodes whose agents connect
// to a server that requires a user and password, TLS and a client
// certificate, and checks that no password shows in a log line, an error or
// the group's bucket.
func TestSecurityReplicatesWithAuthAndTLS(t *testing.T) {
	const user = "pgactive"
	password := "nats-" + randomPassword(t)
	certs := GenerateTLS(t, t.TempDir(), "127.0.0.1")
	log, logs := debugLogger()
	ns := StartNATSCluster(t, 1, WithNATSLog(log),
		WithNATSAuth(stream.ServerAuth{User: user, Password: password}),
		WithNATSTLS(stream.ServerTLS{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, CAFile: certs.CA, VerifyClients: true}))
	auth := stream.ClientAuth{User: user, Password: password, TLSCA: certs.CA, TLSCert: certs.ClientCert, TLSKey: certs.ClientKey}
	opts, err := auth.Options()
	if err != nil {
		t.Fatal(err)
	}

	pgs := make([]*Postgres, 2)
	conns := make([]*pgx.Conn, 2)
	for i := range pgs {
		pgs[i] = StartPostgres(t)
		pgs[i].CreateDatabase(t, "app")
		pgs[i].Exec(t, "app", loadSchema)
		conns[i] = pgs[i].Connect(t, "app")
	}
	agents := make([]*Agent, 2)
	for i := range pgs {
		cfg := node.Config{Group: "app", Node: fmt.Sprintf("node%d", i+1), DSN: pgs[i].DSN("app")}
		agents[i] = StartAgentWith(t, stream.ConnectOptions{URLs: ns.URLs(), Options: opts}, cfg, log)
	}
	WaitAppliers(t, agents[0], "node2")
	WaitAppliers(t, agents[1], "node1")
	mustExec(t, conns[0], `INSERT INTO items (id, val) SELECT g, 'from node1' FROM generate_series(1, 100) g`)
	mustExec(t, conns[1], `INSERT INTO items (id, val) SELECT g, 'from node2' FROM generate_series(101, 200) g`)
	WaitSameRows(t, time.Minute, "items", conns...)
	if got := count(t, conns[1], `SELECT count(*) FROM items`); got != 200 {
		t.Fatalf("rows on node2: got %d, want 200", got)
	}

	// Refused connections, so that their errors are checked too.
	var errs []error
	for _, wrong := range []stream.ClientAuth{
		{User: user, Password: "wrong-" + password, TLSCA: certs.CA, TLSCert: certs.ClientCert, TLSKey: certs.ClientKey},
		{User: user, Password: password, TLSCA: certs.CA},
	} {
		_, err := connectWith(t, ns.URLs(), wrong)
		if err == nil {
			t.Fatalf("connect with %+v: got no error, want a refusal", redacted(wrong))
		}
		errs = append(errs, err)
	}
	for _, a := range agents {
		a.Stop()
	}

	secrets := map[string]string{"NATS password": password}
	for i, p := range pgs {
		secrets[fmt.Sprintf("PostgreSQL password of node%d", i+1)] = p.Password
	}
	texts := map[string]string{"logs": logs.String()}
	for i, err := range errs {
		texts[fmt.Sprintf("error %d", i+1)] = err.Error()
	}
	for k, v := range bucketValues(t, ns.URLs(), opts) {
		texts["bucket key "+k] = v
	}
	if !strings.Contains(texts["logs"], "agent ready") {
		t.Fatalf("the captured log has no %q line: is the agent's log captured?", "agent ready")
	}
	for where, text := range texts {
		for what, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds the %s", where, what)
			}
		}
	}
	t.Logf("%d log bytes, %d errors and %d bucket values hold no password", len(texts["logs"]), len(errs), len(texts)-1-len(errs))
}

// TestSecurityRefusals connects to a server that requires a user and
// password over TLS with client certificates, with credentials right and
// wrong, and checks each refusal says why without holding a password.
func TestSecurityRefusals(t *testing.T) {
	const user = "pgactive"
	password := "nats-" + randomPassword(t)
	wrongPassword := "wrong-" + randomPassword(t)
	certs := GenerateTLS(t, t.TempDir(), "127.0.0.1")
	otherCA := GenerateTLS(t, t.TempDir(), "127.0.0.1")
	ns := StartNATSCluster(t, 1,
		WithNATSAuth(stream.ServerAuth{User: user, Password: password}),
		WithNATSTLS(stream.ServerTLS{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, CAFile: certs.CA, VerifyClients: true}))
	good := stream.ClientAuth{User: user, Password: password, TLSCA: certs.CA, TLSCert: certs.ClientCert, TLSKey: certs.ClientKey}

	for _, tc := range []struct {
		name   string
		change func(*stream.ClientAuth)
		is     error  // the error matches this, if set
		says   string // the error says this
	}{
		{"right credentials", func(*stream.ClientAuth) {}, nil, ""},
		{"wrong password", func(a *stream.ClientAuth) { a.Password = wrongPassword }, nats.ErrAuthorization, "refused the credentials"},
		{"wrong user", func(a *stream.ClientAuth) { a.User = "someone" }, nats.ErrAuthorization, "refused the credentials"},
		{"no credentials", func(a *stream.ClientAuth) { a.User, a.Password = "", "" }, nats.ErrAuthorization, "refused the credentials"},
		{"no client certificate", func(a *stream.ClientAuth) { a.TLSCert, a.TLSKey = "", "" }, nil, "client certificate"},
		{"server certificate from an unknown CA", func(a *stream.ClientAuth) { a.TLSCA = otherCA.CA }, nil, "not signed by a trusted CA"},
		{"client certificate from an unknown CA", func(a *stream.ClientAuth) { a.TLSCert, a.TLSKey = otherCA.ClientCert, otherCA.ClientKey }, nil, "client certificate"},
		{"no TLS settings", func(a *stream.ClientAuth) { a.TLSCA, a.TLSCert, a.TLSKey = "", "", "" }, nil, "not signed by a trusted CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			auth := good
			tc.change(&auth)
			nc, err := connectWith(t, ns.URLs(), auth)
			if tc.says == "" {
				if err != nil {
					t.Fatalf("got %v, want a connection", err)
				}
				nc.Close()
				return
			}
			if err == nil {
				nc.Close()
				t.Fatalf("got a connection, want a refusal saying %q", tc.says)
			}
			t.Logf("refused: %v", err)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("got %v, want an error matching %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("got %q, want it to say %q", err, tc.says)
			}
			for _, secret := range []string{password, wrongPassword} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q holds a password", err)
				}
			}
		})
	}
}

// TestSecurityToken connects to a server that requires a token.
func TestSecurityToken(t *testing.T) {
	token := "token-" + randomPassword(t)
	ns := StartNATSCluster(t, 1, WithNATSAuth(stream.ServerAuth{Token: token}))
	nc, err := connectWith(t, ns.URLs(), stream.ClientAuth{Token: token})
	if err != nil {
		t.Fatalf("connect with the token: %v", err)
	}
	nc.Close()
	_, err = connectWith(t, ns.URLs(), stream.ClientAuth{Token: "not-" + token})
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connect with a wrong token: got %v, want %v", err, nats.ErrAuthorization)
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("error %q holds the token", err)
	}
}

// TestSecurityNKey connects with an NKey seed file to a server that lets in
// that NKey and a user with a password.
func TestSecurityNKey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "agent.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherFile := filepath.Join(t.TempDir(), "other.nk")
	if err := os.WriteFile(otherFile, otherSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	password := "nats-" + randomPassword(t)
	ns := StartNATSCluster(t, 1, WithNATSAuth(stream.ServerAuth{User: "pgactive", Password: password, NKeys: []string{pub}}))
	for _, tc := range []struct {
		name string
		auth stream.ClientAuth
		ok   bool
	}{
		{"listed NKey", stream.ClientAuth{NKeySeedFile: seedFile}, true},
		{"user and password beside NKeys", stream.ClientAuth{User: "pgactive", Password: password}, true},
		{"unlisted NKey", stream.ClientAuth{NKeySeedFile: otherFile}, false},
		{"wrong password", stream.ClientAuth{User: "pgactive", Password: "x" + password}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := connectWith(t, ns.URLs(), tc.auth)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("got %v, want a connection", err)
			case tc.ok:
				nc.Close()
			case !errors.Is(err, nats.ErrAuthorization):
				t.Fatalf("got %v, want %v", err, nats.ErrAuthorization)
			case strings.Contains(err.Error(), string(seed)) || strings.Contains(err.Error(), password):
				t.Errorf("error %q holds a secret", err)
			}
		})
	}
}

// connectWith connects as an agent does, with auth.
func connectWith(t *testing.T, urls string, auth stream.ClientAuth) (*nats.Conn, error) {
	t.Helper()
	opts, err := auth.Options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.ReconnectWait(50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	nc, _, err := stream.Connect(ctx, stream.ConnectOptions{URLs: urls, Name: "pgactive test", Options: opts}, slog.New(slog.DiscardHandler))
	return nc, err
}

// bucketValues returns every key and value of group app's bucket.
func bucketValues(t *testing.T, urls string, opts []nats.Option) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, js, err := stream.Connect(ctx, stream.ConnectOptions{URLs: urls, Name: "pgactive test", Options: opts}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, stream.BucketName("app"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		if e, err := kv.Get(ctx, k); err == nil {
			out[k] = string(e.Value())
		}
	}
	if len(out) == 0 {
		t.Fatal("the group's bucket is empty: nothing to check")
	}
	return out
}

// redacted hides the password of a for messages.
func redacted(a stream.ClientAuth) stream.ClientAuth {
	if a.Password != "" {
		a.Password = "[redacted]"
	}
	return a
}
