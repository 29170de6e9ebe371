package bench

import (
	"context"
	"fmt"
)

// LocalCluster is a throwaway PostgreSQL 15 cluster on 127.0.0.1, set up as
// the benchmark's are (logical WAL, commit timestamps, room for slots) and
// run as the postgres OS user when this process is root. `pgactive demo`
// starts its endpoints with it.
type LocalCluster struct {
	Port     int
	Password string // the postgres superuser's
	BinDir   string // the PostgreSQL programs it runs
	c        *cluster
	sc       *scope
}

// StartLocalCluster initialises and starts a cluster named name, with the
// PostgreSQL 15 programs of PG_BINDIR or the usual places. On error nothing
// is left behind.
func StartLocalCluster(ctx context.Context, name string) (*LocalCluster, error) {
	binDir, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	sc := &scope{}
	c, err := startCluster(ctx, sc, name, binDir)
	if err != nil {
		sc.close()
		return nil, fmt.Errorf("start PostgreSQL cluster %s: %w", name, err)
	}
	return &LocalCluster{Port: c.port, Password: c.password, BinDir: binDir, c: c, sc: sc}, nil
}

// DSN is the postgres superuser's connection string for database db.
func (l *LocalCluster) DSN(db string) string { return l.c.dsn(db) }

// Stop stops the server and removes its files.
func (l *LocalCluster) Stop() { l.sc.close() }
