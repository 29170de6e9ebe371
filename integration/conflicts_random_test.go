package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgactive-go/pgactive/node"
)

// conflictSeeds is how many seeded runs TestConflictsRandomThreeNodes makes:
// 2 in the test task, more with PGACTIVE_CONFLICT_SEEDS (the long task).
func conflictSeeds() int {
	if n, err := strconv.Atoi(os.Getenv("PGACTIVE_CONFLICT_SEEDS")); err == nil && n > 0 {
		return n
	}
	return 2
}

// TestConflictsRandomThreeNodes writes inserts, updates and deletes of a few
// shared keys on three nodes at once (many conflicts of every kind), and
// checks that all nodes hold the same rows once writes stop. The nodes are
// databases of three PostgreSQL clusters, then three databases of one
// cluster, which share a system identifier.
func TestConflictsRandomThreeNodes(t *testing.T) {
	for _, layout := range []struct {
		name     string
		clusters int // node i is a database of cluster i % clusters
	}{{"three clusters", 3}, {"one cluster", 1}} {
		clusters := layout.clusters
		t.Run(layout.name, func(t *testing.T) {
			pgs := make([]*Postgres, clusters)
			for i := range pgs {
				pgs[i] = StartPostgres(t)
			}
			var dsns []string
			var conns []*pgx.Conn
			for i := range 3 {
				p, db := pgs[i%clusters], fmt.Sprintf("app%d", i+1)
				p.CreateDatabase(t, db)
				p.Exec(t, db, `CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL, who text NOT NULL)`)
				dsns, conns = append(dsns, p.DSN(db)), append(conns, p.Connect(t, db))
				createSchema(t, conns[i])
			}
			randomThreeNodes(t, dsns, conns)
		})
	}
}

// randomThreeNodes runs the seeded workloads on the databases dsns, connected
// as conns.
func randomThreeNodes(t *testing.T, dsns []string, conns []*pgx.Conn) {
	ns := StartNATS(t)
	var agents []*Agent
	for i, dsn := range dsns {
		agents = append(agents, StartAgent(t, ns.URL(), node.Config{Group: "app", Node: fmt.Sprintf("n%d", i+1), DSN: dsn}))
	}
	for i, a := range agents {
		var others []string
		for j := range agents {
			if j != i {
				others = append(others, fmt.Sprintf("n%d", j+1))
			}
		}
		WaitAppliers(t, a, others...)
		WaitFor(t, 30*time.Second, "tombstone trigger on kv", func() (bool, error) {
			return count(t, conns[i], `SELECT count(*) FROM pg_trigger WHERE tgname = 'pgactive_tombstone'`) == 1, nil
		})
	}
	for seed := 1; seed <= conflictSeeds(); seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, len(dsns))
			for i := range dsns {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					errs <- randomWrites(dsns[i], uint64(seed), uint64(i), 300)
				}(i)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if !eventuallySame(conns, "kv", time.Minute) {
				for i, c := range conns {
					t.Logf("node %d (sysid %d, database %d) rows: %v", i+1, agents[i].Identity().SysID, agents[i].Identity().DBOID, TableRows(t, c, "kv"))
					rows, _ := c.Query(context.Background(), `SELECT conflict_type::text, conflict_resolution::text, coalesce(local_tuple::text,''), coalesce(remote_tuple::text,''),
						remote_commit_time::text, coalesce(local_commit_time::text,''), remote_node_sysid, coalesce(local_tuple_origin_sysid,'') FROM pgactive.pgactive_conflict_history ORDER BY conflict_id DESC LIMIT 40`)
					for rows.Next() {
						var a, b, c1, d, e, f, g, h string
						_ = rows.Scan(&a, &b, &c1, &d, &e, &f, &g, &h)
						t.Logf("  %s %s local=%s remote=%s rtime=%s ltime=%s rnode=%s lorigin=%s", a, b, c1, d, e, f, g, h)
					}
					rows.Close()
				}
			}
			WaitSameRows(t, 2*time.Minute, "kv", conns...)
			t.Logf("seed %d: %d rows on every node; conflicts recorded: %d, %d, %d", seed,
				count(t, conns[0], `SELECT count(*) FROM kv`),
				count(t, conns[0], `SELECT count(*) FROM pgactive.pgactive_conflict_history`),
				count(t, conns[1], `SELECT count(*) FROM pgactive.pgactive_conflict_history`),
				count(t, conns[2], `SELECT count(*) FROM pgactive.pgactive_conflict_history`))
		})
	}
}

// randomWrites runs n single-statement transactions on 12 shared keys.
func randomWrites(dsn string, seed, nodeIdx uint64, n int) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	r := rand.New(rand.NewPCG(seed, nodeIdx))
	who := "n" + strconv.FormatUint(nodeIdx+1, 10)
	for i := 0; i < n; i++ {
		k, v := r.IntN(12), r.IntN(1000)
		var sql string
		switch r.IntN(10) {
		case 0, 1, 2:
			sql = `INSERT INTO kv VALUES ($1, $2, $3) ON CONFLICT (k) DO UPDATE SET v = excluded.v, who = excluded.who`
		case 3, 4, 5, 6:
			sql = `UPDATE kv SET v = $2, who = $3 WHERE k = $1`
		default:
			sql = `DELETE FROM kv WHERE k = $1 AND $2::int >= 0 AND $3::text IS NOT NULL`
		}
		if _, err := conn.Exec(ctx, sql, k, v, who); err != nil {
			return fmt.Errorf("seed %d node %d op %d: %w", seed, nodeIdx+1, i, err)
		}
		if r.IntN(4) == 0 {
			time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
		}
	}
	return nil
}

// eventuallySame reports whether table converges on every connection within d.
func eventuallySame(conns []*pgx.Conn, table string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok, _ := compareNodes(table, conns); ok {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}
