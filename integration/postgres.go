package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Paths inside a cluster directory.
const (
	dataSubdir      = "data"
	logFileName     = "postgres.log"
	pwFileName      = "pwfile"
	harnessConfName = "pgactive_harness.conf"
)

const (
	superuser       = "postgres"
	pgVersionMajor  = "15"
	defaultBinDir   = "/usr/lib/postgresql/15/bin"
	pgCtlTimeoutSec = "120"
	logTailLines    = 50
	startAttempts   = 3
)

// Postgres is a throwaway PostgreSQL cluster started by [StartPostgres].
type Postgres struct {
	// Port is the TCP port the server listens on, on 127.0.0.1 only.
	Port int
	// Dir is the cluster's own directory: it holds the data directory, the server log and the
	// Unix socket. It is removed when the test ends.
	Dir string
	// DataDir is the data directory (PGDATA), inside Dir.
	DataDir string
	// LogFile is the server log, inside Dir.
	LogFile string
	// BinDir holds the PostgreSQL binaries the cluster runs.
	BinDir string
	// Password is the password of the superuser "postgres", random per cluster.
	Password string

	cred    *syscall.Credential // OS user to run the server as; nil for the current user
	running bool
}

type postgresConfig struct {
	settings [][2]string
}

// PostgresOption changes how [StartPostgres] sets up a cluster.
type PostgresOption func(*postgresConfig)

// WithSetting adds name = 'value' to the cluster's configuration, after (so overriding) the harness's
// defaults. For example WithSetting("wal_level", "replica") sets up a node that cannot take part.
func WithSetting(name, value string) PostgresOption {
	return func(c *postgresConfig) {
		c.settings = append(c.settings, [2]string{name, value})
	}
}

// defaultSettings are the settings every harness cluster starts with.
func defaultSettings(dir string) [][2]string {
	return [][2]string{
		{"wal_level", "logical"},
		{"track_commit_timestamp", "on"},
		{"max_replication_slots", "32"},
		{"max_wal_senders", "32"},
		{"max_worker_processes", "32"},
		{"listen_addresses", "127.0.0.1"},
		{"unix_socket_directories", dir},
		{"fsync", "on"}, // crash tests rely on it
		{"logging_collector", "off"},
	}
}

// StartPostgres initialises and starts a PostgreSQL 15 cluster for the test, and registers its
// removal with t.Cleanup: the server is stopped with pg_ctl stop -m immediate and its directory removed.
// If the test failed, the last lines of the server log are written to the test log first.
//
// The cluster is created with initdb -A scram-sha-256 --auth-local=trust -U postgres and a random
// password ([Postgres.Password]); TCP connections, replication connections included, need that password.
// When the test process runs as root, the cluster runs as the postgres OS user.
func StartPostgres(t testing.TB, opts ...PostgresOption) *Postgres {
	t.Helper()
	var cfg postgresConfig
	for _, o := range opts {
		o(&cfg)
	}
	p := &Postgres{BinDir: PGBinDir(t), Password: randomPassword(t)}
	p.cred = serverCredential(t)
	p.Dir = makeClusterDir(t, p.cred)
	p.DataDir = filepath.Join(p.Dir, dataSubdir)
	p.LogFile = filepath.Join(p.Dir, logFileName)
	t.Cleanup(func() { p.cleanup(t) })

	p.initdb(t)
	p.ensureReplicationHBA(t)
	settings := append(defaultSettings(p.Dir), cfg.settings...)
	var lastErr error
	for range startAttempts {
		p.Port = freePort(t)
		p.writeConf(t, settings)
		if lastErr = p.start(); lastErr == nil {
			p.running = true
			p.waitAccepting(t)
			return p
		}
		if !strings.Contains(p.logTail(), "could not bind") {
			break // not a port race: retrying will not help
		}
	}
	t.Fatalf("start PostgreSQL in %s: %v", p.Dir, lastErr)
	return nil
}

// DSN returns a libpq connection string for database db, as the superuser over TCP.
func (p *Postgres) DSN(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable",
		p.Port, superuser, p.Password, db)
}

// RoleDSN returns a libpq connection string for database db, as role with
// password over TCP (password authentication).
func (p *Postgres) RoleDSN(db, role, password string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable",
		p.Port, role, password, db)
}

// CreateDatabase creates database name, failing the test on error.
func (p *Postgres) CreateDatabase(t testing.TB, name string) {
	t.Helper()
	p.Exec(t, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// Exec runs sql with args on a new connection to database db, failing the test on error.
func (p *Postgres) Exec(t testing.TB, db, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN(db))
	if err != nil {
		t.Fatalf("connect to %s on port %d: %v", db, p.Port, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec on %s (port %d): %q: %v", db, p.Port, sql, err)
	}
}

// Connect opens a connection to database db, closed when the test ends.
func (p *Postgres) Connect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN(db))
	if err != nil {
		t.Fatalf("connect to %s on port %d: %v", db, p.Port, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Stop stops the server with pg_ctl stop -m mode: "smart", "fast", or "immediate" (a crash: the next
// start runs recovery).
func (p *Postgres) Stop(t testing.TB, mode string) {
	t.Helper()
	out, err := p.pgCtl("stop", "-m", mode)
	if err != nil {
		t.Fatalf("stop PostgreSQL (-m %s) on port %d: %v\n%s", mode, p.Port, err, out)
	}
	p.running = false
}

// Start starts a stopped server again, on the same port and data, and waits until it accepts
// connections (after crash recovery if it was stopped with mode "immediate").
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	if err := p.start(); err != nil {
		t.Fatalf("start PostgreSQL on port %d: %v", p.Port, err)
	}
	p.running = true
	p.waitAccepting(t)
}

// Psql runs the real psql binary on database db with sql as its input script, like a user would,
// and returns what it printed on standard output. It runs
//
//	psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p PORT -U postgres -d DB -f -
//
// so no psqlrc is read, output is unaligned tuples only (columns separated by "|", one row per line,
// no headers or row counts), and the first error stops the script and fails the test. Notices go to
// standard error and are not returned; use [Postgres.RunPsql] to see them or to expect an error.
func (p *Postgres) Psql(t testing.TB, db string, sql string) string {
	t.Helper()
	stdout, stderr, err := p.RunPsql(db, sql, "-q", "-A", "-t")
	if err != nil {
		t.Fatalf("psql on %s (port %d): %v\nscript:\n%s\nstderr:\n%s", db, p.Port, err, sql, stderr)
	}
	return stdout
}

// RunPsql runs psql -X -v ON_ERROR_STOP=1 with the connection flags for database db, then flags, and
// sql on its standard input (-f -). It returns standard output, standard error, and the error of a
// non-zero exit. Use it to check psql's default (aligned) output, notices, or an expected error.
func (p *Postgres) RunPsql(db, sql string, flags ...string) (stdout, stderr string, err error) {
	args := []string{"-X", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", superuser, "-d", db}
	args = append(args, flags...)
	args = append(args, "-f", "-")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(p.BinDir, "psql"), args...)
	cmd.Env = append(childEnv(p.Dir), "PGPASSWORD="+p.Password)
	cmd.Stdin = strings.NewReader(sql)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// PGBinDir returns the directory holding the PostgreSQL 15 binaries: $PG_BINDIR if set, else
// /usr/lib/postgresql/15/bin, else `pg_config --bindir` if that is version 15. If none is found, the test
// fails when $CI is "true" and is skipped otherwise.
func PGBinDir(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("PG_BINDIR"); dir != "" {
		if !hasInitdb(dir) {
			t.Fatalf("PG_BINDIR=%s has no initdb: point it at the PostgreSQL 15 bin directory", dir)
		}
		return dir
	}
	if hasInitdb(defaultBinDir) {
		return defaultBinDir
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if hasInitdb(dir) && isMajorVersion(dir, pgVersionMajor) {
			return dir
		}
	}
	const msg = "PostgreSQL 15 binaries not found (tried $PG_BINDIR, " + defaultBinDir +
		", pg_config --bindir): run `go tool task deps` to install them"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func hasInitdb(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, "initdb"))
	return err == nil && !fi.IsDir()
}

// isMajorVersion reports whether the postgres binary in dir prints a version of the given major.
func isMajorVersion(dir, major string) bool {
	out, err := exec.Command(filepath.Join(dir, "postgres"), "--version").Output()
	if err != nil {
		return false
	}
	// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
	fields := strings.Fields(string(out))
	return len(fields) >= 3 && strings.HasPrefix(fields[2], major+".")
}

// serverCredential returns the OS user the server must run as: the postgres user when the test runs
// as root (PostgreSQL refuses to run as root), nil (the current user) otherwise.
func serverCredential(t testing.TB) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup(superuser)
	if err != nil {
		t.Fatalf("running as root, so PostgreSQL must run as the %s OS user: %v (install postgresql-15, "+
			"which creates it: `go tool task deps`)", superuser, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("parse uid/gid of OS user %s: %v", superuser, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// makeClusterDir creates the cluster directory under os.TempDir(), owned by the server's OS user.
// It does not use t.TempDir: its parents are not searchable by another user.
func makeClusterDir(t testing.TB, cred *syscall.Credential) string {
	t.Helper()
	dir, err := os.MkdirTemp(os.TempDir(), "pgactive-pg-")
	if err != nil {
		t.Fatalf("create cluster directory: %v", err)
	}
	if cred == nil {
		return dir
	}
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("chown cluster directory %s to %s: %v", dir, superuser, err)
	}
	for parent := filepath.Dir(dir); ; parent = filepath.Dir(parent) {
		if fi, err := os.Stat(parent); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.RemoveAll(dir)
			t.Fatalf("%s is not searchable by the %s OS user: set TMPDIR to a directory such as /tmp",
				parent, superuser)
		}
		if parent == filepath.Dir(parent) {
			return dir
		}
	}
}

// initdb creates the data directory, with the password given through a file removed afterwards.
func (p *Postgres) initdb(t testing.TB) {
	t.Helper()
	pwFile := filepath.Join(p.Dir, pwFileName)
	p.writeFile(t, pwFile, p.Password+"\n")
	defer os.Remove(pwFile)
	out, err := p.run("initdb",
		"-D", p.DataDir,
		"-U", superuser,
		"--pwfile", pwFile,
		"-A", "scram-sha-256",
		"--auth-local=trust",
		"-E", "UTF8",
		"--locale=C",
		// Skip initdb's own fsync of the new files: tests crash the server, not the machine, and the
		// server itself runs with fsync=on.
		"--no-sync",
	)
	if err != nil {
		t.Fatalf("initdb %s: %v\n%s", p.DataDir, err, out)
	}
}

// replicationHBA is the pg_hba.conf line that lets TCP replication connections from 127.0.0.1 in.
const replicationHBA = "host replication all 127.0.0.1/32 scram-sha-256"

// ensureReplicationHBA checks that pg_hba.conf allows TCP replication connections with a password,
// and adds the line if initdb did not write it.
func (p *Postgres) ensureReplicationHBA(t testing.TB) {
	t.Helper()
	path := filepath.Join(p.DataDir, "pg_hba.conf")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Join(strings.Fields(line), " ") == replicationHBA {
			return
		}
	}
	p.appendFile(t, path, replicationHBA+"\n")
}

// writeConf writes the harness settings (the port included) to their own file, included from
// postgresql.conf, so that a retry on another port rewrites rather than appends.
func (p *Postgres) writeConf(t testing.TB, settings [][2]string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "port = %d\n", p.Port)
	for _, s := range settings {
		fmt.Fprintf(&b, "%s = '%s'\n", s[0], strings.ReplaceAll(s[1], "'", "''"))
	}
	p.writeFile(t, filepath.Join(p.DataDir, harnessConfName), b.String())
	main := filepath.Join(p.DataDir, "postgresql.conf")
	include := fmt.Sprintf("include '%s'\n", harnessConfName)
	if b, err := os.ReadFile(main); err == nil && strings.Contains(string(b), include) {
		return
	}
	p.appendFile(t, main, "\n"+include)
}

// start runs pg_ctl start, which waits until the server accepts connections or fails.
func (p *Postgres) start() error {
	out, err := p.pgCtl("start", "-l", p.LogFile)
	if err != nil {
		return fmt.Errorf("pg_ctl start: %w\n%s\nserver log:\n%s", err, out, p.logTail())
	}
	return nil
}

// waitAccepting waits until a password-authenticated TCP connection succeeds.
func (p *Postgres) waitAccepting(t testing.TB) {
	t.Helper()
	WaitFor(t, time.Minute, fmt.Sprintf("PostgreSQL on port %d to accept connections", p.Port), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err != nil {
			return false, err
		}
		return true, conn.Close(ctx)
	})
}

func (p *Postgres) cleanup(t testing.TB) {
	if t.Failed() {
		t.Logf("last lines of the PostgreSQL log %s (port %d):\n%s", p.LogFile, p.Port, p.logTail())
	}
	if p.running {
		if out, err := p.pgCtl("stop", "-m", "immediate"); err != nil {
			t.Logf("stop PostgreSQL on port %d: %v\n%s", p.Port, err, out)
		}
		p.running = false
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		t.Logf("remove cluster directory: %v", err)
	}
}

// logTail returns the last lines of the server log, or why it cannot.
func (p *Postgres) logTail() string {
	b, err := os.ReadFile(p.LogFile)
	if err != nil {
		return fmt.Sprintf("(cannot read server log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return strings.Join(lines, "\n")
}

// pgCtl runs pg_ctl with -w -t on the data directory.
func (p *Postgres) pgCtl(action string, args ...string) ([]byte, error) {
	all := append([]string{action, "-w", "-t", pgCtlTimeoutSec, "-D", p.DataDir}, args...)
	return p.run("pg_ctl", all...)
}

// run runs a PostgreSQL binary as the server's OS user, in the cluster directory.
func (p *Postgres) run(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(p.BinDir, name), args...)
	cmd.Dir = p.Dir
	cmd.Env = childEnv(p.Dir)
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	// pg_ctl start leaves the server running; it redirects the server's output to the log file,
	// but do not wait forever should anything keep our pipes open.
	cmd.WaitDelay = 10 * time.Second
	return cmd.CombinedOutput()
}

// childEnv is the environment of the PostgreSQL programs the harness runs: the test's, without PG*
// variables that would point them elsewhere, with HOME set to the cluster directory.
func childEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home)
}

// writeFile writes a file owned by the server's OS user, readable by it only.
func (p *Postgres) writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	p.chown(t, path)
}

func (p *Postgres) appendFile(t testing.TB, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("append to %s: %v", path, err)
	}
}

func (p *Postgres) chown(t testing.TB, path string) {
	t.Helper()
	if p.cred == nil {
		return
	}
	if err := os.Chown(path, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
		t.Fatalf("chown %s: %v", path, err)
	}
}

func randomPassword(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("generate password: %v", err)
	}
	return hex.EncodeToString(b)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	return freePorts(t, 1)[0]
}

// freePorts returns n different TCP ports on 127.0.0.1 that were free a
// moment ago. Each is held until all are found: a port closed at once may
// be handed out again by the next call.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}
