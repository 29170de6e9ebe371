package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

// runAgentOnce runs an agent for cfg and returns the error it stops with.
func runAgentOnce(t *testing.T, natsURL string, cfg node.Config) error {
	t.Helper()
	nc, js := ConnectNATS(t, natsURL)
	a, err := node.NewAgent(cfg, nc, js, TestLogger())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return a.Run(ctx)
}

// TestStartupChecks: a database that cannot take part is refused with an
// error naming the fix, and a password never appears in it.
func TestStartupChecks(t *testing.T) {
	ns := StartNATS(t)
	replica := StartPostgres(t, WithSetting("wal_level", "replica"))
	noTS := StartPostgres(t, WithSetting("track_commit_timestamp", "off"))
	slotsTaken := StartPostgres(t, WithSetting("max_replication_slots", "1"))
	slotsTaken.Exec(t, "postgres", "SELECT pg_create_physical_replication_slot('standby1')")
	noSenders := StartPostgres(t, WithSetting("max_wal_senders", "0"))
	good := StartPostgres(t)
	good.CreateDatabase(t, "app")
	wrongPassword := strings.Replace(good.DSN("app"), "password="+good.Password, "password=not-the-password", 1)
	plainPassword := randomPassword(t)
	good.Exec(t, "postgres", "CREATE ROLE plain LOGIN PASSWORD '"+plainPassword+"'")
	unreachable := "host=127.0.0.1 port=1 user=postgres dbname=app connect_timeout=5 password=" + good.Password

	tests := []struct {
		name     string
		dsn      string
		want     string
		sentinel error
	}{
		{"wal_level", replica.DSN("postgres"), "set wal_level = logical in postgresql.conf and restart PostgreSQL", node.ErrNotReady},
		{"track_commit_timestamp", noTS.DSN("postgres"), "set track_commit_timestamp = on", node.ErrNotReady},
		{"replication slots in use", slotsTaken.DSN("postgres"), "max_replication_slots = 1 with 1 in use by others: raise max_replication_slots", node.ErrNotReady},
		{"no WAL senders", noSenders.DSN("postgres"), "max_wal_senders = 0 with 0 in use: raise max_wal_senders", node.ErrNotReady},
		{"wrong password", wrongPassword, "check the password in the user mapping or DSN", nil},
		{"missing database", good.DSN("nope"), `database "nope" does not exist`, nil},
		{"unreachable", unreachable, "is PostgreSQL running and are host and port right?", nil},
		{"bad DSN", "host=127.0.0.1 password='x", "connection string is not valid", nil},
		{"role without grants", good.RoleDSN("app", "plain", plainPassword),
			`role "plain" lacks what the agent needs: the REPLICATION attribute`, node.ErrNotReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runAgentOnce(t, ns.URL(), node.Config{Group: "app", Node: "n1", DSN: tt.dsn})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Fatalf("got error %v, want errors.Is %v", err, tt.sentinel)
			}
			for _, secret := range []string{good.Password, replica.Password, noTS.Password, slotsTaken.Password, noSenders.Password, "not-the-password", plainPassword} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error reveals a password: %v", err)
				}
			}
		})
	}
}

// TestAgentRefusesAnotherIdentity: an agent is refused when its database is
// already a member under another node name, or when its node name belongs
// to another database of the same cluster; the refused agent creates no
// stream.
func TestAgentRefusesAnotherIdentity(t *testing.T) {
	ns := StartNATS(t)
	p := StartPostgres(t)
	for _, db := range []string{"app", "app2"} {
		p.CreateDatabase(t, db)
		createSchema(t, p.Connect(t, db))
	}
	StartAgent(t, ns.URL(), node.Config{Group: "app", Node: "n1", DSN: p.DSN("app")})
	_, js := ConnectNATS(t, ns.URL())
	for _, tt := range []struct {
		name, node, db, want string
	}{
		{"same database, another name", "n9", "app", `database "app" is already member "n1" of group "app"`},
		{"same name, another database of the cluster", "n1", "app2", `node name "n1" is already used by another database`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := runAgentOnce(t, ns.URL(), node.Config{Group: "app", Node: tt.node, DSN: p.DSN(tt.db)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
			if tt.node != "n1" {
				if _, err := js.Stream(context.Background(), stream.StreamName("app", tt.node)); err == nil {
					t.Fatalf("the refused agent created stream %s", stream.StreamName("app", tt.node))
				}
			}
		})
	}
}
