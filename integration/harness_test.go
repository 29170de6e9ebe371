package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"
)

func TestHarnessPostgres(t *testing.T) {
	pg := StartPostgres(t)
	ctx := context.Background()
	conn := pg.Connect(t, "postgres")

	for _, tc := range []struct{ setting, want string }{
		{"wal_level", "logical"},
		{"track_commit_timestamp", "on"},
		{"fsync", "on"},
		{"max_replication_slots", "32"},
		{"max_wal_senders", "32"},
		{"max_worker_processes", "32"},
		{"listen_addresses", "127.0.0.1"},
		{"unix_socket_directories", pg.Dir},
		{"data_directory", pg.DataDir},
		{"port", fmt.Sprint(pg.Port)},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			var got string
			if err := conn.QueryRow(ctx, "SELECT current_setting($1)", tc.setting).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("%s = %q, want %q", tc.setting, got, tc.want)
			}
		})
	}

	t.Run("password required", func(t *testing.T) {
		dsn := strings.Replace(pg.DSN("postgres"), pg.Password, "wrong", 1)
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			c.Close(ctx)
			t.Fatal("connect with a wrong password: got no error")
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Errorf("connect with a wrong password: got %v, want SQLSTATE 28P01", err)
		}
	})

	t.Run("replication connection over TCP", func(t *testing.T) {
		rc, err := pgconn.Connect(ctx, pg.DSN("postgres")+" replication=database")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close(ctx)
		res, err := rc.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || len(res[0].Rows) != 1 {
			t.Fatalf("IDENTIFY_SYSTEM: got %d results, want one row", len(res))
		}
	})

	t.Run("server does not run as root", func(t *testing.T) {
		fi, err := os.Stat(pg.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 && fileOwner(fi) == 0 {
			t.Errorf("data directory %s is owned by root, want the postgres OS user", pg.DataDir)
		}
	})

	pg.CreateDatabase(t, "app")
	pg.Exec(t, "app", "CREATE TABLE public.t (id int PRIMARY KEY, v text)")
	pg.Exec(t, "app", "INSERT INTO public.t VALUES ($1, $2), ($3, $4)", 1, "a", 2, "b")
	if got, want := pg.Psql(t, "app", "SELECT id, v FROM public.t ORDER BY id;"), "1|a\n2|b\n"; got != want {
		t.Errorf("Psql: got %q, want %q", got, want)
	}
	_, stderr, err := pg.RunPsql("app", "SELECT 1/0;")
	if err == nil || !strings.Contains(stderr, "division by zero") {
		t.Errorf("RunPsql of a failing script: got err %v, stderr %q; want an error and %q", err, stderr, "division by zero")
	}

	pg.Stop(t, "immediate")
	pg.Start(t)
	conn2 := pg.Connect(t, "app")
	if got, want := TableRows(t, conn2, "public.t"), []string{"(1,a)", "(2,b)"}; !equalStrings(got, want) {
		t.Errorf("rows after crash and restart: got %q, want %q", got, want)
	}

	pg.Stop(t, "fast")
	pg.Start(t)
	pg.Exec(t, "app", "INSERT INTO public.t VALUES (3, 'c')")
}

func TestHarnessPostgresWithSetting(t *testing.T) {
	pg := StartPostgres(t, WithSetting("wal_level", "replica"), WithSetting("application_name", "it's"))
	conn := pg.Connect(t, "postgres")
	for _, tc := range []struct{ setting, want string }{
		{"wal_level", "replica"},
		{"application_name", "it's"},
		{"track_commit_timestamp", "on"},
	} {
		var got string
		if err := conn.QueryRow(context.Background(), "SELECT current_setting($1)", tc.setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s = %q, want %q", tc.setting, got, tc.want)
		}
	}
}

func TestHarnessNATS(t *testing.T) {
	n := StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	js, err := jetstream.New(n.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     "HARNESS",
		Subjects: []string{"harness.>"},
		Storage:  jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "harness.txn", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}

	n.Shutdown()
	n.Restart(t)

	js2, err := jetstream.New(n.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := js2.Stream(ctx, "HARNESS")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(3); got != want {
		t.Errorf("messages after restart: got %d, want %d", got, want)
	}

	// The first connection reconnects to the restarted server.
	WaitFor(t, 30*time.Second, "the first client to publish again", func() (bool, error) {
		_, err := js.Publish(ctx, "harness.txn", []byte("after"))
		return err == nil, err
	})

	n.Restart(t) // restart while running
	WaitFor(t, 30*time.Second, "the stream after a second restart", func() (bool, error) {
		_, err := js2.Stream(ctx, "HARNESS")
		return err == nil, err
	})
}

func TestHarnessWaitSameRows(t *testing.T) {
	a, b := StartPostgres(t), StartPostgres(t)
	const ddl = "CREATE TABLE public.items (id int PRIMARY KEY, name text)"
	a.Exec(t, "postgres", ddl)
	b.Exec(t, "postgres", ddl)
	a.Exec(t, "postgres", "INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 50) g")
	connA, connB := a.Connect(t, "postgres"), b.Connect(t, "postgres")

	// Node B catches up while WaitSameRows polls.
	bg := b.Connect(t, "postgres")
	done := make(chan error, 1)
	go func() {
		for i := 50; i >= 1; i-- {
			if _, err := bg.Exec(context.Background(), "INSERT INTO public.items VALUES ($1::int, 'item ' || $1::int)", i); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	WaitSameRows(t, 30*time.Second, "public.items", connA, connB)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	rows := TableRows(t, connA, "public.items")
	if len(rows) != 50 || rows[0] != "(1,\"item 1\")" || rows[1] != "(10,\"item 10\")" {
		t.Errorf("TableRows: got %d rows starting %q, want 50 rows in bytewise order starting (1,\"item 1\"), (10,\"item 10\")",
			len(rows), rows[:min(2, len(rows))])
	}

	b.Exec(t, "postgres", "UPDATE public.items SET name = 'changed' WHERE id = 7")
	ok, err := compareNodes("public.items", []*pgx.Conn{connA, connB})
	if ok || err == nil {
		t.Fatal("compareNodes after an update on one node: got same rows")
	}
	for _, want := range []string{"50 rows", `missing 1 rows:`, `(7,"item 7")`, "extra 1 rows:", "(7,changed)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("compareNodes report %q does not contain %q", err, want)
		}
	}
	if _, err := compareNodes("public.nosuch", []*pgx.Conn{connA, connB}); err == nil {
		t.Error("compareNodes of a missing table: got no error")
	}
}

func TestHarnessWaitFor(t *testing.T) {
	errNotYet := errors.New("2 of 3 ready")
	tests := []struct {
		name      string
		trueAfter int // calls before cond returns true; -1 never
		err       error
		wantFatal string
	}{
		{name: "at once", trueAfter: 0},
		{name: "after polls", trueAfter: 3, err: errNotYet},
		{name: "timeout with state", trueAfter: -1, err: errNotYet, wantFatal: "waiting for the thing: 2 of 3 ready"},
		{name: "timeout without state", trueAfter: -1, wantFatal: "waiting for the thing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fatalRecorder{TB: t}
			calls := 0
			WaitFor(ft, 400*time.Millisecond, "the thing", func() (bool, error) {
				calls++
				if tc.trueAfter >= 0 && calls > tc.trueAfter {
					return true, nil
				}
				return false, tc.err
			})
			if tc.wantFatal == "" && ft.fatal != "" {
				t.Errorf("got fatal %q, want none", ft.fatal)
			}
			if tc.wantFatal != "" && !strings.Contains(ft.fatal, tc.wantFatal) {
				t.Errorf("got fatal %q, want it to contain %q", ft.fatal, tc.wantFatal)
			}
			if tc.trueAfter >= 0 && calls != tc.trueAfter+1 {
				t.Errorf("got %d calls, want %d", calls, tc.trueAfter+1)
			}
		})
	}
}

func TestHarnessDescribeDiff(t *testing.T) {
	tests := []struct {
		name      string
		want, got []string
		report    string
	}{
		{name: "equal", want: []string{"(1)", "(2)"}, got: []string{"(1)", "(2)"}},
		{name: "both empty"},
		{name: "missing", want: []string{"(1)", "(2)"}, got: []string{"(1)"},
			report: "  missing 1 rows:\n    (2)"},
		{name: "extra duplicate", want: []string{"(1)"}, got: []string{"(1)", "(1)"},
			report: "  extra 1 rows:\n    (1)"},
		{name: "both sides", want: []string{"(1)", "(3)"}, got: []string{"(2)", "(3)"},
			report: "  missing 1 rows:\n    (1)\n  extra 1 rows:\n    (2)"},
		{name: "truncated", want: []string{"1", "2", "3", "4", "5", "6", "7"},
			report: "  missing 7 rows:\n    1\n    2\n    3\n    4\n    5\n    ... and 2 more"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := describeDiff(tc.want, tc.got); got != tc.report {
				t.Errorf("got %q, want %q", got, tc.report)
			}
		})
	}
}

func TestHarnessTableIdentifier(t *testing.T) {
	for _, tc := range []struct{ table, want string }{
		{"items", `"items"`},
		{"public.items", `"public"."items"`},
		{"My Schema.My\"Table", `"My Schema"."My""Table"`},
	} {
		if got := tableIdentifier(tc.table).Sanitize(); got != tc.want {
			t.Errorf("tableIdentifier(%q): got %s, want %s", tc.table, got, tc.want)
		}
	}
}

// fatalRecorder records Fatalf instead of stopping the test, to test helpers that fail tests.
type fatalRecorder struct {
	testing.TB
	fatal string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
}

func fileOwner(fi os.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return 0
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
