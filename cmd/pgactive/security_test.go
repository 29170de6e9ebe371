package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/integration"
	"github.com/pgactive-go/pgactive/stream"
)

const testSecret = "s3cret-Pa55"

// writeSecret writes secret into a new file and returns its path.
func writeSecret(t *testing.T, name, secret string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSecurityConfigErrors(t *testing.T) {
	pw := writeSecret(t, "pw", testSecret)
	empty := writeSecret(t, "empty", "")
	dsn := []string{"--dsn", "dbname=app"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string // the error names the field and the fix
	}{
		{"password flag", []string{"--nats-password", testSecret}, nil, []string{"--nats-password", "PGACTIVE_NATS_PASSWORD", "--nats-password-file"}},
		{"password flag with =", []string{"--nats-password=" + testSecret}, nil, []string{"--nats-password", "command line"}},
		{"token flag", []string{"-nats-token", testSecret}, nil, []string{"--nats-token", "PGACTIVE_NATS_TOKEN"}},
		{"listen password flag", []string{"--nats-listen-password", testSecret}, nil, []string{"PGACTIVE_NATS_LISTEN_PASSWORD"}},
		{"cluster password flag", []string{"--nats-cluster-password", testSecret}, nil, []string{"PGACTIVE_NATS_CLUSTER_PASSWORD"}},
		{"credentials in a seed URL", []string{"--nats", "nats://pgactive:" + testSecret + "@a:4222"}, nil, []string{"--nats", "carries credentials", "--nats-user"}},
		{"user without password", []string{"--nats", "nats://a:4222", "--nats-user", "pgactive"}, nil, []string{"--nats-user (nats_user)", "PGACTIVE_NATS_PASSWORD"}},
		{"password without user", []string{"--nats", "nats://a:4222", "--nats-password-file", pw}, nil, []string{"no user", "--nats-user"}},
		{"password in env and file", []string{"--nats", "nats://a:4222", "--nats-user", "u", "--nats-password-file", pw},
			map[string]string{"PGACTIVE_NATS_PASSWORD": testSecret}, []string{"PGACTIVE_NATS_PASSWORD", "--nats-password-file", "keep one"}},
		{"empty password file", []string{"--nats", "nats://a:4222", "--nats-user", "u", "--nats-password-file", empty}, nil, []string{"--nats-password-file", "is empty"}},
		{"missing password file", []string{"--nats", "nats://a:4222", "--nats-user", "u", "--nats-password-file", pw + ".none"}, nil, []string{"--nats-password-file", "no such file"}},
		{"two ways to authenticate", []string{"--nats", "nats://a:4222", "--nats-user", "u", "--nats-creds", pw},
			map[string]string{"PGACTIVE_NATS_PASSWORD": testSecret}, []string{"--nats-user", "--nats-creds", "keep one"}},
		{"client certificate without key", []string{"--nats", "nats://a:4222", "--nats-tls-cert", pw}, nil, []string{"--nats-tls-key (nats_tls_key)"}},
		{"missing CA file", []string{"--nats", "nats://a:4222", "--nats-tls-ca", pw + ".none"}, nil, []string{"--nats-tls-ca (nats_tls_ca)", "no such file"}},
		{"client setting without --nats", []string{"--nats-user", "u"}, map[string]string{"PGACTIVE_NATS_PASSWORD": testSecret}, []string{"--nats-user (nats_user)", "--nats-listen-user"}},
		{"embedded setting with --nats", []string{"--nats", "nats://a:4222", "--nats-routes", "nats://b:6222"}, nil, []string{"--nats-routes (nats_routes)", "embedded"}},
		{"listen user without password", []string{"--nats-listen-user", "u"}, nil, []string{"--nats-listen-user (nats_listen_user)", "PGACTIVE_NATS_LISTEN_PASSWORD"}},
		{"listen token and user", []string{"--nats-listen-user", "u", "--nats-listen-password-file", pw},
			map[string]string{"PGACTIVE_NATS_LISTEN_TOKEN": testSecret}, []string{"--nats-listen-token-file", "keep one"}},
		{"listen TLS without key", []string{"--nats-listen-tls-cert", pw}, nil, []string{"--nats-listen-tls-key (nats_listen_tls_key)"}},
		{"verify without CA", []string{"--nats-listen-tls-cert", pw, "--nats-listen-tls-key", pw, "--nats-listen-tls-verify"}, nil, []string{"--nats-listen-tls-ca (nats_listen_tls_ca)"}},
		{"routes without cluster listen", []string{"--nats-routes", "nats://a:6222"}, nil, []string{"--nats-cluster-listen (nats_cluster_listen)", "HOST:PORT"}},
		{"cluster listen without routes", []string{"--nats-cluster-listen", "0.0.0.0:6222"}, nil, []string{"--nats-routes (nats_routes)", "this one included"}},
		{"cluster name alone", []string{"--nats-cluster-name", "c"}, nil, []string{"--nats-cluster-name", "--nats-routes"}},
		{"bad route", []string{"--nats-cluster-listen", "0.0.0.0:6222", "--nats-routes", "a:6222"}, nil, []string{"--nats-routes (nats_routes)", "nats://host:6222"}},
		{"route with credentials", []string{"--nats-cluster-listen", "0.0.0.0:6222", "--nats-routes", "nats://r:" + testSecret + "@a:6222"}, nil, []string{"--nats-routes", "carries credentials"}},
		{"cluster user without password", []string{"--nats-cluster-listen", "0.0.0.0:6222", "--nats-routes", "nats://a:6222", "--nats-cluster-user", "r"}, nil,
			[]string{"--nats-cluster-user (nats_cluster_user)", "PGACTIVE_NATS_CLUSTER_PASSWORD"}},
		{"route TLS without CA", []string{"--nats-cluster-listen", "0.0.0.0:6222", "--nats-routes", "nats://a:6222", "--nats-cluster-tls-cert", pw, "--nats-cluster-tls-key", pw}, nil,
			[]string{"--nats-cluster-tls-ca (nats_cluster_tls_ca)"}},
		{"route TLS without routes", []string{"--nats-cluster-tls-ca", pw}, nil, []string{"--nats-cluster-tls-*", "--nats-routes"}},
		{"server name with a space", []string{"--nats-server-name", "db 1"}, nil, []string{"--nats-server-name (nats_server_name)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := parseRunConfig(append(append([]string{}, dsn...), tc.args...), io.Discard)
			if err == nil {
				t.Fatalf("got no error, want one naming %q", tc.want)
			}
			var ue usageError
			if !errors.As(err, &ue) {
				t.Errorf("got %T, want a usage error (exit code 2)", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("error %q holds the secret", err)
			}
		})
	}
}

func TestSecurityConfigSecrets(t *testing.T) {
	pw := writeSecret(t, "pw", testSecret)
	t.Setenv("PGACTIVE_NATS_TOKEN", "tok-"+testSecret)
	cfg, err := parseRunConfig([]string{"--dsn", "dbname=app", "--nats", "nats://a:4222"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.clientAuth().Token; got != "tok-"+testSecret {
		t.Errorf("token from PGACTIVE_NATS_TOKEN: got %d bytes, want the variable's", len(got))
	}
	t.Setenv("PGACTIVE_NATS_TOKEN", "")
	cfg, err = parseRunConfig([]string{"--dsn", "dbname=app", "--nats-listen-user", "pgactive", "--nats-listen-password-file", pw}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.serverConfig(t.TempDir(), nil).Auth.Password; got != testSecret {
		t.Errorf("password from --nats-listen-password-file: got %d bytes, want the file's %d without its newline", len(got), len(testSecret))
	}
	for _, shown := range []string{cfg.String(), fmt.Sprint(cfg), fmt.Sprintf("%v", &cfg), fmt.Sprintf("%+v", cfg)} {
		if strings.Contains(shown, testSecret) {
			t.Errorf("a printed config holds the password: %q", shown)
		}
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "cfg", cfg)
	if strings.Contains(b.String(), testSecret) {
		t.Errorf("a logged config holds the password: %q", b.String())
	}
	var help strings.Builder
	if _, err := parseRunConfig([]string{"--help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: got %v", err)
	}
	for _, f := range []string{"--nats-password-file", "--nats-routes", "--nats-listen-tls-verify"} {
		if !strings.Contains(help.String(), strings.TrimPrefix(f, "-")) {
			t.Errorf("--help does not list %s", f)
		}
	}
}

// TestSecurityEmbeddedServer runs the embedded server of `pgactive run`
// with a user, a password file, TLS and client certificates: the agents'
// in-process connection works, a TCP client needs all of them.
func TestSecurityEmbeddedServer(t *testing.T) {
	certs := integration.GenerateTLS(t, t.TempDir(), "127.0.0.1", "localhost")
	listen := fmt.Sprintf("127.0.0.1:%d", testPort(t))
	cfg, err := parseRunConfig([]string{"--dsn", "dbname=app", "--data-dir", t.TempDir(), "--nats-listen", listen,
		"--nats-listen-user", "pgactive", "--nats-listen-password-file", writeSecret(t, "pw", testSecret),
		"--nats-listen-tls-cert", certs.ServerCert, "--nats-listen-tls-key", certs.ServerKey,
		"--nats-listen-tls-ca", certs.CA, "--nats-listen-tls-verify"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, js, replicas, stop, err := connectNATS(ctx, cfg, log)
	if err != nil {
		t.Fatalf("start the embedded server and connect in-process: %v", err)
	}
	defer stop()
	if replicas != 1 {
		t.Errorf("replicas on one server: got %d, want 1", replicas)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "T"}); err != nil {
		t.Fatalf("use JetStream in-process: %v", err)
	}
	_ = nc

	url := "nats://" + listen
	good := stream.ClientAuth{User: "pgactive", Password: testSecret, TLSCA: certs.CA, TLSCert: certs.ClientCert, TLSKey: certs.ClientKey}
	if c, err := tcpConnect(ctx, url, good); err != nil {
		t.Fatalf("connect over TCP with the user, password and certificates: %v", err)
	} else {
		c.Close()
	}
	wrong := good
	wrong.Password = "wrong-" + testSecret
	_, err = tcpConnect(ctx, url, wrong)
	if !errors.Is(err, nats.ErrAuthorization) || strings.Contains(err.Error(), testSecret) {
		t.Errorf("connect with a wrong password: got %v, want an authorization error without the password", err)
	}
	noCert := good
	noCert.TLSCert, noCert.TLSKey = "", ""
	if c, err := tcpConnect(ctx, url, noCert); err == nil {
		c.Close()
		t.Errorf("connect without a client certificate: got a connection, want a refusal")
	}
	if strings.Contains(logs.String(), testSecret) {
		t.Errorf("the log holds the password")
	}
}

// TestClusterEmbeddedServers runs three `pgactive run` configurations whose
// embedded servers form one JetStream cluster over routes with a password
// and TLS both ways, and checks they pick R3.
func TestClusterEmbeddedServers(t *testing.T) {
	const n = 3
	listens, routes := make([]string, n), make([]string, n)
	for i := range n {
		listens[i] = fmt.Sprintf("127.0.0.1:%d", testPort(t))
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", testPort(t))
	}
	routePW := writeSecret(t, "route-pw", testSecret)
	certs := integration.GenerateTLS(t, t.TempDir(), "127.0.0.1")
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	replicas := make([]int, n)
	errs := make([]error, n)
	jss := make([]jetstream.JetStream, n)
	stops := make([]func(), n)
	for i := range n {
		cfg, err := parseRunConfig([]string{"--dsn", "dbname=app", "--data-dir", t.TempDir(), "--nats-listen", listens[i],
			"--nats-server-name", fmt.Sprintf("db%d", i+1), "--nats-cluster-listen", strings.TrimPrefix(routes[i], "nats://"),
			"--nats-routes", strings.Join(routes, ","), "--nats-cluster-user", "route", "--nats-cluster-password-file", routePW,
			"--nats-cluster-tls-cert", certs.ServerCert, "--nats-cluster-tls-key", certs.ServerKey, "--nats-cluster-tls-ca", certs.CA}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, jss[i], replicas[i], stops[i], errs[i] = connectNATS(ctx, cfg, log)
		}()
	}
	wg.Wait()
	for _, stop := range stops {
		if stop != nil {
			t.Cleanup(stop)
		}
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("server db%d: %v\nlog:\n%s", i+1, err, logs.String())
		}
		if replicas[i] != 3 {
			t.Errorf("server db%d: got %d replicas, want 3 on a cluster of three", i+1, replicas[i])
		}
	}
	s, err := jss[0].CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3})
	if err != nil {
		t.Fatalf("create an R3 stream: %v", err)
	}
	if _, err := jss[2].Publish(ctx, "t.x", []byte("x")); err != nil {
		t.Fatalf("publish through another member: %v", err)
	}
	if info, err := s.Info(ctx); err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream info: got %+v, %v; want a leader and two replicas", info, err)
	}
	if strings.Contains(logs.String(), testSecret) {
		t.Errorf("the log holds the route password")
	}
}

func tcpConnect(ctx context.Context, url string, auth stream.ClientAuth) (*nats.Conn, error) {
	opts, err := auth.Options()
	if err != nil {
		return nil, err
	}
	nc, _, err := stream.Connect(ctx, stream.ConnectOptions{URLs: url, Name: "test", Options: opts}, slog.New(slog.DiscardHandler))
	return nc, err
}

func testPort(t *testing.T) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// lockedBuffer collects log lines from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
