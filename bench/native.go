package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// subscription is a native logical replication link: subscription name on
// the subscriber's db, to a publication of the publisher's db. Its slot on
// the publisher has the subscription's name.
type subscription struct {
	name     string
	pub, sub *cluster
	db       string
}

// publish creates publication name of tables in c's db.
func publish(ctx context.Context, c *cluster, db, name string, tables []string) error {
	quoted := make([]string, len(tables))
	for i, t := range tables {
		quoted[i] = pgx.Identifier{t}.Sanitize()
	}
	return c.exec(ctx, db, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", pgx.Identifier{name}.Sanitize(), strings.Join(quoted, ", ")))
}

// subscribe subscribes sub's db to publication pubName of pub's pubDB. The
// statement holds the publisher's password, so errors do not quote it.
func subscribe(ctx context.Context, name string, pub *cluster, pubDB string, sub *cluster, db, pubName string, copyData bool) (*subscription, error) {
	conninfo := strings.ReplaceAll(pub.dsn(pubDB), "'", "''")
	conn, err := sub.connect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, fmt.Sprintf("CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s WITH (copy_data = %t)",
		pgx.Identifier{name}.Sanitize(), conninfo, pgx.Identifier{pubName}.Sanitize(), copyData))
	if err != nil {
		return nil, fmt.Errorf("create subscription %s on cluster %s: %w", name, sub.name, err)
	}
	return &subscription{name: name, pub: pub, sub: sub, db: db}, nil
}

// waitStreaming waits until the publisher streams to the subscription.
func (s *subscription) waitStreaming(ctx context.Context) error {
	conn, err := s.pub.connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return poll(ctx, time.Minute, 50*time.Millisecond, "subscription "+s.name+" to stream", func(ctx context.Context) (bool, error) {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'`, s.name).Scan(&n)
		return n > 0, err
	})
}

// disable stops the subscription and waits until its slot is idle, so
// that what the origin writes next piles up as a backlog.
func (s *subscription) disable(ctx context.Context) error {
	if err := s.sub.exec(ctx, s.db, "ALTER SUBSCRIPTION "+pgx.Identifier{s.name}.Sanitize()+" DISABLE"); err != nil {
		return err
	}
	conn, err := s.pub.connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return poll(ctx, time.Minute, 20*time.Millisecond, "slot "+s.name+" to be released", func(ctx context.Context) (bool, error) {
		var active bool
		err := conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, s.name).Scan(&active)
		return err == nil && !active, err
	})
}

func (s *subscription) enable(ctx context.Context) error {
	return s.sub.exec(ctx, s.db, "ALTER SUBSCRIPTION "+pgx.Identifier{s.name}.Sanitize()+" ENABLE")
}

// workerPIDs returns the publisher's walsender and the subscriber's apply
// worker serving the subscription.
func (s *subscription) workerPIDs(ctx context.Context) (walsender, apply int, err error) {
	pc, err := s.pub.connect(ctx, "postgres")
	if err != nil {
		return 0, 0, err
	}
	defer pc.Close(context.WithoutCancel(ctx))
	if err := pc.QueryRow(ctx, `SELECT pid FROM pg_stat_replication WHERE application_name = $1`, s.name).Scan(&walsender); err != nil {
		return 0, 0, fmt.Errorf("find the walsender of %s: %w", s.name, err)
	}
	sc, err := s.sub.connect(ctx, s.db)
	if err != nil {
		return 0, 0, err
	}
	defer sc.Close(context.WithoutCancel(ctx))
	if err := sc.QueryRow(ctx, `SELECT pid FROM pg_stat_subscription WHERE subname = $1 AND relid IS NULL`, s.name).Scan(&apply); err != nil {
		return 0, 0, fmt.Errorf("find the apply worker of %s: %w", s.name, err)
	}
	return walsender, apply, nil
}
