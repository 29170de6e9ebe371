package extension

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// controlFields parses a control file's name = value lines.
func controlFields(t *testing.T, s string) map[string]string {
	t.Helper()
	fields := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("control file line %q is not name = value", line)
		}
		fields[strings.TrimSpace(name)] = strings.Trim(strings.TrimSpace(value), "'")
	}
	return fields
}

func TestExtensionControl(t *testing.T) {
	fields := controlFields(t, Control())
	want := map[string]string{
		"default_version": Version,
		"relocatable":     "false",
		"schema":          "pg_catalog",
		"superuser":       "true",
		"trusted":         "false",
	}
	for name, value := range want {
		if got := fields[name]; got != value {
			t.Errorf("control %s = %q, want %q", name, got, value)
		}
	}
	if fields["comment"] == "" {
		t.Error("control file has no comment")
	}
	// There is no shared library: a module_pathname would make CREATE EXTENSION look for one.
	if _, ok := fields["module_pathname"]; ok {
		t.Error("control file names a module_pathname, but the extension has no shared library")
	}
	if ScriptFile != "pgactive--"+fields["default_version"]+".sql" {
		t.Errorf("ScriptFile = %q does not match default_version %q", ScriptFile, fields["default_version"])
	}
}

func TestExtensionScriptDefinesTheSQLSurface(t *testing.T) {
	s := Script()
	if !strings.Contains(s, "\n\\echo Use \"CREATE EXTENSION pgactive\" to load this file. \\quit\n") {
		t.Error("script has no psql guard line")
	}
	functions := []string{
		"pgactive_create_group", "pgactive_join_group", "pgactive_wait_for_node_ready",
		"pgactive_detach_nodes", "pgactive_remove", "pgactive_get_local_node_name",
		"pgactive_is_agent_attached", "pgactive_get_replication_lag_info", "pgactive_get_stats",
		"pgactive_apply_pause", "pgactive_apply_resume", "pgactive_is_apply_paused",
		"pgactive_skip_changes", "pgactive_snowflake_id_nextval", "pgactive_replicate_ddl_command",
		"pgactive_get_local_nodeid", "pgactive_fdw_validator",
	}
	for _, f := range functions {
		if !strings.Contains(s, "CREATE OR REPLACE FUNCTION pgactive."+f+"(") {
			t.Errorf("script does not define function pgactive.%s", f)
		}
	}
	tables := []string{
		"pgactive_nodes", "pgactive_requests", "pgactive_join_progress", "pgactive_lag",
		"pgactive_stats", "pgactive_apply_state", "pgactive_conflict_history",
	}
	for _, tb := range tables {
		if !strings.Contains(s, "CREATE TABLE IF NOT EXISTS pgactive."+tb+" (") {
			t.Errorf("script does not define table pgactive.%s", tb)
		}
	}
	if !strings.Contains(s, "CREATE FOREIGN DATA WRAPPER pgactive_fdw") {
		t.Error("script does not create the foreign data wrapper pgactive_fdw")
	}
}

// TestExtensionScriptIsIdempotent checks that every CREATE can run twice, which
// CreateSchema relies on: CREATE TYPE and CREATE FOREIGN DATA WRAPPER have no
// IF NOT EXISTS and must sit in a DO block that checks first.
func TestExtensionScriptIsIdempotent(t *testing.T) {
	create := regexp.MustCompile(`(?m)^\s*CREATE\s+(.*)$`)
	for _, m := range create.FindAllStringSubmatch(Script(), -1) {
		rest := m[1]
		switch {
		case strings.HasPrefix(rest, "OR REPLACE "),
			strings.Contains(rest, "IF NOT EXISTS"):
		case strings.HasPrefix(rest, "TYPE "), strings.HasPrefix(rest, "FOREIGN DATA WRAPPER "):
			// checked inside a DO block, see below
		default:
			t.Errorf("CREATE %s is not idempotent", rest)
		}
	}
	for _, guard := range []string{
		"to_regtype('pgactive.pgactive_conflict_type') IS NULL",
		"to_regtype('pgactive.pgactive_conflict_resolution') IS NULL",
		"fdwname = 'pgactive_fdw') THEN",
	} {
		if !strings.Contains(Script(), guard) {
			t.Errorf("script lacks the existence check %q", guard)
		}
	}
}

func TestExtensionSchemaScriptDropsPsqlCommands(t *testing.T) {
	got := SchemaScript()
	for i, line := range strings.Split(got, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), `\`) {
			t.Errorf("line %d is a psql command: %q", i+1, line)
		}
	}
	if g, w := strings.Count(got, "\n"), strings.Count(Script(), "\n"); g != w {
		t.Errorf("SchemaScript has %d lines, Script %d: line numbers must match", g, w)
	}
	if !strings.Contains(got, "CREATE SCHEMA IF NOT EXISTS pgactive;") {
		t.Error("SchemaScript lost the CREATE SCHEMA")
	}
}

// fakePGConfig writes a pg_config that prints share as its --sharedir.
func fakePGConfig(t *testing.T, share string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pg_config")
	body := "#!/bin/sh\n[ \"$1\" = --sharedir ] && echo '" + share + "'\n"
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExtensionInstall(t *testing.T) {
	share := t.TempDir()
	if err := os.Mkdir(filepath.Join(share, "extension"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := Install(fakePGConfig(t, share))
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	if want := filepath.Join(share, "extension"); dir != want {
		t.Errorf("Install dir = %q, want %q", dir, want)
	}
	for name, want := range map[string]string{ControlFile: Control(), ScriptFile: Script()} {
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read installed file: %v", err)
		}
		if string(b) != want {
			t.Errorf("%s differs from the embedded file", name)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o644 {
			t.Errorf("%s mode = %v, want 0644", name, got)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("extension directory holds %d files, want 2 (no temporary files left)", len(entries))
	}
	// Installing again replaces the files.
	if _, err := Install(fakePGConfig(t, share)); err != nil {
		t.Fatalf("second Install: %v", err)
	}
}

func TestExtensionInstallErrors(t *testing.T) {
	t.Run("no pg_config", func(t *testing.T) {
		_, err := Install(filepath.Join(t.TempDir(), "pg_config"))
		if !errors.Is(err, ErrNoPGConfig) {
			t.Errorf("Install with a missing pg_config: got %v, want ErrNoPGConfig", err)
		}
	})
	t.Run("not writable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root can write anywhere")
		}
		share := t.TempDir()
		ext := filepath.Join(share, "extension")
		if err := os.Mkdir(ext, 0o555); err != nil {
			t.Fatal(err)
		}
		_, err := Install(fakePGConfig(t, share))
		if !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("Install into a read-only directory: got %v, want fs.ErrPermission", err)
		}
		for _, fix := range []string{"root", "pgactive run --create-schema"} {
			if !strings.Contains(err.Error(), fix) {
				t.Errorf("error %q does not name the fix %q", err, fix)
			}
		}
	})
}
