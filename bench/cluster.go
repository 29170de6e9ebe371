package bench

import (
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
	"time"

	"github.com/jackc/pgx/v5"
)

// clusterSettings are the same for every cluster, whichever system it
// serves: durable commits on the origin (fsync and synchronous_commit stay
// on), room for slots and workers, and checkpoints spaced enough that a
// 1 GB load is not dominated by them.
var clusterSettings = [][2]string{
	{"wal_level", "logical"},
	{"track_commit_timestamp", "on"},
	{"max_replication_slots", "16"},
	{"max_wal_senders", "16"},
	{"max_worker_processes", "16"},
	{"max_logical_replication_workers", "8"},
	{"max_wal_size", "4GB"},
	{"listen_addresses", "127.0.0.1"},
	{"logging_collector", "off"},
}

// cluster is a throwaway PostgreSQL cluster, run as the postgres OS user
// when the benchmark runs as root.
type cluster struct {
	name     string
	binDir   string
	dir      string
	port     int
	password string
	cred     *syscall.Credential
}

// pgBinDir finds the PostgreSQL 15 programs.
func pgBinDir() (string, error) {
	for _, dir := range []string{os.Getenv("PG_BINDIR"), "/usr/lib/postgresql/15/bin"} {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("PostgreSQL 15 is not installed: run `go tool task deps` (or apt-get install postgresql-15), or set PG_BINDIR")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomPassword() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// serverCredential is the OS user PostgreSQL runs as: postgres when we are
// root (PostgreSQL refuses to run as root), else the current user (nil).
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as the postgres OS user, which is missing: install postgresql-15: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("read the ids of the postgres OS user: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// startCluster initialises and starts a cluster, registering its removal
// with sc before anything is created, so a failure half-way leaves nothing.
func startCluster(ctx context.Context, sc *scope, name, binDir string) (*cluster, error) {
	c := &cluster{name: name, binDir: binDir, password: randomPassword()}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	c.cred = cred
	dir, err := os.MkdirTemp("", "pgactive-bench-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	c.dir = dir
	sc.add(c.stop)
	if c.cred != nil {
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, fmt.Errorf("hand the cluster directory to the postgres OS user: %w", err)
		}
	}
	if err := c.initdb(ctx); err != nil {
		return nil, err
	}
	var b strings.Builder
	for _, s := range clusterSettings {
		fmt.Fprintf(&b, "%s = '%s'\n", s[0], s[1])
	}
	fmt.Fprintf(&b, "unix_socket_directories = '%s'\n", dir)
	var lastErr error
	for range 3 { // another process may take the port between freePort and the start
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
		conf := b.String() + fmt.Sprintf("port = %d\n", c.port)
		if err := c.writeFile(filepath.Join(c.data(), "bench.conf"), conf); err != nil {
			return nil, err
		}
		if lastErr = c.start(ctx); lastErr == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

func (c *cluster) initdb(ctx context.Context) error {
	pw := filepath.Join(c.dir, "pw")
	if err := c.writeFile(pw, c.password+"\n"); err != nil {
		return err
	}
	defer os.Remove(pw)
	out, err := c.run(ctx, "initdb", "-D", c.data(), "-U", "postgres", "--pwfile", pw, "-A", "scram-sha-256",
		"--auth-local=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	if err != nil {
		return fmt.Errorf("initdb for cluster %s: %w\n%s", c.name, err, out)
	}
	f, err := os.OpenFile(filepath.Join(c.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open postgresql.conf: %w", err)
	}
	_, err = f.WriteString("\ninclude 'bench.conf'\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write postgresql.conf: %w", err)
	}
	return nil
}

func (c *cluster) start(ctx context.Context) error {
	out, err := c.run(ctx, "pg_ctl", "-w", "-t", "120", "-D", c.data(), "-l", c.logFile(), "start")
	if err != nil {
		return fmt.Errorf("start PostgreSQL cluster %s: %w\n%s", c.name, err, out)
	}
	return nil
}

func (c *cluster) data() string    { return filepath.Join(c.dir, "data") }
func (c *cluster) logFile() string { return filepath.Join(c.dir, "postgres.log") }

func (c *cluster) writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if c.cred != nil {
		if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("hand %s to the postgres OS user: %w", path, err)
		}
	}
	return nil
}

// run runs one of PostgreSQL's programs as the server's OS user.
func (c *cluster) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, prog), args...)
	cmd.Dir = c.dir
	cmd.Env = childEnv(c.dir)
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	cmd.WaitDelay = 10 * time.Second
	return cmd.CombinedOutput()
}

// childEnv is our environment without PG* variables that would point
// PostgreSQL's programs elsewhere, with HOME set to home.
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

// dsn is the superuser's connection string for db.
func (c *cluster) dsn(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=%s dbname=%s sslmode=disable", c.port, c.password, db)
}

func (c *cluster) connect(ctx context.Context, db string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, c.dsn(db))
	if err != nil {
		return nil, fmt.Errorf("connect to %s on cluster %s: %w", db, c.name, err)
	}
	return conn, nil
}

// exec runs sql on a new connection to db.
func (c *cluster) exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := c.connect(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("cluster %s, database %s: %s: %w", c.name, db, firstLine(sql), err)
	}
	return nil
}

// createDB creates database db and runs schema in it.
func (c *cluster) createDB(ctx context.Context, db, schema string) error {
	if err := c.exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		return err
	}
	if schema == "" {
		return nil
	}
	return c.exec(ctx, db, schema)
}

// stop stops the server at once and removes its files.
func (c *cluster) stop() {
	if _, err := os.Stat(filepath.Join(c.data(), "postmaster.pid")); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		_, _ = c.run(ctx, "pg_ctl", "-w", "-D", c.data(), "-m", "immediate", "stop")
		cancel()
	}
	os.RemoveAll(c.dir)
}

func firstLine(sql string) string {
	sql = strings.TrimSpace(sql)
	if i := strings.IndexByte(sql, '\n'); i >= 0 {
		return sql[:i] + " ..."
	}
	return sql
}
