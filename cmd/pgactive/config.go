package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/pgactive-go/pgactive/stream"
)

// runConfig is the configuration of `pgactive run`, from flags, PGACTIVE_*
// environment variables and an optional YAML file, in that order of precedence.
// Secrets (passwords, tokens) come only from the environment or from files.
type runConfig struct {
	DSNs           []string `yaml:"dsn"`
	NATS           string   `yaml:"nats"`
	NATSListen     string   `yaml:"nats_listen"`
	HTTP           string   `yaml:"http"`
	DataDir        string   `yaml:"data_dir"`
	StreamReplicas int      `yaml:"stream_replicas"`
	CreateSchema   bool     `yaml:"create_schema"`
	LogLevel       string   `yaml:"log_level"`

	// The embedded server as a member of a NATS cluster.
	NATSServerName          string `yaml:"nats_server_name"`
	NATSClusterName         string `yaml:"nats_cluster_name"`
	NATSClusterListen       string `yaml:"nats_cluster_listen"`
	NATSRoutes              string `yaml:"nats_routes"`
	NATSClusterUser         string `yaml:"nats_cluster_user"`
	NATSClusterPasswordFile string `yaml:"nats_cluster_password_file"`
	NATSClusterTLSCert      string `yaml:"nats_cluster_tls_cert"`
	NATSClusterTLSKey       string `yaml:"nats_cluster_tls_key"`
	NATSClusterTLSCA        string `yaml:"nats_cluster_tls_ca"`

	// What the embedded server asks of its clients.
	NATSListenUser         string `yaml:"nats_listen_user"`
	NATSListenPasswordFile string `yaml:"nats_listen_password_file"`
	NATSListenTokenFile    string `yaml:"nats_listen_token_file"`
	NATSListenTLSCert      string `yaml:"nats_listen_tls_cert"`
	NATSListenTLSKey       string `yaml:"nats_listen_tls_key"`
	NATSListenTLSCA        string `yaml:"nats_listen_tls_ca"`
	NATSListenTLSVerify    bool   `yaml:"nats_listen_tls_verify"`

	// How the agents authenticate to the servers given with --nats.
	NATSUser         string `yaml:"nats_user"`
	NATSPasswordFile string `yaml:"nats_password_file"`
	NATSTokenFile    string `yaml:"nats_token_file"`
	NATSNKeySeedFile string `yaml:"nats_nkey_seed_file"`
	NATSCreds        string `yaml:"nats_creds"`
	NATSTLSCA        string `yaml:"nats_tls_ca"`
	NATSTLSCert      string `yaml:"nats_tls_cert"`
	NATSTLSKey       string `yaml:"nats_tls_key"`

	secrets runSecrets // read from the environment or the files above; never printed
}

// runSecrets are the passwords and tokens of a runConfig.
type runSecrets struct {
	natsPassword    string
	natsToken       string
	listenPassword  string
	listenToken     string
	clusterPassword string
}

// secretFlags are flags a user may try for a secret, with where it goes instead.
var secretFlags = map[string]string{
	"nats-password":         "set PGACTIVE_NATS_PASSWORD or use --nats-password-file FILE",
	"nats-token":            "set PGACTIVE_NATS_TOKEN or use --nats-token-file FILE",
	"nats-listen-password":  "set PGACTIVE_NATS_LISTEN_PASSWORD or use --nats-listen-password-file FILE",
	"nats-listen-token":     "set PGACTIVE_NATS_LISTEN_TOKEN or use --nats-listen-token-file FILE",
	"nats-cluster-password": "set PGACTIVE_NATS_CLUSTER_PASSWORD or use --nats-cluster-password-file FILE",
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ", ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func parseRunConfig(args []string, stderr io.Writer) (runConfig, error) {
	if err := refuseSecretFlags(args); err != nil {
		return runConfig{}, err
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var dsns stringList
	var file string
	cfg := runConfig{}
	fs.Var(&dsns, "dsn", "libpq connection string or URL of a database to serve (repeatable; env PGACTIVE_DSN)")
	fs.StringVar(&cfg.NATS, "nats", "", "comma-separated NATS seed URLs; empty starts an embedded server (env PGACTIVE_NATS)")
	fs.StringVar(&cfg.NATSListen, "nats-listen", "", "client address of the embedded NATS server (default 127.0.0.1:4222; env PGACTIVE_NATS_LISTEN)")
	fs.StringVar(&cfg.HTTP, "http", "", "address of the HTTP endpoint for /lag, /metrics, /healthz (default 127.0.0.1:8080; env PGACTIVE_HTTP)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the embedded NATS server's store (default ./pgactive-data; env PGACTIVE_DATA_DIR)")
	fs.IntVar(&cfg.StreamReplicas, "stream-replicas", 0, "replicas of the streams and bucket (default 1 on one server, 3 on a cluster of 3+; env PGACTIVE_STREAM_REPLICAS)")
	fs.BoolVar(&cfg.CreateSchema, "create-schema", false, "create the pgactive objects where the extension files cannot be installed (env PGACTIVE_CREATE_SCHEMA)")
	fs.StringVar(&cfg.LogLevel, "log-level", "", "debug, info, warn or error (default info; env PGACTIVE_LOG_LEVEL)")
	fs.StringVar(&file, "config", "", "YAML configuration file (env PGACTIVE_CONFIG)")

	fs.StringVar(&cfg.NATSServerName, "nats-server-name", "", "name of the embedded server, unique in its cluster (default pgactive, or the host name in a cluster; env PGACTIVE_NATS_SERVER_NAME)")
	fs.StringVar(&cfg.NATSClusterName, "nats-cluster-name", "", "cluster the embedded server joins (default pgactive when --nats-routes is set; env PGACTIVE_NATS_CLUSTER_NAME)")
	fs.StringVar(&cfg.NATSClusterListen, "nats-cluster-listen", "", "HOST:PORT the embedded server takes routes on, e.g. 0.0.0.0:6222 (env PGACTIVE_NATS_CLUSTER_LISTEN)")
	fs.StringVar(&cfg.NATSRoutes, "nats-routes", "", "comma-separated route URLs of every cluster member, this one included: nats://a:6222,nats://b:6222,nats://c:6222 (env PGACTIVE_NATS_ROUTES)")
	fs.StringVar(&cfg.NATSClusterUser, "nats-cluster-user", "", "user routes authenticate as; the password comes from PGACTIVE_NATS_CLUSTER_PASSWORD or --nats-cluster-password-file (env PGACTIVE_NATS_CLUSTER_USER)")
	fs.StringVar(&cfg.NATSClusterPasswordFile, "nats-cluster-password-file", "", "file holding the routes' password (env PGACTIVE_NATS_CLUSTER_PASSWORD_FILE)")
	fs.StringVar(&cfg.NATSClusterTLSCert, "nats-cluster-tls-cert", "", "certificate (PEM) for routes, valid for server and client use and naming this host as the routes do; routes then use TLS both ways (env PGACTIVE_NATS_CLUSTER_TLS_CERT)")
	fs.StringVar(&cfg.NATSClusterTLSKey, "nats-cluster-tls-key", "", "private key (PEM) of --nats-cluster-tls-cert (env PGACTIVE_NATS_CLUSTER_TLS_KEY)")
	fs.StringVar(&cfg.NATSClusterTLSCA, "nats-cluster-tls-ca", "", "CA (PEM) that signs every member's route certificate (env PGACTIVE_NATS_CLUSTER_TLS_CA)")

	fs.StringVar(&cfg.NATSListenUser, "nats-listen-user", "", "user the embedded server requires of clients; the password comes from PGACTIVE_NATS_LISTEN_PASSWORD or --nats-listen-password-file (env PGACTIVE_NATS_LISTEN_USER)")
	fs.StringVar(&cfg.NATSListenPasswordFile, "nats-listen-password-file", "", "file holding the password of --nats-listen-user (env PGACTIVE_NATS_LISTEN_PASSWORD_FILE)")
	fs.StringVar(&cfg.NATSListenTokenFile, "nats-listen-token-file", "", "file holding a token the embedded server requires of clients, instead of a user (env PGACTIVE_NATS_LISTEN_TOKEN_FILE, or the token in PGACTIVE_NATS_LISTEN_TOKEN)")
	fs.StringVar(&cfg.NATSListenTLSCert, "nats-listen-tls-cert", "", "certificate (PEM) of the embedded server; clients must then use TLS (env PGACTIVE_NATS_LISTEN_TLS_CERT)")
	fs.StringVar(&cfg.NATSListenTLSKey, "nats-listen-tls-key", "", "private key (PEM) of --nats-listen-tls-cert (env PGACTIVE_NATS_LISTEN_TLS_KEY)")
	fs.StringVar(&cfg.NATSListenTLSCA, "nats-listen-tls-ca", "", "CA (PEM) that signs client certificates (env PGACTIVE_NATS_LISTEN_TLS_CA)")
	fs.BoolVar(&cfg.NATSListenTLSVerify, "nats-listen-tls-verify", false, "require a client certificate signed by --nats-listen-tls-ca (env PGACTIVE_NATS_LISTEN_TLS_VERIFY)")

	fs.StringVar(&cfg.NATSUser, "nats-user", "", "user to connect to --nats as; the password comes from PGACTIVE_NATS_PASSWORD or --nats-password-file (env PGACTIVE_NATS_USER)")
	fs.StringVar(&cfg.NATSPasswordFile, "nats-password-file", "", "file holding the password of --nats-user (env PGACTIVE_NATS_PASSWORD_FILE)")
	fs.StringVar(&cfg.NATSTokenFile, "nats-token-file", "", "file holding a token to connect to --nats with (env PGACTIVE_NATS_TOKEN_FILE, or the token in PGACTIVE_NATS_TOKEN)")
	fs.StringVar(&cfg.NATSNKeySeedFile, "nats-nkey-seed-file", "", "NKey seed file to connect to --nats with (env PGACTIVE_NATS_NKEY_SEED_FILE)")
	fs.StringVar(&cfg.NATSCreds, "nats-creds", "", "credentials file (JWT and NKey seed) to connect to --nats with (env PGACTIVE_NATS_CREDS)")
	fs.StringVar(&cfg.NATSTLSCA, "nats-tls-ca", "", "CA (PEM) that signs the NATS servers' certificates (env PGACTIVE_NATS_TLS_CA)")
	fs.StringVar(&cfg.NATSTLSCert, "nats-tls-cert", "", "client certificate (PEM), for servers that verify clients (env PGACTIVE_NATS_TLS_CERT)")
	fs.StringVar(&cfg.NATSTLSKey, "nats-tls-key", "", "private key (PEM) of --nats-tls-cert (env PGACTIVE_NATS_TLS_KEY)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return runConfig{}, err
		}
		return runConfig{}, usageError{err}
	}
	if fs.NArg() > 0 {
		return runConfig{}, usagef("run: unexpected argument %q", fs.Arg(0))
	}
	cfg.DSNs = dsns
	if file == "" {
		file = os.Getenv("PGACTIVE_CONFIG")
	}
	var fromFile runConfig
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return runConfig{}, usagef("read config file: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&fromFile); err != nil && !errors.Is(err, io.EOF) {
			return runConfig{}, usagef("config file %s: %w (known fields: %s; passwords and tokens go in files named by the *_file fields)",
				file, err, strings.Join(yamlKeys(), ", "))
		}
	}
	if err := cfg.fill(fromFile); err != nil {
		return runConfig{}, err
	}
	if err := cfg.readSecrets(); err != nil {
		return runConfig{}, err
	}
	return cfg, cfg.validate()
}

// refuseSecretFlags stops a password or token given on the command line,
// where every local user can read it, without repeating it.
func refuseSecretFlags(args []string) error {
	for _, a := range args {
		if a == "--" {
			return nil
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			continue
		}
		if fix, ok := secretFlags[name]; ok {
			return usagef("run: --%s: secrets are not taken on the command line, where other local users can read them: %s", name, fix)
		}
	}
	return nil
}

// yamlKeys lists the keys of the config file.
func yamlKeys() []string {
	t := reflect.TypeFor[runConfig]()
	var keys []string
	for i := range t.NumField() {
		if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" && k != "-" {
			keys = append(keys, k)
		}
	}
	return keys
}

// fill takes unset values from the environment, then from the file, then defaults.
func (c *runConfig) fill(file runConfig) error {
	pick := func(dst *string, env, fromFile, def string) {
		switch {
		case *dst != "":
		case os.Getenv(env) != "":
			*dst = os.Getenv(env)
		case fromFile != "":
			*dst = fromFile
		default:
			*dst = def
		}
	}
	pickBool := func(dst *bool, env string, fromFile bool) {
		if !*dst {
			*dst = fromFile || os.Getenv(env) == "true"
		}
	}
	if len(c.DSNs) == 0 {
		if v := os.Getenv("PGACTIVE_DSN"); v != "" {
			c.DSNs = []string{v}
		} else {
			c.DSNs = file.DSNs
		}
	}
	pick(&c.NATS, "PGACTIVE_NATS", file.NATS, "")
	pick(&c.NATSListen, "PGACTIVE_NATS_LISTEN", file.NATSListen, "127.0.0.1:4222")
	pick(&c.HTTP, "PGACTIVE_HTTP", file.HTTP, "127.0.0.1:8080")
	pick(&c.DataDir, "PGACTIVE_DATA_DIR", file.DataDir, "pgactive-data")
	pick(&c.LogLevel, "PGACTIVE_LOG_LEVEL", file.LogLevel, "info")
	if c.StreamReplicas == 0 {
		if v := os.Getenv("PGACTIVE_STREAM_REPLICAS"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return usagef("PGACTIVE_STREAM_REPLICAS=%q is not a number", v)
			}
			c.StreamReplicas = n
		} else {
			c.StreamReplicas = file.StreamReplicas
		}
	}
	pickBool(&c.CreateSchema, "PGACTIVE_CREATE_SCHEMA", file.CreateSchema)

	pick(&c.NATSServerName, "PGACTIVE_NATS_SERVER_NAME", file.NATSServerName, "")
	pick(&c.NATSClusterName, "PGACTIVE_NATS_CLUSTER_NAME", file.NATSClusterName, "")
	pick(&c.NATSClusterListen, "PGACTIVE_NATS_CLUSTER_LISTEN", file.NATSClusterListen, "")
	pick(&c.NATSRoutes, "PGACTIVE_NATS_ROUTES", file.NATSRoutes, "")
	pick(&c.NATSClusterUser, "PGACTIVE_NATS_CLUSTER_USER", file.NATSClusterUser, "")
	pick(&c.NATSClusterPasswordFile, "PGACTIVE_NATS_CLUSTER_PASSWORD_FILE", file.NATSClusterPasswordFile, "")
	pick(&c.NATSClusterTLSCert, "PGACTIVE_NATS_CLUSTER_TLS_CERT", file.NATSClusterTLSCert, "")
	pick(&c.NATSClusterTLSKey, "PGACTIVE_NATS_CLUSTER_TLS_KEY", file.NATSClusterTLSKey, "")
	pick(&c.NATSClusterTLSCA, "PGACTIVE_NATS_CLUSTER_TLS_CA", file.NATSClusterTLSCA, "")

	pick(&c.NATSListenUser, "PGACTIVE_NATS_LISTEN_USER", file.NATSListenUser, "")
	pick(&c.NATSListenPasswordFile, "PGACTIVE_NATS_LISTEN_PASSWORD_FILE", file.NATSListenPasswordFile, "")
	pick(&c.NATSListenTokenFile, "PGACTIVE_NATS_LISTEN_TOKEN_FILE", file.NATSListenTokenFile, "")
	pick(&c.NATSListenTLSCert, "PGACTIVE_NATS_LISTEN_TLS_CERT", file.NATSListenTLSCert, "")
	pick(&c.NATSListenTLSKey, "PGACTIVE_NATS_LISTEN_TLS_KEY", file.NATSListenTLSKey, "")
	pick(&c.NATSListenTLSCA, "PGACTIVE_NATS_LISTEN_TLS_CA", file.NATSListenTLSCA, "")
	pickBool(&c.NATSListenTLSVerify, "PGACTIVE_NATS_LISTEN_TLS_VERIFY", file.NATSListenTLSVerify)

	pick(&c.NATSUser, "PGACTIVE_NATS_USER", file.NATSUser, "")
	pick(&c.NATSPasswordFile, "PGACTIVE_NATS_PASSWORD_FILE", file.NATSPasswordFile, "")
	pick(&c.NATSTokenFile, "PGACTIVE_NATS_TOKEN_FILE", file.NATSTokenFile, "")
	pick(&c.NATSNKeySeedFile, "PGACTIVE_NATS_NKEY_SEED_FILE", file.NATSNKeySeedFile, "")
	pick(&c.NATSCreds, "PGACTIVE_NATS_CREDS", file.NATSCreds, "")
	pick(&c.NATSTLSCA, "PGACTIVE_NATS_TLS_CA", file.NATSTLSCA, "")
	pick(&c.NATSTLSCert, "PGACTIVE_NATS_TLS_CERT", file.NATSTLSCert, "")
	pick(&c.NATSTLSKey, "PGACTIVE_NATS_TLS_KEY", file.NATSTLSKey, "")
	return nil
}

// readSecrets reads each secret from its environment variable or its file.
func (c *runConfig) readSecrets() error {
	for _, s := range []struct {
		dst        *string
		env, flag  string
		pathOfFile string
	}{
		{&c.secrets.natsPassword, "PGACTIVE_NATS_PASSWORD", "nats-password-file", c.NATSPasswordFile},
		{&c.secrets.natsToken, "PGACTIVE_NATS_TOKEN", "nats-token-file", c.NATSTokenFile},
		{&c.secrets.listenPassword, "PGACTIVE_NATS_LISTEN_PASSWORD", "nats-listen-password-file", c.NATSListenPasswordFile},
		{&c.secrets.listenToken, "PGACTIVE_NATS_LISTEN_TOKEN", "nats-listen-token-file", c.NATSListenTokenFile},
		{&c.secrets.clusterPassword, "PGACTIVE_NATS_CLUSTER_PASSWORD", "nats-cluster-password-file", c.NATSClusterPasswordFile},
	} {
		v, err := readSecret(s.env, s.flag, s.pathOfFile)
		if err != nil {
			return err
		}
		*s.dst = v
	}
	return nil
}

// readSecret returns the secret in environment variable env or in the file
// at path (given with --flag); errors name where, never what.
func readSecret(env, flag, path string) (string, error) {
	v := os.Getenv(env)
	switch {
	case v != "" && path != "":
		return "", usagef("run: both %s and --%s are set: keep one", env, flag)
	case v != "":
		return v, nil
	case path == "":
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usagef("run: --%s: %w", flag, err)
	}
	v = strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", usagef("run: --%s: %s is empty: write the secret into it", flag, path)
	}
	return v, nil
}

func (c *runConfig) validate() error {
	if len(c.DSNs) == 0 {
		return usagef("run: no database given: pass --dsn 'host=... dbname=...' (or set PGACTIVE_DSN, or dsn: in the config file)")
	}
	for _, addr := range []struct{ name, v string }{{"nats-listen", c.NATSListen}, {"http", c.HTTP}} {
		if _, _, err := net.SplitHostPort(addr.v); err != nil {
			return usagef("run: --%s %q is not host:port", addr.name, addr.v)
		}
	}
	if c.StreamReplicas < 0 || c.StreamReplicas > 5 {
		return usagef("run: --stream-replicas %d: use 1 to 5", c.StreamReplicas)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.NATS != "" {
		if err := checkSeedURLs(c.NATS); err != nil {
			return err
		}
		if err := c.refuseEmbeddedSettings(); err != nil {
			return err
		}
		return c.validateClient()
	}
	if err := c.refuseClientSettings(); err != nil {
		return err
	}
	if err := c.validateCluster(); err != nil {
		return err
	}
	return c.validateListen()
}

// checkSeedURLs refuses credentials written into NATS URLs, which would end
// up in process listings and logs.
func checkSeedURLs(urls string) error {
	for _, raw := range strings.Split(urls, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			return usagef("run: --nats: %q is not a URL like nats://host:4222", stream.RedactURLs(raw))
		}
		if u.User != nil {
			return usagef("run: --nats: %s carries credentials: give the user with --nats-user and the password in PGACTIVE_NATS_PASSWORD or --nats-password-file (a token: PGACTIVE_NATS_TOKEN or --nats-token-file)", u.Redacted())
		}
	}
	return nil
}

// setting is a configuration value named as a flag, for error messages.
type setting struct {
	flag string
	set  bool
}

// settingName names a setting as a flag and as its config file key.
func settingName(flag string) string {
	return fmt.Sprintf("--%s (%s)", flag, strings.ReplaceAll(flag, "-", "_"))
}

func (c *runConfig) refuseEmbeddedSettings() error {
	for _, s := range []setting{
		{"nats-server-name", c.NATSServerName != ""}, {"nats-cluster-name", c.NATSClusterName != ""},
		{"nats-cluster-listen", c.NATSClusterListen != ""}, {"nats-routes", c.NATSRoutes != ""},
		{"nats-cluster-user", c.NATSClusterUser != ""}, {"nats-cluster-password-file", c.secrets.clusterPassword != ""},
		{"nats-cluster-tls-cert", c.NATSClusterTLSCert != ""}, {"nats-cluster-tls-key", c.NATSClusterTLSKey != ""},
		{"nats-cluster-tls-ca", c.NATSClusterTLSCA != ""},
		{"nats-listen-user", c.NATSListenUser != ""}, {"nats-listen-password-file", c.secrets.listenPassword != ""},
		{"nats-listen-token-file", c.secrets.listenToken != ""}, {"nats-listen-tls-cert", c.NATSListenTLSCert != ""},
		{"nats-listen-tls-key", c.NATSListenTLSKey != ""}, {"nats-listen-tls-ca", c.NATSListenTLSCA != ""},
		{"nats-listen-tls-verify", c.NATSListenTLSVerify},
	} {
		if s.set {
			return usagef("run: %s configures the embedded NATS server, which is not started when --nats is given: drop one of them", settingName(s.flag))
		}
	}
	return nil
}

func (c *runConfig) refuseClientSettings() error {
	for _, s := range []setting{
		{"nats-user", c.NATSUser != ""}, {"nats-password-file", c.secrets.natsPassword != ""},
		{"nats-token-file", c.secrets.natsToken != ""}, {"nats-nkey-seed-file", c.NATSNKeySeedFile != ""},
		{"nats-creds", c.NATSCreds != ""}, {"nats-tls-ca", c.NATSTLSCA != ""},
		{"nats-tls-cert", c.NATSTLSCert != ""}, {"nats-tls-key", c.NATSTLSKey != ""},
	} {
		if s.set {
			return usagef("run: %s is for the NATS servers given with --nats, and none is given: "+
				"add --nats URL, or secure the embedded server with --nats-listen-user, --nats-listen-token-file and --nats-listen-tls-*", settingName(s.flag))
		}
	}
	return nil
}

func (c *runConfig) validateClient() error {
	methods := []string{}
	if c.NATSUser != "" || c.secrets.natsPassword != "" {
		methods = append(methods, settingName("nats-user"))
	}
	if c.secrets.natsToken != "" {
		methods = append(methods, settingName("nats-token-file")+" or PGACTIVE_NATS_TOKEN")
	}
	if c.NATSNKeySeedFile != "" {
		methods = append(methods, settingName("nats-nkey-seed-file"))
	}
	if c.NATSCreds != "" {
		methods = append(methods, settingName("nats-creds"))
	}
	switch {
	case len(methods) > 1:
		return usagef("run: %s: NATS takes one way to authenticate: keep one", strings.Join(methods, " and "))
	case c.NATSUser != "" && c.secrets.natsPassword == "":
		return usagef("run: %s needs a password: set PGACTIVE_NATS_PASSWORD or use --nats-password-file FILE", settingName("nats-user"))
	case c.NATSUser == "" && c.secrets.natsPassword != "":
		return usagef("run: a NATS password is set (PGACTIVE_NATS_PASSWORD or --nats-password-file) but no user: add --nats-user NAME")
	case (c.NATSTLSCert == "") != (c.NATSTLSKey == ""):
		return usagef("run: a client certificate needs both %s and %s", settingName("nats-tls-cert"), settingName("nats-tls-key"))
	}
	return checkFiles(map[string]string{"nats-nkey-seed-file": c.NATSNKeySeedFile, "nats-creds": c.NATSCreds,
		"nats-tls-ca": c.NATSTLSCA, "nats-tls-cert": c.NATSTLSCert, "nats-tls-key": c.NATSTLSKey})
}

func (c *runConfig) validateCluster() error {
	clustered := c.NATSClusterListen != "" || c.NATSRoutes != ""
	clusterTLS := []string{c.NATSClusterTLSCert, c.NATSClusterTLSKey, c.NATSClusterTLSCA}
	someTLS, allTLS := slices.ContainsFunc(clusterTLS, notEmpty), !slices.Contains(clusterTLS, "")
	switch {
	case !clustered && c.NATSClusterName != "":
		return usagef("run: %s needs --nats-cluster-listen HOST:PORT and --nats-routes URLS to join a cluster", settingName("nats-cluster-name"))
	case !clustered && (c.NATSClusterUser != "" || c.secrets.clusterPassword != ""):
		return usagef("run: %s and its password are for routes: add --nats-cluster-listen and --nats-routes, or drop them", settingName("nats-cluster-user"))
	case !clustered && someTLS:
		return usagef("run: --nats-cluster-tls-* are for routes: add --nats-cluster-listen and --nats-routes, or drop them")
	case !clustered:
		return checkServerName(c.NATSServerName)
	case c.NATSClusterListen == "":
		return usagef("run: %s needs %s: the HOST:PORT the other servers' routes reach this one on, e.g. 0.0.0.0:6222",
			settingName("nats-routes"), settingName("nats-cluster-listen"))
	case c.NATSRoutes == "":
		return usagef("run: %s needs %s: the route URL of every cluster member, this one included, e.g. nats://host1:6222,nats://host2:6222,nats://host3:6222",
			settingName("nats-cluster-listen"), settingName("nats-routes"))
	case (c.NATSClusterUser == "") != (c.secrets.clusterPassword == ""):
		return usagef("run: route authentication needs both %s and its password (PGACTIVE_NATS_CLUSTER_PASSWORD or --nats-cluster-password-file)", settingName("nats-cluster-user"))
	case someTLS && !allTLS:
		return usagef("run: route TLS needs all of %s, %s and %s", settingName("nats-cluster-tls-cert"),
			settingName("nats-cluster-tls-key"), settingName("nats-cluster-tls-ca"))
	}
	if err := checkFiles(map[string]string{"nats-cluster-tls-cert": c.NATSClusterTLSCert, "nats-cluster-tls-key": c.NATSClusterTLSKey,
		"nats-cluster-tls-ca": c.NATSClusterTLSCA}); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.NATSClusterListen); err != nil {
		return usagef("run: %s %q is not HOST:PORT", settingName("nats-cluster-listen"), c.NATSClusterListen)
	}
	if _, err := stream.ParseRoutes(c.routes()); err != nil {
		return usagef("run: %s: %w", settingName("nats-routes"), err)
	}
	if c.NATSClusterName == "" {
		c.NATSClusterName = "pgactive"
	}
	if c.NATSServerName == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			return usagef("run: a cluster member needs a name: pass %s NAME, unique in the cluster", settingName("nats-server-name"))
		}
		c.NATSServerName = host
	}
	return checkServerName(c.NATSServerName)
}

func notEmpty(s string) bool { return s != "" }

func checkServerName(name string) error {
	if strings.ContainsAny(name, " \t\r\n") {
		return usagef("run: %s %q has white space: use letters, digits, '-' or '_'", settingName("nats-server-name"), name)
	}
	return nil
}

func (c *runConfig) validateListen() error {
	switch {
	case c.secrets.listenToken != "" && (c.NATSListenUser != "" || c.secrets.listenPassword != ""):
		return usagef("run: the embedded server takes a user and password or a token (%s), not both: keep one", settingName("nats-listen-token-file"))
	case c.NATSListenUser != "" && c.secrets.listenPassword == "":
		return usagef("run: %s needs a password: set PGACTIVE_NATS_LISTEN_PASSWORD or use --nats-listen-password-file FILE", settingName("nats-listen-user"))
	case c.NATSListenUser == "" && c.secrets.listenPassword != "":
		return usagef("run: a password for the embedded server is set (PGACTIVE_NATS_LISTEN_PASSWORD or --nats-listen-password-file) but no user: add --nats-listen-user NAME")
	case (c.NATSListenTLSCert == "") != (c.NATSListenTLSKey == ""):
		return usagef("run: TLS needs both %s and %s", settingName("nats-listen-tls-cert"), settingName("nats-listen-tls-key"))
	case c.NATSListenTLSCA != "" && c.NATSListenTLSCert == "":
		return usagef("run: %s needs %s and %s: client certificates are checked over TLS",
			settingName("nats-listen-tls-ca"), settingName("nats-listen-tls-cert"), settingName("nats-listen-tls-key"))
	case c.NATSListenTLSVerify && c.NATSListenTLSCA == "":
		return usagef("run: %s needs %s, the CA that signs client certificates", settingName("nats-listen-tls-verify"), settingName("nats-listen-tls-ca"))
	}
	return checkFiles(map[string]string{"nats-listen-tls-cert": c.NATSListenTLSCert, "nats-listen-tls-key": c.NATSListenTLSKey,
		"nats-listen-tls-ca": c.NATSListenTLSCA})
}

// checkFiles checks that the files named by flags exist.
func checkFiles(files map[string]string) error {
	for _, flag := range slices.Sorted(maps.Keys(files)) {
		if files[flag] == "" {
			continue
		}
		if _, err := os.Stat(files[flag]); err != nil {
			return usagef("run: %s: %w", settingName(flag), err)
		}
	}
	return nil
}

// routes returns the route URLs of --nats-routes.
func (c *runConfig) routes() []string {
	var out []string
	for _, r := range strings.Split(c.NATSRoutes, ",") {
		if r = strings.TrimSpace(r); r != "" {
			out = append(out, r)
		}
	}
	return out
}

// serverConfig is the configuration of the embedded server, its store in dir.
func (c *runConfig) serverConfig(dir string, log *slog.Logger) stream.ServerConfig {
	cfg := stream.ServerConfig{
		Listen:   c.NATSListen,
		StoreDir: dir,
		Name:     c.NATSServerName,
		Auth:     stream.ServerAuth{User: c.NATSListenUser, Password: c.secrets.listenPassword, Token: c.secrets.listenToken},
		TLS: stream.ServerTLS{CertFile: c.NATSListenTLSCert, KeyFile: c.NATSListenTLSKey, CAFile: c.NATSListenTLSCA,
			VerifyClients: c.NATSListenTLSVerify},
		Log: log,
	}
	if c.NATSClusterListen != "" {
		cfg.Cluster = stream.ClusterConfig{Name: c.NATSClusterName, Listen: c.NATSClusterListen, Routes: c.routes(),
			User: c.NATSClusterUser, Password: c.secrets.clusterPassword,
			TLS: stream.ServerTLS{CertFile: c.NATSClusterTLSCert, KeyFile: c.NATSClusterTLSKey, CAFile: c.NATSClusterTLSCA}}
	}
	return cfg
}

// clientAuth is how the agents authenticate to the servers of --nats.
func (c *runConfig) clientAuth() stream.ClientAuth {
	return stream.ClientAuth{User: c.NATSUser, Password: c.secrets.natsPassword, Token: c.secrets.natsToken,
		NKeySeedFile: c.NATSNKeySeedFile, CredsFile: c.NATSCreds, TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, usagef("log level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// String describes the configuration without its DSNs or secrets, so that a
// runConfig printed or logged by mistake leaks nothing.
func (c runConfig) String() string {
	nats := "embedded server on " + c.NATSListen
	if c.NATS != "" {
		nats = fmt.Sprintf("%d NATS seed URL(s)", len(strings.Split(c.NATS, ",")))
	}
	return fmt.Sprintf("%d database(s), %s", len(c.DSNs), nats)
}

// LogValue keeps secrets out of slog.
func (c runConfig) LogValue() slog.Value { return slog.StringValue(c.String()) }
