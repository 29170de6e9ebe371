package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgactive-go/pgactive/capture"
)

// defaultPGBinDir is where Debian's postgresql-15 package puts its programs.
const defaultPGBinDir = "/usr/lib/postgresql/15/bin"

// findPGBinDir returns the directory holding pg_dump and pg_restore:
// configured if set, else $PG_BINDIR, else the Debian default, else the
// directory of the pg_dump found on PATH.
func findPGBinDir(configured string) (string, error) {
	for _, dir := range []string{configured, os.Getenv("PG_BINDIR"), defaultPGBinDir} {
		if dir == "" {
			continue
		}
		if isProgram(filepath.Join(dir, "pg_dump")) && isProgram(filepath.Join(dir, "pg_restore")) {
			return dir, nil
		}
		if dir == configured {
			return "", fmt.Errorf("%s holds no pg_dump and pg_restore: point the PostgreSQL bin directory setting at the directory that has them", dir)
		}
	}
	if p, err := exec.LookPath("pg_dump"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("pg_dump and pg_restore not found (looked in $PG_BINDIR, " + defaultPGBinDir +
		" and PATH): install the PostgreSQL client programs or set PG_BINDIR to their directory")
}

func isProgram(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// libpqConninfo turns dsn into a libpq connection string for PostgreSQL's
// own programs, and returns the password apart: it goes to the child's
// environment (PGPASSWORD), never to its command line. Only the first host
// is kept; certificate files reach the child through its environment
// (PGSSLROOTCERT, PGSSLCERT, PGSSLKEY).
func libpqConninfo(dsn string) (conninfo, password string, err error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "", "", fmt.Errorf("the connection string is not valid: %w", redactParseError(err))
	}
	kv := map[string]string{
		"host":             cfg.Host,
		"port":             strconv.Itoa(int(cfg.Port)),
		"user":             cfg.User,
		"dbname":           cfg.Database,
		"sslmode":          sslMode(cfg),
		"application_name": "pgactive:join",
	}
	return formatKeyValues(kv), cfg.Password, nil
}

// sslMode reconstructs the libpq sslmode that produced cfg's TLS settings.
func sslMode(cfg *pgconn.Config) string {
	var plainFallback, tlsFallback bool
	for _, f := range cfg.Fallbacks {
		if f.Host == cfg.Host && f.Port == cfg.Port {
			plainFallback = plainFallback || f.TLSConfig == nil
			tlsFallback = tlsFallback || f.TLSConfig != nil
		}
	}
	switch t := cfg.TLSConfig; {
	case t == nil && tlsFallback:
		return "allow"
	case t == nil:
		return "disable"
	case plainFallback:
		return "prefer"
	case t.InsecureSkipVerify && t.VerifyPeerCertificate != nil:
		return "verify-ca"
	case t.InsecureSkipVerify:
		return "require"
	default:
		return "verify-full"
	}
}

// pgTool runs one of PostgreSQL's client programs against one database.
type pgTool struct {
	binDir   string
	conninfo string
	password string
}

func newPGTool(binDir, dsn string) (*pgTool, error) {
	conninfo, password, err := libpqConninfo(dsn)
	if err != nil {
		return nil, err
	}
	return &pgTool{binDir: binDir, conninfo: conninfo, password: password}, nil
}

// run runs program with args and returns its standard output. On failure
// the error holds the program's standard error (which never shows the
// password: it is not on the command line).
func (p *pgTool) run(ctx context.Context, program string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(p.binDir, program), args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+p.password, "PGCONNECT_TIMEOUT=30")
	var stdout bytes.Buffer
	stderr := &headBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Run(); err != nil {
		return nil, &toolError{program: program, stderr: strings.TrimSpace(stderr.String()), err: err}
	}
	return stdout.Bytes(), nil
}

// toolError is a failed pg_dump or pg_restore run.
type toolError struct {
	program string
	stderr  string
	err     error
}

func (e *toolError) Error() string {
	if e.stderr == "" {
		return e.program + ": " + e.err.Error()
	}
	return e.program + ": " + e.err.Error() + ": " + e.stderr
}

func (e *toolError) Unwrap() error { return e.err }

// headBuffer keeps the first max bytes written to it: the first error of a
// restore that stops at its first error.
type headBuffer struct {
	bytes.Buffer
	max int
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - h.Len(); room > 0 {
		h.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// dumpSchema writes the source's schema as of snapshot to file (custom format).
func dumpSchema(ctx context.Context, src *pgTool, snapshot, file string) error {
	_, err := src.run(ctx, "pg_dump", "--schema-only", "--no-subscriptions", "--snapshot="+snapshot,
		"--format=custom", "--file="+file, "--dbname="+src.conninfo)
	if err != nil {
		return fmt.Errorf("dump the source's schema (pg_dump must be of the source server's major version or newer): %w", err)
	}
	return nil
}

// restoreList writes the table of contents of dump to listFile, without the
// entries of pgactive's own objects, and returns the dropped entries.
func restoreList(ctx context.Context, dst *pgTool, dump, listFile string, servers []string) ([]string, error) {
	out, err := dst.run(ctx, "pg_restore", "--list", dump)
	if err != nil {
		return nil, fmt.Errorf("list the schema dump: %w", err)
	}
	kept, dropped := filterList(string(out), servers)
	if err := os.WriteFile(listFile, []byte(kept), 0o600); err != nil {
		return nil, fmt.Errorf("write restore list: %w", err)
	}
	return dropped, nil
}

// restoreSection restores one section ("pre-data" or "post-data") of dump
// into the joining database, in one transaction, stopping at the first error.
func restoreSection(ctx context.Context, dst *pgTool, dump, listFile, section string) error {
	_, err := dst.run(ctx, "pg_restore", "--section="+section, "--use-list="+listFile,
		"--exit-on-error", "--single-transaction", "--dbname="+dst.conninfo, dump)
	return restoreError(section, err)
}

// restorePostData restores the post-data section of dump (indexes,
// constraints, triggers) into the joining database with up to workers
// connections, each building one index or constraint at a time, stopping
// at the first error. It runs after the copy, when a failure leaves a
// partial copy anyway, so it needs no single transaction.
func restorePostData(ctx context.Context, dst *pgTool, dump, listFile string, workers int) error {
	_, err := dst.run(ctx, "pg_restore", "--section=post-data", "--use-list="+listFile,
		"--exit-on-error", "--jobs="+strconv.Itoa(max(workers, 1)), "--dbname="+dst.conninfo, dump)
	return restoreError("post-data", err)
}

// restoreError explains a failed restore of section, or returns nil.
func restoreError(section string, err error) error {
	if err == nil {
		return nil
	}
	var te *toolError
	if !errors.As(err, &te) {
		return fmt.Errorf("restore %s: %w", section, err)
	}
	statement, reason := restoreFailure(te.stderr)
	return fmt.Errorf("restore %s: %s: %s: %s: %w", section, statement, reason, restoreFix(reason), te.err)
}

// restoreFailure finds the failing statement and PostgreSQL's message in
// pg_restore's standard error:
//
//	pg_restore: error: could not execute query: ERROR:  role "app" does not exist
//	Command was: ALTER TABLE public.items OWNER TO app;
func restoreFailure(stderr string) (statement, reason string) {
	statement, reason = "a statement", stderr
	for _, line := range strings.Split(stderr, "\n") {
		if _, msg, ok := strings.Cut(line, "ERROR:"); ok && reason == stderr {
			reason = strings.TrimSpace(msg)
		}
		if cmd, ok := strings.CutPrefix(line, "Command was: "); ok {
			cmd = strings.TrimRight(strings.TrimSpace(cmd), "(;, ")
			if len(cmd) > 120 {
				cmd = cmd[:120] + "..."
			}
			statement = cmd
		}
	}
	return statement, reason
}

// restoreFix says what to do about a failed restore.
func restoreFix(reason string) string {
	switch {
	case strings.Contains(reason, "already exists"):
		return "the joining database must be empty: join into a new database"
	case strings.Contains(reason, "role") && strings.Contains(reason, "does not exist"):
		return "create the source's roles on the joining server (pg_dumpall --roles-only on the source), then join again"
	case strings.Contains(reason, "tablespace"):
		return "create the source's tablespaces on the joining server, then join again"
	case strings.Contains(reason, "must be member of role"):
		return "make the agent's role a member of that role, which owns objects on the source (as a superuser: GRANT <that role> TO <the agent's role>; " +
			"see " + grantsGuide + "), then join again"
	case strings.Contains(reason, "permission denied for database"):
		return "the agent's role must be able to create schemas in the joining database: create it with the source database's owner " +
			"(CREATE DATABASE ... OWNER ...) and make the agent's role a member of that owner, or GRANT CREATE ON DATABASE ... TO the agent's role, then join again"
	case strings.Contains(reason, "permission denied for schema"):
		return "the agent's role must be able to create objects in that schema: make it a member of the schema's owner, or GRANT CREATE ON SCHEMA ... TO the agent's role, then join again"
	case strings.Contains(reason, "permission denied to create extension"):
		return "as a superuser, create that extension in the joining database first (the restore runs CREATE EXTENSION IF NOT EXISTS), then join again"
	case strings.Contains(reason, "permission denied") || strings.Contains(reason, "must be owner") || strings.Contains(reason, "must be superuser"):
		return "the agent's role lacks a privilege the restore needs (see " + grantsGuide + "), or run the agent as a superuser, then join again"
	case strings.Contains(reason, "extension") || strings.Contains(reason, "control file"):
		return "install the extension's files on the joining server, then join again"
	}
	return "fix the object on the source or the joining server, then join again"
}

// tocEntry is one line of pg_restore --list: "ID; TABLEOID OID DESC SCHEMA TAG OWNER".
type tocEntry struct {
	desc, schema, tag, owner string
}

// tocDescs are the entry kinds of more than one word, longest first where
// one is a prefix of another.
var tocDescs = []string{
	"MATERIALIZED VIEW DATA", "MATERIALIZED VIEW", "FOREIGN DATA WRAPPER", "FOREIGN TABLE", "FOREIGN SERVER",
	"USER MAPPING", "DEFAULT ACL", "TABLE DATA", "TABLE ATTACH", "SEQUENCE SET", "SEQUENCE OWNED BY",
	"FK CONSTRAINT", "CHECK CONSTRAINT", "EVENT TRIGGER", "INDEX ATTACH", "LARGE OBJECT", "BLOB METADATA",
	"PUBLICATION TABLES IN SCHEMA", "PUBLICATION TABLE", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
	"TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "SECURITY LABEL", "ROW SECURITY", "PROCEDURAL LANGUAGE",
	"OPERATOR CLASS", "OPERATOR FAMILY", "SHELL TYPE", "DUMMY TYPE", "ACCESS METHOD", "DATABASE PROPERTIES",
	"SEARCHPATH", "ENCODING", "STDSTRINGS",
}

// parseTOC parses a line of pg_restore --list, "ID; TABLEOID OID DESC
// SCHEMA TAG OWNER". The owner is the last word (empty for entries without
// one); the tag is what lies between the schema and the owner. It returns
// nil for comment lines.
func parseTOC(entry string) *tocEntry {
	id, rest, ok := strings.Cut(entry, "; ")
	if _, err := strconv.Atoi(id); !ok || err != nil {
		return nil
	}
	// TABLEOID OID
	for range 2 {
		if _, rest, ok = strings.Cut(rest, " "); !ok {
			return nil
		}
	}
	var e tocEntry
	for _, d := range tocDescs {
		if strings.HasPrefix(rest, d+" ") {
			e.desc = d
			break
		}
	}
	if e.desc == "" {
		d, _, ok := strings.Cut(rest, " ")
		if !ok {
			return nil
		}
		e.desc = d
	}
	rest = rest[len(e.desc)+1:]
	if e.schema, rest, ok = strings.Cut(rest, " "); !ok {
		return nil
	}
	if i := strings.LastIndexByte(rest, ' '); i >= 0 {
		e.tag, e.owner = rest[:i], rest[i+1:]
	} else {
		e.tag = rest
	}
	return &e
}

// filterList drops from a pg_restore --list the entries of pgactive's own
// objects: the extension, its schema and everything in it, the FDW, the
// servers of it (servers) and their user mappings, the publication capture
// decodes through, and the grants of the replication origin functions to
// the agent's role. The joining node has, or its agent creates, its own.
func filterList(list string, servers []string) (kept string, dropped []string) {
	var b strings.Builder
	for _, line := range strings.SplitAfter(list, "\n") {
		e := parseTOC(strings.TrimRight(line, "\n"))
		if e != nil && ownEntry(e, servers) {
			dropped = append(dropped, strings.TrimRight(line, "\n"))
			continue
		}
		b.WriteString(line)
	}
	return b.String(), dropped
}

const (
	ownExtension = "pgactive"
	ownSchema    = capture.OwnSchema
	ownFDW       = "pgactive_fdw"
)

func ownEntry(e *tocEntry, servers []string) bool {
	if e.schema == ownSchema {
		return true
	}
	if e.desc == "ACL" && e.schema == "pg_catalog" && strings.HasPrefix(e.tag, "FUNCTION pg_replication_origin_") {
		// EXECUTE granted to a least-privilege agent role: each node's own
		// set-up (deploy/sql/agent-role.sql), which only a superuser can
		// restore.
		return true
	}
	isServer := func(name string) bool {
		for _, s := range servers {
			if s == name {
				return true
			}
		}
		return false
	}
	switch e.desc {
	case "EXTENSION":
		return e.tag == ownExtension
	case "SCHEMA":
		return e.tag == ownSchema
	case "FOREIGN DATA WRAPPER":
		return e.tag == ownFDW
	case "SERVER", "FOREIGN SERVER":
		return isServer(e.tag)
	case "USER MAPPING":
		_, server, ok := strings.Cut(e.tag, " SERVER ")
		return ok && isServer(server)
	case "PUBLICATION":
		return e.tag == capture.PublicationName
	case "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA":
		return strings.HasPrefix(e.tag, capture.PublicationName+" ")
	case "EVENT TRIGGER":
		return strings.HasPrefix(e.tag, "pgactive")
	case "COMMENT", "ACL", "SECURITY LABEL":
		// The tag names the object: "EXTENSION pgactive", "SCHEMA pgactive", ...
		kind, name, _ := strings.Cut(e.tag, " ")
		switch kind {
		case "EXTENSION":
			return name == ownExtension
		case "SCHEMA":
			return name == ownSchema
		case "FOREIGN":
			if fdw, ok := strings.CutPrefix(name, "DATA WRAPPER "); ok {
				return fdw == ownFDW
			}
			srv, ok := strings.CutPrefix(name, "SERVER ")
			return ok && isServer(srv)
		case "SERVER":
			return isServer(name)
		case "PUBLICATION":
			return name == capture.PublicationName
		}
	}
	return false
}
