package stream

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestClusterServerOptions(t *testing.T) {
	cfg := ServerConfig{
		Listen: "127.0.0.1:4222", StoreDir: t.TempDir(), Name: "db1",
		Cluster: ClusterConfig{Name: "pgactive", Listen: "0.0.0.0:6222",
			Routes: []string{"nats://db1:6222", " nats://db2:6222", "nats://db3:6222", ""}, User: "route", Password: "route-secret"},
	}
	opts, err := cfg.options()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := opts.Cluster.Name, "pgactive"; got != want {
		t.Errorf("cluster name: got %q, want %q", got, want)
	}
	if got, want := opts.Cluster.Host+":"+strconv.Itoa(opts.Cluster.Port), "0.0.0.0:6222"; got != want {
		t.Errorf("cluster listen: got %q, want %q", got, want)
	}
	if got, want := len(opts.Routes), 3; got != want {
		t.Fatalf("routes: got %d, want %d", got, want)
	}
	for _, r := range opts.Routes {
		if p, _ := r.User.Password(); r.User.Username() != "route" || p != "route-secret" {
			t.Errorf("route %s: got user %q, want the cluster's user and password", r.Redacted(), r.User.Username())
		}
	}
	if opts.Cluster.Username != "route" || bcrypt.CompareHashAndPassword([]byte(opts.Cluster.Password), []byte("route-secret")) != nil {
		t.Errorf("cluster authorization: got user %q, want route and a hash of its password", opts.Cluster.Username)
	}
	if opts.ServerName != "db1" || !opts.JetStream {
		t.Errorf("got server %q with JetStream %v, want db1 with JetStream", opts.ServerName, opts.JetStream)
	}
}

func TestClusterServerOptionsRejects(t *testing.T) {
	dir := t.TempDir()
	good := ClusterConfig{Name: "pgactive", Listen: "127.0.0.1:6222", Routes: []string{"nats://a:6222", "nats://b:6222", "nats://c:6222"}}
	for _, tc := range []struct {
		name   string
		change func(*ServerConfig)
		want   string
	}{
		{"no store", func(c *ServerConfig) { c.StoreDir = "" }, "store directory"},
		{"no server name", func(c *ServerConfig) { c.Name = "" }, "--nats-server-name"},
		{"no cluster name", func(c *ServerConfig) { c.Cluster.Name = "" }, "--nats-cluster-name"},
		{"no cluster listen", func(c *ServerConfig) { c.Cluster.Listen = "" }, "--nats-cluster-listen"},
		{"no routes", func(c *ServerConfig) { c.Cluster.Routes = nil }, "--nats-routes"},
		{"bad cluster listen", func(c *ServerConfig) { c.Cluster.Listen = "6222" }, "not host:port"},
		{"route without port", func(c *ServerConfig) { c.Cluster.Routes = []string{"nats://a"} }, "nats://host:6222"},
		{"route scheme", func(c *ServerConfig) { c.Cluster.Routes = []string{"http://a:6222"} }, "scheme"},
		{"route with credentials", func(c *ServerConfig) { c.Cluster.Routes = []string{"nats://u:route-secret@a:6222"} }, "carries credentials"},
		{"route user without password", func(c *ServerConfig) { c.Cluster.User = "route" }, "both a user and a password"},
		{"route TLS without CA", func(c *ServerConfig) { c.Cluster.TLS = ServerTLS{CertFile: "c.pem", KeyFile: "k.pem"} }, "route TLS needs"},
		{"route password without user", func(c *ServerConfig) { c.Cluster.Password = "route-secret" }, "both a user and a password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ServerConfig{Listen: "127.0.0.1:4222", StoreDir: dir, Name: "db1", Cluster: good}
			tc.change(&cfg)
			_, err := cfg.options()
			if err == nil {
				t.Fatalf("got no error, want one saying %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "route-secret") {
				t.Errorf("error %q holds the password", err)
			}
		})
	}
}

func TestSecurityServerOptions(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, tc := range []struct {
		name string
		cfg  ServerConfig
		want string
	}{
		{"user without password", ServerConfig{Auth: ServerAuth{User: "pgactive"}}, "has no password"},
		{"password without user", ServerConfig{Auth: ServerAuth{Password: "s3cret-pw"}}, "without a user"},
		{"token and user", ServerConfig{Auth: ServerAuth{User: "pgactive", Password: "s3cret-pw", Token: "s3cret-tok"}}, "not both"},
		{"not an NKey", ServerConfig{Auth: ServerAuth{NKeys: []string{"UNOTAKEY"}}}, "not a public user NKey"},
		{"token and NKeys", ServerConfig{Auth: ServerAuth{Token: "s3cret-tok", NKeys: []string{"UNOTAKEY"}}}, "not both"},
		{"certificate without key", ServerConfig{TLS: ServerTLS{CertFile: cert}}, "certificate and its key"},
		{"verify without CA", ServerConfig{TLS: ServerTLS{CertFile: cert, KeyFile: key, VerifyClients: true}}, "needs the CA"},
		{"missing certificate file", ServerConfig{TLS: ServerTLS{CertFile: cert, KeyFile: key}}, "load TLS certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.StoreDir = dir
			_, err := tc.cfg.options()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			for _, secret := range []string{"s3cret-pw", "s3cret-tok"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q holds a secret", err)
				}
			}
		})
	}
	opts, err := ServerConfig{StoreDir: dir, Auth: ServerAuth{User: "pgactive", Password: "s3cret-pw"}}.options()
	if err != nil {
		t.Fatal(err)
	}
	if opts.Username != "pgactive" || opts.Authorization != "" {
		t.Errorf("got user %q, token set %v; want user pgactive", opts.Username, opts.Authorization != "")
	}
	if strings.Contains(opts.Password, "s3cret-pw") || bcrypt.CompareHashAndPassword([]byte(opts.Password), []byte("s3cret-pw")) != nil {
		t.Errorf("the server keeps %q, want a bcrypt hash of the password", opts.Password)
	}
}

func TestSecurityClientAuthOptions(t *testing.T) {
	dir := t.TempDir()
	badSeed := filepath.Join(dir, "bad.nk")
	if err := os.WriteFile(badSeed, []byte("SUAnotaseed"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		auth ClientAuth
		want string // empty: no error
		n    int    // options returned
	}{
		{"nothing", ClientAuth{}, "", 0},
		{"user and password", ClientAuth{User: "pgactive", Password: "s3cret-pw"}, "", 1},
		{"token", ClientAuth{Token: "s3cret-tok"}, "", 1},
		{"user, password and TLS", ClientAuth{User: "pgactive", Password: "s3cret-pw", TLSCA: filepath.Join(dir, "none.pem")}, "TLS CA file", 0},
		{"user without password", ClientAuth{User: "pgactive"}, "has no password", 0},
		{"password without user", ClientAuth{Password: "s3cret-pw"}, "without a user", 0},
		{"user and token", ClientAuth{User: "pgactive", Password: "s3cret-pw", Token: "s3cret-tok"}, "use one of", 0},
		{"token and creds", ClientAuth{Token: "s3cret-tok", CredsFile: "x.creds"}, "use one of", 0},
		{"missing creds file", ClientAuth{CredsFile: filepath.Join(dir, "none.creds")}, "credentials file", 0},
		{"bad NKey seed", ClientAuth{NKeySeedFile: badSeed}, "NKey seed file", 0},
		{"certificate without key", ClientAuth{TLSCert: "c.pem"}, "certificate and its key", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := tc.auth.Options()
			if tc.want == "" {
				if err != nil || len(opts) != tc.n {
					t.Fatalf("got %d options, error %v; want %d options", len(opts), err, tc.n)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			for _, secret := range []string{"s3cret-pw", "s3cret-tok"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q holds a secret", err)
				}
			}
		})
	}
}

func TestSecurityRedactURLs(t *testing.T) {
	got := RedactURLs("nats://u:s3cret@a:4222,nats://b:4222,tls://tok3n@c:4222")
	if want := "nats://[redacted]@a:4222,nats://b:4222,tls://[redacted]@c:4222"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
