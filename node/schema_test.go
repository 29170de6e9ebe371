package node

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// restoreListFixture is pg_restore --list of a PostgreSQL 15 schema dump
// holding pgactive's objects next to the user's.
const restoreListFixture = `;
; Archive created at 2026-11-25 20:00:18 UTC
;     dbname: postgres
;
; Selected TOC Entries:
;
7; 2615 16384 SCHEMA - pgactive postgres
3390; 0 0 COMMENT - SCHEMA pgactive postgres
3391; 0 0 ACL - SCHEMA pgactive postgres
8; 2615 16440 SCHEMA - we ird postgres
2; 3079 16407 EXTENSION - pg_stat_statements 
3392; 0 0 COMMENT - EXTENSION pg_stat_statements 
3; 3079 16408 EXTENSION - pgactive 
3397; 0 0 COMMENT - EXTENSION pgactive 
224; 1255 16390 FUNCTION pgactive f() postgres
225; 1255 16438 FUNCTION public evt() postgres
2063; 2328 16391 FOREIGN DATA WRAPPER - pgactive_fdw postgres
3393; 0 0 COMMENT - FOREIGN DATA WRAPPER pgactive_fdw postgres
3394; 0 0 ACL - FOREIGN DATA WRAPPER pgactive_fdw postgres
2064; 1417 16392 SERVER - node1 postgres
3395; 0 0 COMMENT - SERVER node1 postgres
3396; 0 0 ACL - FOREIGN SERVER node1 postgres
3393; 0 0 USER MAPPING - USER MAPPING postgres SERVER node1 postgres
2065; 1417 16393 SERVER - other srv postgres
3394; 0 0 USER MAPPING - USER MAPPING public SERVER other srv postgres
2066; 1417 16394 SERVER - elsewhere postgres
3398; 0 0 USER MAPPING - USER MAPPING public SERVER elsewhere postgres
217; 1259 16385 TABLE pgactive pgactive_nodes postgres
3399; 0 0 ACL pgactive TABLE pgactive_nodes postgres
222; 1259 16446 MATERIALIZED VIEW public mv postgres
223; 1259 16450 SEQUENCE public s1 postgres
218; 1259 16398 TABLE public t postgres
221; 1259 16441 TABLE we ird x y postgres
3230; 2606 16389 CONSTRAINT pgactive pgactive_nodes pgactive_nodes_pkey postgres
3232; 2606 16404 CONSTRAINT public t t_pkey postgres
3381; 6104 16405 PUBLICATION - mine postgres
3380; 6104 16396 PUBLICATION - pgactive_publication postgres
3400; 0 0 COMMENT - PUBLICATION pgactive_publication postgres
3382; 6106 16406 PUBLICATION TABLE public mine t postgres
3228; 3466 16439 EVENT TRIGGER - pgactive_ddl postgres
3229; 3466 16440 EVENT TRIGGER - audit_ddl postgres
`

func TestFilterList(t *testing.T) {
	kept, dropped := filterList(restoreListFixture, []string{"node1", "other srv"})
	var keptIDs, droppedIDs []string
	for _, line := range strings.Split(kept, "\n") {
		if id, _, ok := strings.Cut(line, ";"); ok && id != "" {
			keptIDs = append(keptIDs, id)
		}
	}
	for _, line := range dropped {
		id, _, _ := strings.Cut(line, ";")
		droppedIDs = append(droppedIDs, id)
	}
	wantKept := []string{"8", "2", "3392", "225", "2066", "3398", "222", "223", "218", "221", "3232", "3381", "3382", "3229"}
	wantDropped := []string{"7", "3390", "3391", "3", "3397", "224", "2063", "3393", "3394", "2064", "3395", "3396",
		"3393", "2065", "3394", "217", "3399", "3230", "3380", "3400", "3228"}
	if !slices.Equal(keptIDs, wantKept) {
		t.Errorf("kept: got %v, want %v", keptIDs, wantKept)
	}
	if !slices.Equal(droppedIDs, wantDropped) {
		t.Errorf("dropped: got %v, want %v", droppedIDs, wantDropped)
	}
	if !strings.HasPrefix(kept, ";\n; Archive created") {
		t.Errorf("comment lines not kept: %q", kept[:40])
	}
}

// TestFilterListOriginGrants: EXECUTE granted to an agent role on the
// replication origin functions is each node's own set-up, not restored;
// other grants in pg_catalog are.
func TestFilterListOriginGrants(t *testing.T) {
	const list = `3501; 0 0 ACL pg_catalog FUNCTION pg_replication_origin_advance(text, pg_lsn) postgres
3506; 0 0 ACL pg_catalog FUNCTION pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone) postgres
3507; 0 0 ACL pg_catalog FUNCTION pg_read_file(text) postgres
3508; 0 0 ACL public FUNCTION pg_replication_origin_mine() app
`
	kept, dropped := filterList(list, nil)
	if len(dropped) != 2 || !strings.HasPrefix(dropped[0], "3501;") || !strings.HasPrefix(dropped[1], "3506;") {
		t.Errorf("dropped: got %q, want entries 3501 and 3506", dropped)
	}
	if !strings.Contains(kept, "3507;") || !strings.Contains(kept, "3508;") {
		t.Errorf("kept: got %q, want entries 3507 and 3508", kept)
	}
}

func TestParseTOC(t *testing.T) {
	for _, tc := range []struct {
		line string
		want *tocEntry
	}{
		{"218; 1259 16398 TABLE public t postgres", &tocEntry{"TABLE", "public", "t", "postgres"}},
		{"3392; 0 0 COMMENT - EXTENSION pg_stat_statements ", &tocEntry{"COMMENT", "-", "EXTENSION pg_stat_statements", ""}},
		{"3394; 0 0 USER MAPPING - USER MAPPING public SERVER other srv postgres",
			&tocEntry{"USER MAPPING", "-", "USER MAPPING public SERVER other srv", "postgres"}},
		{"2063; 2328 16391 FOREIGN DATA WRAPPER - pgactive_fdw postgres", &tocEntry{"FOREIGN DATA WRAPPER", "-", "pgactive_fdw", "postgres"}},
		{"3382; 6106 16406 PUBLICATION TABLE public mine t postgres", &tocEntry{"PUBLICATION TABLE", "public", "mine t", "postgres"}},
		{";     dbname: postgres", nil},
		{"", nil},
	} {
		got := parseTOC(tc.line)
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("parseTOC(%q): got %+v, want %+v", tc.line, got, tc.want)
		}
	}
}

func TestRestoreFailure(t *testing.T) {
	for _, tc := range []struct {
		stderr, statement, reason, fix string
	}{
		{"pg_restore: error: could not execute query: ERROR:  role \"jo\" does not exist\nCommand was: ALTER TABLE public.t OWNER TO jo;\n",
			"ALTER TABLE public.t OWNER TO jo", `role "jo" does not exist`, "roles-only"},
		{"pg_restore: error: could not execute query: ERROR:  relation \"t\" already exists\nCommand was: CREATE TABLE public.t (\n    id integer\n);\n",
			"CREATE TABLE public.t", `relation "t" already exists`, "new database"},
		{"pg_restore: error: connection to server failed", "a statement", "pg_restore: error: connection to server failed", "then join again"},
		{"pg_restore: error: could not execute query: ERROR:  must be member of role \"app_owner\"\nCommand was: ALTER TABLE public.t OWNER TO app_owner;\n",
			"ALTER TABLE public.t OWNER TO app_owner", `must be member of role "app_owner"`, "GRANT <that role> TO <the agent's role>"},
		{"pg_restore: error: could not execute query: ERROR:  permission denied for database app\nCommand was: CREATE SCHEMA inv;\n",
			"CREATE SCHEMA inv", "permission denied for database app", "GRANT CREATE ON DATABASE"},
		{"pg_restore: error: could not execute query: ERROR:  permission denied to create extension \"hstore\"\nCommand was: CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;\n",
			"CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public", `permission denied to create extension "hstore"`, "as a superuser, create that extension"},
		{"pg_restore: error: could not execute query: ERROR:  must be owner of extension hstore\nCommand was: COMMENT ON EXTENSION hstore IS 'x';\n",
			"COMMENT ON EXTENSION hstore IS 'x'", "must be owner of extension hstore", "lacks a privilege the restore needs"},
	} {
		statement, reason := restoreFailure(tc.stderr)
		if statement != tc.statement || reason != tc.reason || !strings.Contains(restoreFix(reason), tc.fix) {
			t.Errorf("restoreFailure(%q): got %q, %q, fix %q; want %q, %q, a fix with %q",
				tc.stderr, statement, reason, restoreFix(reason), tc.statement, tc.reason, tc.fix)
		}
	}
}

func TestLibpqConninfo(t *testing.T) {
	for _, tc := range []struct {
		dsn, want, password string
	}{
		{"host=db.example port=5433 user=app password=s3cret dbname=shop sslmode=disable",
			"application_name='pgactive:join' dbname='shop' host='db.example' port='5433' sslmode='disable' user='app'", "s3cret"},
		{"postgres://app:p%40ss@db.example/shop?sslmode=require",
			"application_name='pgactive:join' dbname='shop' host='db.example' port='5432' sslmode='require' user='app'", "p@ss"},
		{"host=db.example user=app dbname='it\\'s' password='a b' sslmode=prefer",
			"application_name='pgactive:join' dbname='it\\'s' host='db.example' port='5432' sslmode='prefer' user='app'", "a b"},
		{"host=db.example user=app dbname=x sslmode=verify-full",
			"application_name='pgactive:join' dbname='x' host='db.example' port='5432' sslmode='verify-full' user='app'", ""},
	} {
		got, password, err := libpqConninfo(tc.dsn)
		if err != nil {
			t.Errorf("libpqConninfo(%q): %v", tc.dsn, err)
			continue
		}
		if got != tc.want || password != tc.password {
			t.Errorf("libpqConninfo(%q): got %q, %q; want %q, %q", tc.dsn, got, password, tc.want, tc.password)
		}
	}
	_, _, err := libpqConninfo("host=x password=s3cret port=notaport")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad DSN: got %v, want an error without the password", err)
	}
}

func TestFindPGBinDir(t *testing.T) {
	empty := t.TempDir()
	if _, err := findPGBinDir(empty); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("a directory without the programs: got %v, want an error naming it", err)
	}
	dir := t.TempDir()
	for _, p := range []string{"pg_dump", "pg_restore"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := findPGBinDir(dir); err != nil || got != dir {
		t.Errorf("findPGBinDir(%q): got %q, %v", dir, got, err)
	}
}
