package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

// NATSCluster is a set of in-process nats-servers forming one JetStream
// cluster, started by [StartNATSCluster].
type NATSCluster struct {
	cfgs []stream.ServerConfig // per server; ports and store dirs kept across restarts

	mu   sync.Mutex
	srvs []*server.Server // nil while killed
}

// NATSOption changes the configuration of every server of a [NATSCluster]:
// authentication or TLS.
type NATSOption func(*stream.ServerConfig)

// WithNATSAuth requires clients to authenticate as auth.
func WithNATSAuth(auth stream.ServerAuth) NATSOption {
	return func(c *stream.ServerConfig) { c.Auth = auth }
}

// WithNATSTLS makes the servers speak TLS to their clients.
func WithNATSTLS(tls stream.ServerTLS) NATSOption {
	return func(c *stream.ServerConfig) { c.TLS = tls }
}

// WithNATSLog sends the servers' warnings and errors to log.
func WithNATSLog(log *slog.Logger) NATSOption {
	return func(c *stream.ServerConfig) { c.Log = log }
}

// StartNATSCluster starts n nats-servers with JetStream on free ports of
// 127.0.0.1, each with its own store in a temporary directory, routed to each
// other as cluster "pgactive-test" (n = 1 starts one server without a
// cluster). It waits until JetStream has a meta leader and every server is
// current, and shuts them all down when the test ends.
func StartNATSCluster(t testing.TB, n int, opts ...NATSOption) *NATSCluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("StartNATSCluster: n = %d, want at least 1", n)
	}
	c := &NATSCluster{cfgs: make([]stream.ServerConfig, n), srvs: make([]*server.Server, n)}
	routes := make([]string, n)
	clusterAddrs := make([]string, n)
	ports := freePorts(t, 2*n) // client and route ports, all different
	for i := range n {
		clusterAddrs[i] = fmt.Sprintf("127.0.0.1:%d", ports[n+i])
		routes[i] = "nats://" + clusterAddrs[i]
	}
	for i := range n {
		cfg := stream.ServerConfig{
			Listen:   fmt.Sprintf("127.0.0.1:%d", ports[i]),
			StoreDir: t.TempDir(),
			Name:     fmt.Sprintf("nats-%d", i+1),
			Log:      TestLogger(),
		}
		if n > 1 {
			cfg.Cluster = stream.ClusterConfig{Name: "pgactive-test", Listen: clusterAddrs[i], Routes: routes}
		}
		for _, o := range opts {
			o(&cfg)
		}
		c.cfgs[i] = cfg
	}
	t.Cleanup(c.shutdown)
	for i := range n {
		if err := c.start(i); err != nil {
			t.Fatalf("start NATS server %d of %d: %v", i+1, n, err)
		}
	}
	c.waitCurrent(t)
	return c
}

// URLs returns the client URLs of all servers, comma-separated: the seed
// list agents connect with. It stays the same across restarts.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.cfgs))
	for i := range c.cfgs {
		urls[i] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// URL returns the client URL of server i (from 0), nats://127.0.0.1:PORT.
func (c *NATSCluster) URL(i int) string {
	return "nats://" + c.cfgs[i].Listen
}

// Name returns the server name of server i, as JetStream reports leaders and
// replicas.
func (c *NATSCluster) Name(i int) string {
	return c.cfgs[i].Name
}

// Index returns the index of the server called name, or -1.
func (c *NATSCluster) Index(name string) int {
	for i, cfg := range c.cfgs {
		if cfg.Name == name {
			return i
		}
	}
	return -1
}

// Kill stops server i at once and waits until it has stopped: its clients
// and routes drop, its JetStream leaderships move to the other servers.
// It does nothing if the server is not running.
func (c *NATSCluster) Kill(i int) {
	c.mu.Lock()
	srv := c.srvs[i]
	c.srvs[i] = nil
	c.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Shutdown()
	srv.WaitForShutdown()
}

// Restart starts server i again on the same ports, store and name (killing
// it first if it runs) and waits until it has rejoined the cluster with
// JetStream current.
func (c *NATSCluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.Kill(i)
	if err := c.start(i); err != nil {
		t.Fatalf("restart NATS server %s: %v", c.cfgs[i].Name, err)
	}
	c.waitCurrent(t)
}

// Leader returns the index of the server that is the JetStream meta leader,
// or -1 if there is none.
func (c *NATSCluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.srvs {
		if s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

func (c *NATSCluster) start(i int) error {
	srv, err := stream.StartServer(c.cfgs[i])
	if err != nil {
		return err
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("server %s started without JetStream", c.cfgs[i].Name)
	}
	c.mu.Lock()
	c.srvs[i] = srv
	c.mu.Unlock()
	return nil
}

// waitCurrent waits until JetStream has a meta leader and every running
// server is routed to all other running servers and current with the leader.
func (c *NATSCluster) waitCurrent(t testing.TB) {
	t.Helper()
	WaitFor(t, natsReadyTimeout, "NATS cluster with a JetStream meta leader", func() (bool, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		running := 0
		for _, s := range c.srvs {
			if s != nil {
				running++
			}
		}
		if running == 1 && len(c.srvs) == 1 {
			return true, nil
		}
		leader := false
		for _, s := range c.srvs {
			if s == nil {
				continue
			}
			if s.NumRemotes() < running-1 || !s.JetStreamIsCurrent() {
				return false, nil
			}
			leader = leader || s.JetStreamIsLeader()
		}
		return leader, nil
	})
}

func (c *NATSCluster) shutdown() {
	for i := range c.srvs {
		c.Kill(i)
	}
}

// StartAgentWith runs an agent for cfg in the test process like [StartAgent],
// connecting with conn (seed URLs, authentication, TLS) and logging to log.
func StartAgentWith(t testing.TB, conn stream.ConnectOptions, cfg node.Config, log *slog.Logger) *Agent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natsReadyTimeout)
	defer cancel()
	if conn.Name == "" {
		conn.Name = "pgactive test " + cfg.Node
	}
	nc, js, err := stream.Connect(ctx, conn, log)
	if err != nil {
		t.Fatalf("connect agent %s to NATS: %v", cfg.Node, err)
	}
	t.Cleanup(nc.Close)
	a, err := node.NewAgent(cfg, nc, js, log)
	if err != nil {
		t.Fatalf("new agent %s: %v", cfg.Node, err)
	}
	actx, acancel := context.WithCancel(context.Background())
	h := &Agent{Agent: a, cancel: acancel, done: make(chan error, 1)}
	go func() { h.done <- a.Run(actx) }()
	t.Cleanup(h.Stop)
	select {
	case <-a.Ready():
	case err := <-h.done:
		h.done <- err
		t.Fatalf("agent %s stopped before it was ready: %v", cfg.Node, err)
	case <-time.After(60 * time.Second):
		t.Fatalf("agent %s not ready after 60s", cfg.Node)
	}
	return h
}

// TLSFiles are the PEM files written by [GenerateTLS].
type TLSFiles struct {
	CA         string // the certificate authority's certificate
	ServerCert string // for the hosts given, valid for server and client use (as NATS routes need)
	ServerKey  string
	ClientCert string // a client certificate, CN "pgactive"
	ClientKey  string
}

// GenerateTLS writes into dir a throwaway certificate authority, a server
// certificate for hosts (names or IP addresses) and a client certificate,
// all signed by that authority.
func GenerateTLS(t testing.TB, dir string, hosts ...string) TLSFiles {
	t.Helper()
	caKey, caCert := newCert(t, nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "pgactive test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	})
	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			server.IPAddresses = append(server.IPAddresses, ip)
		} else {
			server.DNSNames = append(server.DNSNames, h)
		}
	}
	serverKey, serverCert := newCert(t, caKey, caCert, server)
	clientKey, clientCert := newCert(t, caKey, caCert, &x509.Certificate{
		Subject: pkix.Name{CommonName: "pgactive"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	f := TLSFiles{
		CA:         filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client-key.pem"),
	}
	writePEM(t, f.CA, "CERTIFICATE", caCert.Raw)
	writePEM(t, f.ServerCert, "CERTIFICATE", serverCert.Raw)
	writePEM(t, f.ServerKey, "PRIVATE KEY", marshalKey(t, serverKey))
	writePEM(t, f.ClientCert, "CERTIFICATE", clientCert.Raw)
	writePEM(t, f.ClientKey, "PRIVATE KEY", marshalKey(t, clientKey))
	return f
}

// newCert makes a key and a certificate from tmpl, signed by parent (self-signed if nil).
func newCert(t testing.TB, parentKey *ecdsa.PrivateKey, parent, tmpl *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("serial number: %v", err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatalf("create certificate %s: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return key, cert
}

func marshalKey(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshal key: %v", err)
	}
	return der
}

func writePEM(t testing.TB, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}
