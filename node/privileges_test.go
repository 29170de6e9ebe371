package node

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pgactive-go/pgactive/capture"
)

// fixes returns the statements of grants.
func fixes(grants []Grant) []string {
	out := make([]string, len(grants))
	for i, g := range grants {
		out[i] = g.Fix
	}
	return out
}

func TestRoleMissing(t *testing.T) {
	all := roleState{name: "pgactive_agent", replication: true, readAll: true, writeAll: true}
	for _, tc := range []struct {
		name   string
		change func(*roleState)
		want   []string
	}{
		{"every grant", func(*roleState) {}, nil},
		{"superuser without grants", func(r *roleState) { *r = roleState{name: "postgres", super: true, noExecute: originFunctions()} }, nil},
		{"no REPLICATION", func(r *roleState) { r.replication = false }, []string{`ALTER ROLE "pgactive_agent" REPLICATION`}},
		{"no pg_read_all_data", func(r *roleState) { r.readAll = false }, []string{`GRANT pg_read_all_data TO "pgactive_agent"`}},
		{"no pg_write_all_data", func(r *roleState) { r.writeAll = false }, []string{`GRANT pg_write_all_data TO "pgactive_agent"`}},
		{"no EXECUTE", func(r *roleState) {
			r.noExecute = []string{"pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)"}
		}, []string{`GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone) TO "pgactive_agent"`}},
		{"a quoted role name", func(r *roleState) { r.name, r.replication, r.writeAll = `Agent "1"`, false, false },
			[]string{`ALTER ROLE "Agent ""1""" REPLICATION`, `GRANT pg_write_all_data TO "Agent ""1"""`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := all
			tc.change(&r)
			if got := fixes(r.missing()); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReplicationMissing(t *testing.T) {
	role := roleState{name: "agent", replication: true, readAll: true, writeAll: true}
	for _, tc := range []struct {
		name string
		st   replicationState
		want []string
	}{
		{"all there", replicationState{role: role, publication: true}, nil},
		{"superuser", replicationState{role: roleState{name: "postgres", super: true}}, nil},
		{"no publication", replicationState{role: role},
			[]string{`CREATE PUBLICATION "pgactive_publication" FOR ALL TABLES`}},
		{"row-level security", replicationState{role: role, publication: true, rls: []string{`"public"."secret"`}},
			[]string{`ALTER ROLE "agent" BYPASSRLS`}},
		{"row-level security with BYPASSRLS", replicationState{role: roleState{name: "agent", bypassRLS: true}, publication: true, rls: []string{`"public"."secret"`}}, nil},
		{"tables of owners", replicationState{role: role, publication: true, owned: []ownedTable{
			{schema: "public", name: "b", owner: "zed"}, {schema: "public", name: "a", owner: "app_owner"},
			{schema: "inv", name: "p", owner: "app_owner"}, {schema: "public", name: "c", owner: "postgres", ownerSuper: true},
		}}, []string{`GRANT "app_owner" TO "agent"`, `GRANT "zed" TO "agent"`,
			`GRANT TRIGGER, TRUNCATE ON ALL TABLES IN SCHEMA "public" TO "agent"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fixes(tc.st.missing()); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPrivilegeError(t *testing.T) {
	r := roleState{name: "agent", readAll: true, noExecute: []string{"pg_catalog.pg_replication_origin_create(text)"}}
	var err error = &PrivilegeError{Node: `database "app"`, Role: r.name, Missing: r.missing()}
	if !errors.Is(err, ErrNotReady) {
		t.Errorf("errors.Is(%v, ErrNotReady) = false", err)
	}
	var pe *PrivilegeError
	if !errors.As(err, &pe) || len(pe.Missing) != 3 {
		t.Fatalf("errors.As: got %+v, want a *PrivilegeError with 3 missing grants", pe)
	}
	for _, want := range []string{`database "app": role "agent" lacks what the agent needs`,
		`the REPLICATION attribute, to create the node's replication slot and stream from it: ALTER ROLE "agent" REPLICATION; `,
		`GRANT pg_write_all_data TO "agent"; `,
		`GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text) TO "agent". Run these statements as a superuser`,
		"A least-privilege role for the agent"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

// TestAgentRoleSQL keeps deploy/sql/agent-role.sql in step with the checks:
// it grants EXECUTE on exactly the origin functions the agent calls, and
// gives every other privilege Check and CheckReplication look for.
func TestAgentRoleSQL(t *testing.T) {
	b, err := os.ReadFile("../deploy/sql/agent-role.sql")
	if err != nil {
		t.Fatal(err)
	}
	var code strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			code.WriteString(line + "\n")
		}
	}
	sql := code.String()
	grant := regexp.MustCompile(`(?s)GRANT EXECUTE ON FUNCTION(.*?)TO :"agent";`).FindStringSubmatch(sql)
	if grant == nil {
		t.Fatal("no GRANT EXECUTE ON FUNCTION ... TO :\"agent\" statement")
	}
	var granted []string
	for _, f := range strings.Split(grant[1], "),") {
		f = strings.TrimSpace(f)
		if !strings.HasSuffix(f, ")") {
			f += ")"
		}
		granted = append(granted, f)
	}
	want := originFunctions()
	slices.Sort(granted)
	slices.Sort(want)
	if !slices.Equal(granted, want) {
		t.Errorf("EXECUTE granted on %q, want %q", granted, want)
	}
	for _, s := range []string{
		`ALTER ROLE :"agent" LOGIN REPLICATION BYPASSRLS;`,
		`GRANT pg_read_all_data, pg_write_all_data TO :"agent";`,
		`GRANT :"owner" TO :"agent";`,
		`CREATE EXTENSION IF NOT EXISTS pgactive;`,
		`'CREATE PUBLICATION ` + capture.PublicationName + ` FOR ALL TABLES'`,
		`WHERE pubname = '` + capture.PublicationName + `'`,
	} {
		if !strings.Contains(sql, s) {
			t.Errorf("agent-role.sql does not run %s", s)
		}
	}
}
