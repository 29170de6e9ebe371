package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgactive-go/pgactive/stream"
)

// quickstartServers is the quick start's step 6 and 10 with the endpoints'
// addresses filled in (and a port option, as our clusters use random ports).
func quickstartServers(e1, e2 *Postgres) string {
	return fmt.Sprintf(`
-- connection info for endpoint1
CREATE SERVER pgactive_server_endpoint1
    FOREIGN DATA WRAPPER pgactive_fdw
    OPTIONS (host '127.0.0.1', port '%d', dbname 'app');
CREATE USER MAPPING FOR postgres
    SERVER pgactive_server_endpoint1
    OPTIONS (user 'postgres', password '%s');

-- connection info for endpoint2
CREATE SERVER pgactive_server_endpoint2
    FOREIGN DATA WRAPPER pgactive_fdw
    OPTIONS (host '127.0.0.1', port '%d', dbname 'app');
CREATE USER MAPPING FOR postgres
    SERVER pgactive_server_endpoint2
    OPTIONS (user 'postgres', password '%s');
`, e1.Port, e1.Password, e2.Port, e2.Password)
}

func wantOutput(t *testing.T, step, got, want string) {
	t.Helper()
	if strings.TrimSpace(got) != want {
		t.Fatalf("%s: psql printed %q, want %q", step, strings.TrimSpace(got), want)
	}
}

// TestQuickStart follows the user guide step by step with its SQL, run
// through psql against two clusters with an agent each.
func TestQuickStart(t *testing.T) {
	ns := StartNATS(t)
	e1, e2 := StartPostgres(t), StartPostgres(t)
	// Step 1.
	for _, p := range []*Postgres{e1, e2} {
		p.Psql(t, "postgres", "CREATE DATABASE app;")
		StartController(t, ns.URL(), p.DSN("app"))
	}
	extInstalled(t)

	// Step 4.
	e1.Psql(t, "app", `CREATE SCHEMA inventory;

CREATE TABLE inventory.products (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  product_name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);

INSERT INTO inventory.products (product_name)
VALUES ('soap'), ('shampoo'), ('conditioner');`)
	// Steps 5, 3 (our counterpart of the shared_preload_libraries check) and 6.
	extSetUp(t, e1, "app")
	WaitFor(t, 30*time.Second, "the agent attached to endpoint1", func() (bool, error) {
		return strings.TrimSpace(e1.Psql(t, "app", "SELECT pgactive.pgactive_is_agent_attached();")) == "t", nil
	})
	e1.Psql(t, "app", quickstartServers(e1, e2))
	// Step 7.
	e1.Psql(t, "app", `SELECT pgactive.pgactive_create_group(
    node_name := 'endpoint1-app',
    node_dsn := 'user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1'

);`)
	wantOutput(t, "step 7 wait", e1.Psql(t, "app", "SELECT pgactive.pgactive_wait_for_node_ready();"), "")

	// Steps 8-10.
	extSetUp(t, e2, "app")
	WaitFor(t, 30*time.Second, "the agent attached to endpoint2", func() (bool, error) {
		return strings.TrimSpace(e2.Psql(t, "app", "SELECT pgactive.pgactive_is_agent_attached();")) == "t", nil
	})
	e2.Psql(t, "app", quickstartServers(e1, e2))
	// Step 11.
	e2.Psql(t, "app", `SELECT pgactive.pgactive_join_group(
    node_name := 'endpoint2-app',
    node_dsn := 'user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint2',
    join_using_dsn := 'user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1'
);`)
	_, notices, err := e2.RunPsql("app", "SELECT pgactive.pgactive_wait_for_node_ready();")
	if err != nil {
		t.Fatalf("step 11 wait: %v: %s", err, notices)
	}
	if !strings.Contains(notices, "successfully restored database 'app' from node endpoint1-app in") {
		t.Fatalf("step 11: want the restore NOTICE, psql printed:\n%s", notices)
	}
	// Step 12.
	wantOutput(t, "step 12", e2.Psql(t, "app", "SELECT count(*) FROM inventory.products;"), "3")
	// Steps 13-14.
	e2.Psql(t, "app", `INSERT INTO inventory.products (product_name)
VALUES ('lotion');`)
	WaitFor(t, 30*time.Second, "step 14: 4 products on endpoint1", func() (bool, error) {
		return strings.TrimSpace(e1.Psql(t, "app", "SELECT count(*) FROM inventory.products;")) == "4", nil
	})
	WaitSameRows(t, 30*time.Second, "inventory.products", e1.Connect(t, "app"), e2.Connect(t, "app"))

	// Clean up.
	e1.Psql(t, "app", "SELECT pgactive.pgactive_detach_nodes(ARRAY['endpoint1-app', 'endpoint2-app']);")
	for _, p := range []*Postgres{e1, e2} {
		WaitFor(t, 30*time.Second, "the node detached", func() (bool, error) {
			s := p.Psql(t, "app", "SELECT node_status FROM pgactive.pgactive_nodes WHERE node_name = pgactive.pgactive_get_local_node_name();")
			return strings.TrimSpace(s) == "k", nil
		})
		p.Psql(t, "app", "SELECT pgactive.pgactive_remove();")
		if extInstalled(t) {
			p.Psql(t, "app", "DROP EXTENSION pgactive;")
		}
		wantOutput(t, "no slot left", p.Psql(t, "app", "SELECT count(*) FROM pg_replication_slots;"), "0")
		wantOutput(t, "no origin left", p.Psql(t, "app", "SELECT count(*) FROM pg_replication_origin;"), "0")
	}
	_, js := ConnectNATS(t, ns.URL())
	for _, n := range []string{"endpoint1-app", "endpoint2-app"} {
		WaitFor(t, 30*time.Second, "stream of "+n+" deleted", func() (bool, error) {
			_, err := js.Stream(context.Background(), stream.StreamName("app", n))
			return err != nil, nil
		})
	}
}
