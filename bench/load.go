package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// stmtFunc returns the statement and arguments of the i-th transaction of
// a load. Every transaction is one statement in autocommit.
type stmtFunc func(i int) (string, []any)

// openClients opens n connections to dsn.
func openClients(ctx context.Context, dsn string, n int) ([]*pgx.Conn, error) {
	conns := make([]*pgx.Conn, 0, n)
	for range n {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("connect a load client: %w", err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAll(conns []*pgx.Conn) {
	for _, c := range conns {
		c.Close(context.Background())
	}
}

// runCount runs transactions 0..n-1 from clients connections, as fast as the
// origin takes them, and returns how long they took (connecting excluded).
func runCount(ctx context.Context, dsn string, clients, n int, stmt stmtFunc) (time.Duration, error) {
	conns, err := openClients(ctx, dsn, clients)
	if err != nil {
		return 0, err
	}
	defer closeAll(conns)
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	for _, c := range conns {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return nil
				}
				sql, args := stmt(i)
				if _, err := c.Exec(gctx, sql, args...); err != nil {
					return fmt.Errorf("load transaction %d: %w", i, err)
				}
			}
		})
	}
	err = g.Wait()
	return time.Since(start), err
}

// runRate starts transactions at rate per second for d, spread over clients
// connections, and returns how many it ran and how long that took. The
// schedule does not wait for slow transactions (an open loop) unless every
// client is busy.
func runRate(ctx context.Context, dsn string, clients int, rate float64, d time.Duration, stmt stmtFunc) (int, time.Duration, error) {
	conns, err := openClients(ctx, dsn, clients)
	if err != nil {
		return 0, 0, err
	}
	defer closeAll(conns)
	jobs := make(chan int, clients*64)
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range conns {
		g.Go(func() error {
			for i := range jobs {
				sql, args := stmt(i)
				if _, err := c.Exec(gctx, sql, args...); err != nil {
					return fmt.Errorf("load transaction %d: %w", i, err)
				}
			}
			return nil
		})
	}
	start := time.Now()
	sent := 0
schedule:
	for {
		el := time.Since(start)
		if el >= d {
			break
		}
		due := int(el.Seconds()*rate) + 1
		for ; sent < due; sent++ {
			select {
			case jobs <- sent:
			case <-gctx.Done():
				break schedule
			}
		}
		time.Sleep(500 * time.Microsecond)
	}
	close(jobs)
	err = g.Wait()
	return sent, time.Since(start), err
}
