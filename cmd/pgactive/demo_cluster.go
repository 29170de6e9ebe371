package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// localCluster is a throwaway PostgreSQL cluster for the demo, run as the
// postgres OS user when the demo runs as root.
type localCluster struct {
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
		dir := string(out[:len(out)-1])
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("PostgreSQL 15 is not installed: run `go tool task deps` (or apt-get install postgresql-15)")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startLocalCluster(ctx context.Context, name, binDir, password string) (*localCluster, error) {
	c := &localCluster{name: name, binDir: binDir, password: password}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, PostgreSQL must run as the postgres OS user, which is missing: install postgresql-15: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "pgactive-demo-"+name+"-")
	if err != nil {
		return nil, err
	}
	c.dir = dir
	if c.cred != nil {
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, err
		}
	}
	if c.port, err = freePort(); err != nil {
		return nil, err
	}
	pw := filepath.Join(dir, "pw")
	if err := c.writeFile(pw, password+"\n"); err != nil {
		return nil, err
	}
	if out, err := c.run(ctx, "initdb", "-D", c.data(), "-U", "postgres", "--pwfile", pw, "-A", "scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	os.Remove(pw)
	conf := fmt.Sprintf("port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nwal_level = logical\ntrack_commit_timestamp = on\nmax_replication_slots = 16\nmax_wal_senders = 16\nmax_worker_processes = 16\n", c.port, dir)
	f, err := os.OpenFile(filepath.Join(c.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		return nil, err
	}
	if out, err := c.run(ctx, "pg_ctl", "-w", "-D", c.data(), "-l", filepath.Join(dir, "postgres.log"), "start"); err != nil {
		return nil, fmt.Errorf("start PostgreSQL: %w\n%s", err, out)
	}
	return c, nil
}

func (c *localCluster) data() string { return filepath.Join(c.dir, "data") }

func (c *localCluster) writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	if c.cred != nil {
		return os.Chown(path, int(c.cred.Uid), int(c.cred.Gid))
	}
	return nil
}

func (c *localCluster) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, prog), args...)
	cmd.Dir = c.dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	cmd.WaitDelay = 10 * time.Second
	return cmd.CombinedOutput()
}

// dsn is the superuser's connection string for db.
func (c *localCluster) dsn(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=%s dbname=%s sslmode=disable", c.port, c.password, db)
}

func (c *localCluster) connect(ctx context.Context, db string, onNotice func(string)) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(c.dsn(db))
	if err != nil {
		return nil, err
	}
	if onNotice != nil {
		cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { onNotice(n.Severity + ":  " + n.Message) }
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// stop stops the server and removes its files.
func (c *localCluster) stop() {
	_, _ = c.run(context.Background(), "pg_ctl", "-w", "-D", c.data(), "-m", "immediate", "stop")
	os.RemoveAll(c.dir)
}
