package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/pgactive-go/pgactive/monitor"
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

// TestSecurityReplicatesWithAuthAndTLS runs two nodes, the quick start's
// way (controllers, user mappings holding each node's PostgreSQL password,
// create, join with an initial copy), whose agents connect to a NATS server
// that requires a user and password, TLS and a client certificate. It
// checks that no password shows in a log line, an error, the group's
// bucket, a response of the HTTP endpoint (/lag, /metrics, /healthz,
// /readyz), pgactive.pgactive_nodes, pgactive_get_replication_lag_info(),
// or the request and join progress tables.
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

	pgs := []*Postgres{StartPostgres(t), StartPostgres(t)}
	monitors := &monitor.Set{}
	for i, p := range pgs {
		p.CreateDatabase(t, "app")
		dsn := p.DSN("app")
		// The test can fail only if the agents really hold and use the
		// passwords: their DSNs carry them, and the server refuses a
		// connection without one.
		if !strings.Contains(dsn, "password="+p.Password) {
			t.Fatalf("node%d's DSN carries no password: nothing to leak", i+1)
		}
		noPassword := strings.Replace(dsn, "password="+p.Password, "", 1)
		if c, err := pgx.Connect(context.Background(), noPassword); err == nil {
			c.Close(context.Background())
			t.Fatalf("node%d accepts a connection without a password", i+1)
		}
		StartControllerWith(t, stream.ConnectOptions{URLs: ns.URLs(), Options: opts, Name: fmt.Sprintf("pgactive test node%d", i+1)},
			node.ControllerConfig{DSN: dsn, Replicas: 1, Monitors: monitors, Log: log})
	}
	srv := httptest.NewServer(monitor.NewHandler(monitor.HandlerConfig{Monitors: monitors.List, Agents: len(pgs), Log: log}))
	t.Cleanup(srv.Close)

	pgs[0].Exec(t, "app", loadSchema)
	for _, p := range pgs {
		extSetUp(t, p, "app")
		p.Psql(t, "app", serversSQL(pgs)) // user mappings with each node's password
		WaitFor(t, 30*time.Second, "agent attached", func() (bool, error) {
			return strings.TrimSpace(p.Psql(t, "app", "SELECT pgactive.pgactive_is_agent_attached();")) == "t", nil
		})
	}
	pgs[0].Psql(t, "app", `SELECT pgactive.pgactive_create_group(node_name := 'node1', node_dsn := 'user_mapping=postgres pgactive_foreign_server=node1');
SELECT pgactive.pgactive_wait_for_node_ready(60);`)
	mustExec(t, pgs[0].Connect(t, "app"), `INSERT INTO items (id, val) SELECT g, 'from node1' FROM generate_series(1, 100) g`)
	// The join reads node1's password from node2's user mapping.
	pgs[1].Psql(t, "app", joinSQL(2, 1)+"\nSELECT pgactive.pgactive_wait_for_node_ready(120);")
	conns := []*pgx.Conn{pgs[0].Connect(t, "app"), pgs[1].Connect(t, "app")}
	mustExec(t, conns[1], `INSERT INTO items (id, val) SELECT g, 'from node2' FROM generate_series(101, 200) g`)
	mustExec(t, conns[0], `UPDATE items SET n = n + 1 WHERE id > 150`)
	WaitSameRows(t, time.Minute, "items", conns...)
	if got := count(t, conns[1], `SELECT count(*) FROM items`); got != 200 {
		t.Fatalf("rows on node2: got %d, want 200", got)
	}

	// Every output holds something, so that a password in it would show.
	waitStatus(t, srv.URL+"/readyz", http.StatusOK, `"ready": true`)
	waitStatus(t, srv.URL+"/healthz", http.StatusOK, `"status": "ok"`)
	waitStatus(t, srv.URL+"/lag", http.StatusOK, `"node1"`, `"node2"`)
	waitStatus(t, srv.URL+"/metrics", http.StatusOK, `pgactive_lag_seconds{`)
	sqlOutputs := []struct {
		name, sql string
		nodes     []int // the nodes where it has rows
	}{
		{"pgactive_nodes", `SELECT row_to_json(n)::text FROM pgactive.pgactive_nodes n`, []int{0, 1}},
		{"pgactive_get_replication_lag_info()", `SELECT row_to_json(l)::text FROM pgactive.pgactive_get_replication_lag_info() l`, []int{0, 1}},
		{"pgactive_requests", `SELECT row_to_json(r)::text FROM pgactive.pgactive_requests r`, []int{0, 1}},
		{"pgactive_join_progress", `SELECT row_to_json(j)::text FROM pgactive.pgactive_join_progress j`, []int{1}},
	}
	WaitFor(t, time.Minute, "both lag paths and both members in SQL on both nodes", func() (bool, error) {
		var state []string
		for i, c := range conns {
			lag := count(t, c, `SELECT count(*) FROM pgactive.pgactive_get_replication_lag_info()`)
			members := count(t, c, `SELECT count(*) FROM pgactive.pgactive_nodes WHERE node_dsn IS NOT NULL`)
			if lag != 2 || members != 2 {
				state = append(state, fmt.Sprintf("node%d: %d lag rows, %d members with a DSN", i+1, lag, members))
			}
		}
		return len(state) == 0, errors.New(strings.Join(state, "; "))
	})
	// node2's row on node1 carries node2's agent DSN, redacted: the path a
	// password would take is exercised.
	if got := count(t, conns[0], `SELECT count(*) FROM pgactive.pgactive_nodes WHERE node_name = 'node2' AND node_dsn LIKE '%user=%'`); got != 1 {
		t.Fatalf("node2's row on node1 holds no agent DSN (got %d rows): the redaction is not exercised", got)
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

	texts := map[string]string{}
	for _, path := range []string{"/lag", "/metrics", "/healthz", "/readyz"} {
		code, body, err := httpGet(srv.URL + path)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d, %v", path, code, err)
		}
		texts["GET "+path] = string(body)
	}
	for i, c := range conns {
		for _, out := range sqlOutputs {
			rows, err := c.Query(context.Background(), out.sql)
			if err != nil {
				t.Fatalf("%s: %v", out.sql, err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatalf("%s: %v", out.sql, err)
			}
			if len(lines) == 0 && slices.Contains(out.nodes, i) {
				t.Fatalf("node%d: %s is empty: nothing to check", i+1, out.name)
			}
			texts[fmt.Sprintf("%s on node%d", out.name, i+1)] = strings.Join(lines, "\n")
		}
	}
	for i, err := range errs {
		texts[fmt.Sprintf("error %d", i+1)] = err.Error()
	}
	for k, v := range bucketValues(t, ns.URLs(), opts) {
		texts["bucket key "+k] = v
	}
	texts["logs"] = logs.String() // last: the reads above log too
	if !strings.Contains(texts["logs"], "agent ready") {
		t.Fatalf("the captured log has no %q line: is the agent's log captured?", "agent ready")
	}

	secrets := map[string]string{"NATS password": password}
	for i, p := range pgs {
		secrets[fmt.Sprintf("PostgreSQL password of node%d", i+1)] = p.Password
	}
	// The check itself finds a password where there is one.
	if leaks(map[string]string{"a DSN": pgs[1].DSN("app")}, secrets) == nil {
		t.Fatal("the leak check does not find a password in a DSN")
	}
	found := leaks(texts, secrets)
	for _, leak := range found {
		t.Error(leak)
	}
	if len(found) > 0 {
		return
	}
	t.Logf("%d outputs hold no password: %s", len(texts), strings.Join(slices.Sorted(maps.Keys(texts)), ", "))
}

// leaks says which of texts holds which of secrets.
func leaks(texts, secrets map[string]string) []string {
	var out []string
	for where, text := range texts {
		for what, secret := range secrets {
			if strings.Contains(text, secret) {
				out = append(out, fmt.Sprintf("%s holds the %s", where, what))
			}
		}
	}
	slices.Sort(out)
	return out
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
