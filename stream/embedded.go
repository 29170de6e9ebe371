package stream

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// ServerConfig configures the embedded NATS server.
type ServerConfig struct {
	// Listen is the client address, host:port (default 127.0.0.1:4222).
	Listen string
	// StoreDir holds JetStream's files.
	StoreDir string
	// Name of the server (default "pgactive"). Every server of a cluster
	// needs a name of its own, kept across restarts.
	Name string
	// Cluster, when any of its fields is set, makes the server a member of a
	// JetStream cluster.
	Cluster ClusterConfig
	// Auth, when set, is required from every client.
	Auth ServerAuth
	// TLS, when set, is required from every client connecting over TCP.
	TLS ServerTLS
	// Log receives the server's warnings and errors, and its notices at
	// debug level. Nil discards them.
	Log *slog.Logger
}

// ClusterConfig makes the embedded server one member of a JetStream cluster.
type ClusterConfig struct {
	// Name of the cluster, the same on every member.
	Name string
	// Listen is the address, host:port, the other members' routes connect to.
	Listen string
	// Routes are the route URLs (nats://host:port) of the members. Listing
	// every member, this server included, gives all of them the same list.
	Routes []string
	// User and Password, when set, are required from the other members'
	// routes and sent on this server's own routes.
	User     string
	Password string
	// TLS, when set, encrypts routes both ways: each member presents its
	// certificate (valid for server and client use, naming the host of its
	// route URL) and verifies the others' against TLS.CAFile.
	TLS ServerTLS
}

func (c ClusterConfig) enabled() bool {
	return c.Name != "" || c.Listen != "" || len(c.Routes) > 0
}

// ServerAuth is how clients authenticate: a user and password, a token, or
// an NKey whose public key is listed.
type ServerAuth struct {
	User     string
	Password string
	Token    string
	// NKeys are public user NKeys (U...) allowed in, alongside User.
	NKeys []string
}

// ServerTLS is a server's certificate and the CA it checks its peers'
// certificates against.
type ServerTLS struct {
	CertFile string
	KeyFile  string
	// CAFile verifies client certificates.
	CAFile string
	// VerifyClients requires a client certificate signed by CAFile (routes
	// always do).
	VerifyClients bool
}

func (t ServerTLS) enabled() bool {
	return t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" || t.VerifyClients
}

// MaxPayload is the embedded server's largest message: rows larger than this
// once encoded cannot be replicated.
const MaxPayload = 8 << 20

// StartServer starts an in-process NATS server with JetStream and waits until
// it accepts clients. A cluster member may not have a JetStream leader yet
// when it returns: Connect waits for one.
func StartServer(cfg ServerConfig) (*server.Server, error) {
	opts, err := cfg.options()
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	if cfg.Log != nil {
		s.SetLogger(serverLog{cfg.Log.With("nats_server", opts.ServerName)}, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS: not ready on %s within 10s (is the port in use?)", net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)))
	}
	return s, nil
}

func (cfg ServerConfig) options() (*server.Options, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:4222"
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("a store directory is required (--data-dir)")
	}
	if cfg.Name == "" {
		if cfg.Cluster.enabled() {
			return nil, errors.New("a cluster member needs a server name of its own (--nats-server-name)")
		}
		cfg.Name = "pgactive"
	}
	host, port, err := splitHostPort("listen", cfg.Listen)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		MaxPayload: MaxPayload,
		NoLog:      true,
	}
	if err := cfg.Auth.apply(opts); err != nil {
		return nil, err
	}
	if err := cfg.TLS.apply(opts); err != nil {
		return nil, err
	}
	if cfg.Cluster.enabled() {
		if err := cfg.Cluster.apply(opts); err != nil {
			return nil, err
		}
	}
	return opts, nil
}

func (a ServerAuth) apply(opts *server.Options) error {
	switch {
	case a.Token != "" && (a.User != "" || a.Password != "" || len(a.NKeys) > 0):
		return errors.New("clients authenticate with a token, or with a user and password and NKeys, not both")
	case a.User != "" && a.Password == "":
		return fmt.Errorf("client user %q has no password", a.User)
	case a.User == "" && a.Password != "":
		return errors.New("a client password is set without a user")
	}
	var hash string
	if a.Password != "" {
		var err error
		if hash, err = bcryptHash(a.Password); err != nil {
			return err
		}
	}
	if len(a.NKeys) == 0 {
		opts.Username, opts.Password, opts.Authorization = a.User, hash, a.Token
		return nil
	}
	for _, k := range a.NKeys {
		if !nkeys.IsValidPublicUserKey(k) {
			return fmt.Errorf("%q is not a public user NKey (U...)", k)
		}
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k})
	}
	if a.User != "" {
		opts.Users = []*server.User{{Username: a.User, Password: hash}}
	}
	return nil
}

func (t ServerTLS) apply(opts *server.Options) error {
	if !t.enabled() {
		return nil
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return errors.New("TLS needs both a certificate and its key")
	}
	if t.VerifyClients && t.CAFile == "" {
		return errors.New("verifying client certificates needs the CA that signs them")
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: t.CertFile, KeyFile: t.KeyFile, CaFile: t.CAFile, Verify: t.VerifyClients,
	})
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = tc, true, t.VerifyClients, 5
	return nil
}

func (c ClusterConfig) apply(opts *server.Options) error {
	switch {
	case c.Name == "":
		return errors.New("a cluster member needs the cluster's name (--nats-cluster-name)")
	case c.Listen == "":
		return errors.New("a cluster member needs an address for routes (--nats-cluster-listen HOST:PORT)")
	case len(c.Routes) == 0:
		return errors.New("a cluster member needs the route URLs of the cluster (--nats-routes)")
	case (c.User == "") != (c.Password == ""):
		return errors.New("route authentication needs both a user and a password")
	}
	host, port, err := splitHostPort("cluster listen", c.Listen)
	if err != nil {
		return err
	}
	routes, err := ParseRoutes(c.Routes)
	if err != nil {
		return err
	}
	if c.User != "" {
		for _, u := range routes {
			u.User = url.UserPassword(c.User, c.Password)
		}
	}
	opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port, Username: c.User}
	if c.Password != "" {
		if opts.Cluster.Password, err = bcryptHash(c.Password); err != nil {
			return err
		}
	}
	opts.Routes = routes
	if c.TLS.enabled() {
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" || c.TLS.CAFile == "" {
			return errors.New("route TLS needs a certificate, its key and the CA that signs the members' certificates")
		}
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, CaFile: c.TLS.CAFile, Verify: true})
		if err != nil {
			return fmt.Errorf("load route TLS certificate: %w", err)
		}
		// Each member is the others' server and client, as nats-server sets
		// up a cluster tls block: strict verification, the CA for both sides.
		tc.ClientAuth, tc.RootCAs = tls.RequireAndVerifyClientCert, tc.ClientCAs
		opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = tc, 5
	}
	return nil
}

// bcryptHash is what the server keeps of a password: it compares what
// clients send against the hash, and has no plain text to show. The lowest
// cost keeps each connection's check at about a millisecond: the hash is
// never stored or shown, so its cost protects nothing.
func bcryptHash(password string) (string, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(hash), nil
}

// ParseRoutes checks route URLs (nats://host:port, nats-route:// or tls://)
// and returns them parsed. URLs carry no credentials: the cluster's user and
// password are set apart.
func ParseRoutes(routes []string) ([]*url.URL, error) {
	out := make([]*url.URL, 0, len(routes))
	for _, r := range routes {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || u.Port() == "" {
			return nil, fmt.Errorf("route %q is not a URL like nats://host:6222", r)
		}
		if u.User != nil {
			return nil, fmt.Errorf("route %s carries credentials: give the route user and password apart", u.Redacted())
		}
		switch u.Scheme {
		case "nats", "nats-route", "tls":
		default:
			return nil, fmt.Errorf("route %q: scheme %q is not nats, nats-route or tls", r, u.Scheme)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("no route URLs given")
	}
	return out, nil
}

func splitHostPort(what, addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s address %q is not host:port: %w", what, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("%s port %q is not a number: %w", what, portStr, err)
	}
	return host, port, nil
}

// serverLog passes the embedded server's log to slog.
type serverLog struct{ log *slog.Logger }

var _ server.Logger = serverLog{}

func (l serverLog) Noticef(format string, v ...any) {
	l.log.Debug("NATS server notice", "text", fmt.Sprintf(format, v...))
}

func (l serverLog) Warnf(format string, v ...any) {
	l.log.Warn("NATS server warning", "text", fmt.Sprintf(format, v...))
}

func (l serverLog) Errorf(format string, v ...any) {
	l.log.Error("NATS server error", "text", fmt.Sprintf(format, v...))
}

func (l serverLog) Fatalf(format string, v ...any) {
	l.log.Error("NATS server fatal error", "text", fmt.Sprintf(format, v...))
}

func (l serverLog) Debugf(string, ...any) {}
func (l serverLog) Tracef(string, ...any) {}
