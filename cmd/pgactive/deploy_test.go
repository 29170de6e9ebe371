package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/pgactive-go/pgactive/integration"
	"github.com/pgactive-go/pgactive/stream"
)

// deployDir is the repository's deploy directory, seen from this package.
const deployDir = "../../deploy"

// samples returns the deploy files matching pattern, failing if there are none.
func samples(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(deployDir, pattern))
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy samples match %s (err %v)", pattern, err)
	}
	return files
}

func readSample(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// installed writes content (a sample) into dir after replacing old with new
// in it, and returns its path.
func installed(t *testing.T, dir, name, content string, oldnew ...string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(strings.NewReplacer(oldnew...).Replace(content)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var etcPgactive = regexp.MustCompile(`/etc/pgactive/[^\s"']+`)

// etcFiles creates under root every /etc/pgactive file content names: the
// certificates from certs, secrets with a password each.
func etcFiles(t *testing.T, root, content string, certs integration.TLSFiles) {
	t.Helper()
	for _, p := range etcPgactive.FindAllString(content, -1) {
		dst := filepath.Join(root, strings.TrimPrefix(p, "/etc/pgactive/"))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			t.Fatal(err)
		}
		var data []byte
		switch filepath.Base(p) {
		case "ca.pem":
			data = mustRead(t, certs.CA)
		case "server.pem":
			data = mustRead(t, certs.ServerCert)
		case "server-key.pem":
			data = mustRead(t, certs.ServerKey)
		default:
			data = []byte(samplePassword + "\n")
		}
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// samplePassword is what the docs tell users to generate: letters and
// digits, starting with a letter (nats-server parses $VARIABLES as values).
const samplePassword = "pw3f9e0c1b7a2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c"

var hostOfSample = regexp.MustCompile(`db[0-9]`)

func TestDeployAgentConfigs(t *testing.T) {
	certs := integration.GenerateTLS(t, t.TempDir(), "127.0.0.1")
	for _, path := range samples(t, "agents/*.yaml") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			content := readSample(t, path)
			if strings.Contains(strings.ToLower(content), "password=") {
				t.Errorf("the sample writes a password inline")
			}
			root := t.TempDir()
			etcFiles(t, root, content, certs)
			file := installed(t, root, "pgactive.yaml", content, "/etc/pgactive/", root+"/")
			cfg, err := parseRunConfig([]string{"--config", file}, io.Discard)
			if err != nil {
				t.Fatalf("pgactive run --config %s: %v", path, err)
			}
			host := hostOfSample.FindString(filepath.Base(path))
			if len(cfg.DSNs) != 1 || !strings.Contains(cfg.DSNs[0], "dbname=app") {
				t.Errorf("dsn: got %q, want one DSN of database app", cfg.DSNs)
			}
			if cfg.StreamReplicas != 3 {
				t.Errorf("stream_replicas: got %d, want 3", cfg.StreamReplicas)
			}
			if cfg.HTTP != "127.0.0.1:8080" {
				t.Errorf("http: got %q, want the loopback address", cfg.HTTP)
			}
			if cfg.NATS != "" {
				if got := len(strings.Split(cfg.NATS, ",")); got != 3 || cfg.clientAuth().Password != samplePassword || cfg.NATSTLSCA == "" {
					t.Errorf("nats: got %d seeds, password read %v, CA %q; want 3 seeds, the password file and a CA",
						got, cfg.clientAuth().Password == samplePassword, cfg.NATSTLSCA)
				}
				return
			}
			if cfg.NATSServerName != host {
				t.Errorf("nats_server_name: got %q, want %q as the file name says", cfg.NATSServerName, host)
			}
			if routes := cfg.routes(); len(routes) != 3 || !slices.ContainsFunc(routes, func(r string) bool { return strings.Contains(r, host+".") }) {
				t.Errorf("nats_routes: got %q, want all three servers, %s included", routes, host)
			}
			sc := cfg.serverConfig(t.TempDir(), nil)
			if sc.Cluster.TLS.CAFile == "" || sc.Cluster.Password != samplePassword || sc.Auth.Password != samplePassword {
				t.Errorf("got route TLS CA %q, route password read %v, client password read %v; want all",
					sc.Cluster.TLS.CAFile, sc.Cluster.Password == samplePassword, sc.Auth.Password == samplePassword)
			}
		})
	}
}

// TestDeployEmbeddedClusterSamples starts the three embedded-dbN.yaml
// samples on this machine (their hosts and ports moved to loopback) and
// checks they form a JetStream cluster and choose R3.
func TestDeployEmbeddedClusterSamples(t *testing.T) {
	files := samples(t, "agents/embedded-db*.yaml")
	certs := integration.GenerateTLS(t, t.TempDir(), "127.0.0.1")
	clusterPorts := map[string]int{}
	for _, f := range files {
		clusterPorts[hostOfSample.FindString(filepath.Base(f))] = testPort(t)
	}
	var moves []string
	for host, port := range clusterPorts {
		moves = append(moves, host+".example.net:6222", fmt.Sprintf("127.0.0.1:%d", port))
	}
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type started struct {
		js       jetstream.JetStream
		replicas int
		stop     func()
		err      error
	}
	results := make([]started, len(files))
	var wg sync.WaitGroup
	for i, f := range files {
		content := readSample(t, f)
		root := t.TempDir()
		etcFiles(t, root, content, certs)
		host := hostOfSample.FindString(filepath.Base(f))
		file := installed(t, root, "pgactive.yaml", content, append(moves,
			"/etc/pgactive/", root+"/",
			"/var/lib/pgactive", filepath.Join(root, "data"),
			"0.0.0.0:6222", fmt.Sprintf("127.0.0.1:%d", clusterPorts[host]),
			"127.0.0.1:4222", fmt.Sprintf("127.0.0.1:%d", testPort(t)))...)
		cfg, err := parseRunConfig([]string{"--config", file}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			_, r.js, r.replicas, r.stop, r.err = connectNATS(ctx, cfg, log)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.stop != nil {
			t.Cleanup(r.stop)
		}
		if r.err != nil {
			t.Fatalf("%s: %v\n%s", files[i], r.err, logs.String())
		}
		if r.replicas != 3 {
			t.Errorf("%s: got %d replicas, want 3", files[i], r.replicas)
		}
	}
	if _, err := results[0].js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
		t.Fatalf("create an R3 stream: %v", err)
	}
	if strings.Contains(logs.String(), samplePassword) {
		t.Errorf("the log holds a password")
	}
}

// natsSample returns the NATS sample at path as installed in dir: its TLS
// files and store moved there, hosts and ports as given.
func natsSample(t *testing.T, path, dir string, certs integration.TLSFiles, moves ...string) string {
	t.Helper()
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"ca.pem": certs.CA, "server.pem": certs.ServerCert, "server-key.pem": certs.ServerKey} {
		if err := os.WriteFile(filepath.Join(tlsDir, name), mustRead(t, src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return installed(t, dir, "nats-server.conf", readSample(t, path), append(moves,
		"/etc/nats/tls/", tlsDir+"/", "/var/lib/nats", filepath.Join(dir, "jetstream"))...)
}

func TestDeployNATSConfigs(t *testing.T) {
	t.Setenv("NATS_PGACTIVE_PASSWORD", samplePassword)
	certs := integration.GenerateTLS(t, t.TempDir(), "127.0.0.1")
	for _, path := range samples(t, "nats/*.conf") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			opts, err := server.ProcessConfigFile(natsSample(t, path, t.TempDir(), certs))
			if err != nil {
				t.Fatalf("nats-server --config %s: %v", path, err)
			}
			host := hostOfSample.FindString(filepath.Base(path))
			for _, c := range []struct {
				what string
				ok   bool
			}{
				{"server_name is the host " + host, opts.ServerName == host},
				{"JetStream on", opts.JetStream},
				{"max_payload 8MB, as the embedded server", opts.MaxPayload == stream.MaxPayload},
				{"client TLS", opts.TLSConfig != nil},
				{"user pgactive with the password of NATS_PGACTIVE_PASSWORD", len(opts.Users) == 1 && opts.Users[0].Username == "pgactive" && opts.Users[0].Password == samplePassword},
				{"cluster pgactive on port 6222", opts.Cluster.Name == "pgactive" && opts.Cluster.Port == 6222},
				{"route TLS", opts.Cluster.TLSConfig != nil},
				{"three routes, " + host + " included", len(opts.Routes) == 3 && slices.ContainsFunc(opts.Routes, func(u *url.URL) bool { return strings.HasPrefix(u.Host, host+".") })},
				{"monitoring on loopback", opts.HTTPHost == "127.0.0.1"},
			} {
				if !c.ok {
					t.Errorf("want %s", c.what)
				}
			}
		})
	}
}

// TestDeployNATSClusterSamples starts the three NATS samples on this machine
// (hosts and ports moved to loopback) and connects to them as the agent
// samples do: user, password file and CA.
func TestDeployNATSClusterSamples(t *testing.T) {
	t.Setenv("NATS_PGACTIVE_PASSWORD", samplePassword)
	files := samples(t, "nats/db*.conf")
	certs := integration.GenerateTLS(t, t.TempDir(), "127.0.0.1")
	routePorts := map[string]int{}
	for _, f := range files {
		routePorts[hostOfSample.FindString(filepath.Base(f))] = testPort(t)
	}
	var moves []string
	for host, port := range routePorts {
		moves = append(moves, host+".example.net:6222", fmt.Sprintf("127.0.0.1:%d", port))
	}
	var urls []string
	for _, f := range files {
		host := hostOfSample.FindString(filepath.Base(f))
		client := fmt.Sprintf("127.0.0.1:%d", testPort(t))
		conf := natsSample(t, f, t.TempDir(), certs, append(moves,
			"0.0.0.0:4222", client,
			"0.0.0.0:6222", fmt.Sprintf("127.0.0.1:%d", routePorts[host]),
			"127.0.0.1:8222", fmt.Sprintf("127.0.0.1:%d", testPort(t)))...)
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		opts.NoSigs, opts.NoLog = true, true
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Start()
		t.Cleanup(srv.Shutdown)
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s: not ready", f)
		}
		urls = append(urls, "tls://"+client)
	}
	// The agent samples' client settings, against these servers.
	agent := readSample(t, samples(t, "agents/db1.yaml")[0])
	root := t.TempDir()
	etcFiles(t, root, agent, certs)
	file := installed(t, root, "pgactive.yaml", agent, "/etc/pgactive/", root+"/")
	cfg, err := parseRunConfig([]string{"--config", file, "--nats", strings.Join(urls, ",")}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, js, replicas, stop, err := connectNATS(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("connect as the agent samples do: %v", err)
	}
	defer stop()
	if replicas != 3 {
		t.Errorf("replicas: got %d, want 3", replicas)
	}
	if nc.ConnectedClusterName() != "pgactive" {
		t.Errorf("cluster: got %q, want pgactive", nc.ConnectedClusterName())
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
		t.Fatalf("create an R3 stream: %v", err)
	}
}

func TestDeployCompose(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Environment map[string]string `yaml:"environment"`
			Secrets     []string          `yaml:"secrets"`
			Volumes     []string          `yaml:"volumes"`
			DependsOn   map[string]any    `yaml:"depends_on"`
		} `yaml:"services"`
		Secrets map[string]struct {
			File string `yaml:"file"`
		} `yaml:"secrets"`
	}
	path := samples(t, "compose.yaml")[0]
	if err := yaml.Unmarshal([]byte(readSample(t, path)), &compose); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	for _, name := range []string{"pg1", "pg2", "pg3", "agent1", "agent2", "agent3"} {
		if _, ok := compose.Services[name]; !ok {
			t.Errorf("no service %s", name)
		}
	}
	for name, svc := range compose.Services {
		for _, s := range svc.Secrets {
			if _, ok := compose.Secrets[s]; !ok {
				t.Errorf("service %s uses secret %s, which is not declared", name, s)
			}
		}
		for _, v := range svc.Volumes {
			src := strings.Split(v, ":")[0]
			if strings.HasPrefix(src, "../extension/") {
				if _, err := os.Stat(filepath.Join(deployDir, src)); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			}
		}
		for k, v := range svc.Environment {
			if strings.Contains(strings.ToLower(v), "password=") || (strings.Contains(k, "PASSWORD") && !strings.HasSuffix(k, "_FILE")) {
				t.Errorf("service %s: %s holds a password; use a secret file", name, k)
			}
		}
		if !strings.HasPrefix(name, "agent") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			for k, v := range svc.Environment {
				t.Setenv(k, v)
			}
			pgpass := filepath.Join(t.TempDir(), "pgpass")
			if err := os.WriteFile(pgpass, []byte("*:*:*:postgres:"+samplePassword+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := parseRunConfig(nil, io.Discard)
			if err != nil {
				t.Fatalf("pgactive run with the environment of %s: %v", name, err)
			}
			if cfg.NATSServerName != name || !slices.Contains(cfg.routes(), "nats-route://"+name+":6222") {
				t.Errorf("got server %q with routes %q, want %s among them", cfg.NATSServerName, cfg.routes(), name)
			}
			if !strings.Contains(cfg.DSNs[0], "passfile=/run/secrets/pgpass") || !slices.Contains(svc.Secrets, "pgpass") {
				t.Errorf("dsn %q, secrets %q: want the password from the pgpass secret", cfg.DSNs[0], svc.Secrets)
			}
			pg := "pg" + strings.TrimPrefix(name, "agent")
			if _, ok := svc.DependsOn[pg]; !ok || !strings.Contains(cfg.DSNs[0], "host="+pg+" ") {
				t.Errorf("want %s to serve %s and wait for it", name, pg)
			}
		})
	}
}

func TestDeploySystemdUnits(t *testing.T) {
	for _, path := range samples(t, "systemd/*.service") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			unit := parseUnit(t, path)
			for _, key := range []string{"Unit.Description", "Service.ExecStart", "Service.User", "Service.Restart", "Install.WantedBy"} {
				if len(unit[key]) == 0 {
					t.Errorf("no %s", key)
				}
			}
			if slices.Contains(unit["Service.User"], "root") {
				t.Errorf("runs as root")
			}
			exec := strings.Fields(unit["Service.ExecStart"][0])
			switch filepath.Base(exec[0]) {
			case "pgactive":
				if exec[1] != "run" {
					t.Fatalf("ExecStart %q: want pgactive run", exec)
				}
				checkUnitRun(t, exec[2:])
			case "nats-server":
				if !slices.Contains(exec, "/etc/nats/nats-server.conf") {
					t.Errorf("ExecStart %q: want the configuration /etc/nats/nats-server.conf", exec)
				}
			default:
				t.Errorf("ExecStart %q: unknown program", exec)
			}
		})
	}
}

// checkUnitRun parses the unit's `pgactive run` arguments with each agent
// sample as its --config.
func checkUnitRun(t *testing.T, args []string) {
	t.Helper()
	i := slices.Index(args, "--config")
	if i < 0 || i+1 >= len(args) || args[i+1] != "/etc/pgactive/pgactive.yaml" {
		t.Fatalf("pgactive run %q: want --config /etc/pgactive/pgactive.yaml", args)
	}
	certs := integration.GenerateTLS(t, t.TempDir(), "127.0.0.1")
	for _, sample := range samples(t, "agents/*.yaml") {
		content := readSample(t, sample)
		root := t.TempDir()
		etcFiles(t, root, content, certs)
		args := slices.Clone(args)
		args[i+1] = installed(t, root, "pgactive.yaml", content, "/etc/pgactive/", root+"/")
		if _, err := parseRunConfig(args, io.Discard); err != nil {
			t.Errorf("pgactive run %q with %s: %v", args, sample, err)
		}
	}
}

// parseUnit reads a systemd unit into "Section.Key" → values.
func parseUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(readSample(t, path)))
	section := ""
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is not Key=Value in a section", path, n, line)
			}
			out[section+"."+strings.TrimSpace(k)] = append(out[section+"."+strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return out
}
