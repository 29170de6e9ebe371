package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgactive-go/pgactive/integration"
)

// TestRunServesHTTP runs `pgactive run` as a user starts it (embedded NATS,
// --create-schema, --http) against a real PostgreSQL, creates a group with
// the quick start's SQL, and reads /healthz, /readyz, /lag and /metrics
// from the address given. Then PostgreSQL restarts: the agent stays up and
// serves requests again.
func TestRunServesHTTP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg := integration.StartPostgres(t)
	pg.CreateDatabase(t, "app")
	httpPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	run := startRun(t, ctx, "--dsn", pg.DSN("app"), "--http", httpAddr, "--create-schema")
	logged := run.log

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	answers200 := func(path string) func() (bool, error) {
		return func() (bool, error) {
			code, body := get(path)
			return code == http.StatusOK, fmt.Errorf("%s: %d %s", path, code, body)
		}
	}
	integration.WaitFor(t, time.Minute, "/healthz answers 200", answers200("/healthz"))

	conn := pg.Connect(t, "app")
	integration.WaitFor(t, time.Minute, "the agent attached", func() (bool, error) {
		var ok bool
		err := conn.QueryRow(ctx, "SELECT pgactive.pgactive_is_agent_attached()").Scan(&ok)
		return ok, err
	})
	for _, sql := range []string{
		"CREATE SERVER pgactive_server_endpoint1 FOREIGN DATA WRAPPER pgactive_fdw OPTIONS (host '127.0.0.1', port '" + fmt.Sprint(pg.Port) + "', dbname 'app')",
		"CREATE USER MAPPING FOR postgres SERVER pgactive_server_endpoint1 OPTIONS (user 'postgres', password '" + pg.Password + "')",
		"SELECT pgactive.pgactive_create_group(node_name := 'endpoint1-app', node_dsn := 'user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1')",
		"SELECT pgactive.pgactive_wait_for_node_ready()",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", strings.SplitN(sql, " OPTIONS", 2)[0], err)
		}
	}

	integration.WaitFor(t, time.Minute, "/readyz answers 200", answers200("/readyz"))
	code, body := get("/lag")
	var rows []map[string]any
	if code != http.StatusOK || json.Unmarshal([]byte(body), &rows) != nil {
		t.Fatalf("/lag: %d %q, want 200 and a JSON array", code, body)
	}
	code, body = get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	if _, ok := families["pgactive_capture_transactions_total"]; !ok {
		names := make([]string, 0, len(families))
		for n := range families {
			names = append(names, n)
		}
		t.Fatalf("/metrics lacks the capture counters; has %v", names)
	}

	// PostgreSQL restarts under the running agent: the process stays up,
	// reattaches and serves requests again.
	pg.Stop(t, "fast")
	pg.Start(t)
	logHas := func(s string) func() (bool, error) {
		return func() (bool, error) { return strings.Contains(logged.String(), s), nil }
	}
	integration.WaitFor(t, time.Minute, "the attached session restored", logHas("attached session restored"))
	conn2 := pg.Connect(t, "app")
	if _, err := conn2.Exec(ctx, "SELECT pgactive.pgactive_detach_nodes(ARRAY['endpoint1-app'])"); err != nil {
		t.Fatalf("detach after the restart: %v", err)
	}
	integration.WaitFor(t, time.Minute, "the request carried out after the restart", logHas("request=detach_nodes"))
	integration.WaitFor(t, time.Minute, "endpoint1-app detached", func() (bool, error) {
		var status string
		err := conn2.QueryRow(ctx, "SELECT node_status::text FROM pgactive.pgactive_nodes WHERE node_name = 'endpoint1-app'").Scan(&status)
		return status == "k", err
	})
	run.checkRunning(t)
	if strings.Contains(logged.String(), pg.Password) {
		t.Fatal("the agent's log shows the PostgreSQL password")
	}
}

// TestRunServesEachDatabase: `pgactive run` serves two databases; one of
// them cannot be served yet (it does not exist). The other is served all
// the same, the log says what is wrong with the first and shows no
// password, and once the database is created it is served too, without a
// restart.
func TestRunServesEachDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg := integration.StartPostgres(t)
	pg.CreateDatabase(t, "app")
	run := startRun(t, ctx, "--dsn", pg.DSN("app"), "--dsn", pg.DSN("later"), "--create-schema")
	logged := run.log
	attached := func(db string) func() (bool, error) {
		return func() (bool, error) {
			conn, err := pgx.Connect(ctx, pg.DSN(db))
			if err != nil {
				return false, err
			}
			defer conn.Close(ctx)
			var ok bool
			err = conn.QueryRow(ctx, "SELECT pgactive.pgactive_is_agent_attached()").Scan(&ok)
			return ok, err
		}
	}
	integration.WaitFor(t, time.Minute, "app served", attached("app"))
	integration.WaitFor(t, time.Minute, "the error about database later logged", func() (bool, error) {
		s := logged.String()
		return strings.Contains(s, "cannot serve the database") && strings.Contains(s, `database \"later\" does not exist`), nil
	})
	pg.CreateDatabase(t, "later")
	integration.WaitFor(t, time.Minute, "later served once created", attached("later"))
	run.checkRunning(t)
	if strings.Contains(logged.String(), pg.Password) {
		t.Fatal("the log shows the PostgreSQL password")
	}
}

// runProc is `pgactive run` running in the test process.
type runProc struct {
	log  *lockedBuffer
	done chan error
}

// startRun starts `pgactive run` with args, an embedded NATS server on a
// free port and a data directory of the test's. It stops when the test ends,
// which fails if it ended with an error.
func startRun(t *testing.T, ctx context.Context, args ...string) *runProc {
	t.Helper()
	natsPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	args = append(args, "--nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort), "--data-dir", t.TempDir())
	runCtx, stop := context.WithCancel(ctx)
	r := &runProc{log: &lockedBuffer{}, done: make(chan error, 1)}
	go func() { r.done <- runAgents(runCtx, args, io.Discard, r.log) }()
	t.Cleanup(func() {
		stop()
		if err := <-r.done; err != nil {
			t.Errorf("pgactive run: %v", err)
		}
	})
	return r
}

// checkRunning fails the test if `pgactive run` has ended.
func (r *runProc) checkRunning(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		t.Fatalf("pgactive run ended: %v", err)
	default:
	}
}
