package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Keys of a node DSN that name catalog entries instead of connection settings.
const (
	keyUserMapping   = "user_mapping"
	keyForeignServer = "pgactive_foreign_server"
)

// parseKeyValues splits a libpq key=value string, honouring single quotes
// and backslash escapes.
func parseKeyValues(s string) (map[string]string, error) {
	out := map[string]string{}
	i := 0
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
			i++
		}
		if i >= len(s) {
			return out, nil
		}
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			return nil, fmt.Errorf("%q is not key=value", strings.Fields(s[i:])[0])
		}
		key := strings.TrimSpace(s[i : i+eq])
		i += eq + 1
		for i < len(s) && s[i] == ' ' {
			i++
		}
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					val.WriteByte(s[i])
					i++
					continue
				}
				if c == '\'' {
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("unterminated quoted value for %q", key)
			}
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
		}
		if key == "" {
			return nil, errors.New("empty key")
		}
		out[key] = val.String()
	}
}

// formatKeyValues renders settings as a libpq key=value string, quoting values.
func formatKeyValues(kv map[string]string) string {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		v := strings.ReplaceAll(kv[k], `\`, `\\`)
		v = strings.ReplaceAll(v, `'`, `\'`)
		parts[i] = k + "='" + v + "'"
	}
	return strings.Join(parts, " ")
}

// ResolveDSN turns a node DSN into a libpq connection string. A DSN naming
// `user_mapping=U pgactive_foreign_server=S` is resolved from the catalog of
// conn's database: the server's options (host, port, dbname, ...) and the
// user mapping's user and password. Any other DSN is returned unchanged.
func ResolveDSN(ctx context.Context, conn *pgx.Conn, dsn string) (string, error) {
	if strings.Contains(dsn, "://") || !strings.Contains(dsn, keyForeignServer) {
		return dsn, nil
	}
	kv, err := parseKeyValues(dsn)
	if err != nil {
		return "", fmt.Errorf("node DSN: %w", err)
	}
	server, user := kv[keyForeignServer], kv[keyUserMapping]
	if server == "" || user == "" {
		return "", errors.New("node DSN: user_mapping and pgactive_foreign_server must both be set")
	}
	delete(kv, keyForeignServer)
	delete(kv, keyUserMapping)
	var srvOpts []string
	err = conn.QueryRow(ctx, `SELECT coalesce(s.srvoptions, '{}') FROM pg_foreign_server s
		JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
		WHERE s.srvname = $1 AND w.fdwname = 'pgactive_fdw'`, server).Scan(&srvOpts)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("node DSN: foreign server %q of pgactive_fdw does not exist: create it with CREATE SERVER %s FOREIGN DATA WRAPPER pgactive_fdw OPTIONS (host '...', port '...', dbname '...')", server, pgx.Identifier{server}.Sanitize())
	}
	if err != nil {
		return "", fmt.Errorf("node DSN: read foreign server %q: %w", server, err)
	}
	var umOpts []string
	var readable bool
	var self string
	// pg_user_mappings shows a mapping's options only to superusers, to the
	// mapped role if it may use the server, and (for PUBLIC) to members of
	// the server's owner: the same rule, to tell "no options" from "hidden".
	err = conn.QueryRow(ctx, `SELECT coalesce(um.umoptions, '{}'), current_user::text,
			um.umoptions IS NOT NULL OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user)
			OR (um.usename = current_user AND (pg_has_role(s.srvowner, 'USAGE') OR has_server_privilege(s.oid, 'USAGE')))
			OR (um.usename = 'public' AND pg_has_role(s.srvowner, 'USAGE'))
		FROM pg_user_mappings um JOIN pg_foreign_server s ON s.oid = um.srvid
		WHERE um.srvname = $1 AND (um.usename = $2 OR (um.usename = 'public' AND NOT EXISTS (
			SELECT 1 FROM pg_user_mappings WHERE srvname = $1 AND usename = $2)))`, server, user).Scan(&umOpts, &self, &readable)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("node DSN: no user mapping for %q on server %q: create it with CREATE USER MAPPING FOR %s SERVER %s OPTIONS (user '...', password '...')", user, server, pgx.Identifier{user}.Sanitize(), pgx.Identifier{server}.Sanitize())
	}
	if err != nil {
		return "", fmt.Errorf("node DSN: read user mapping for %q on %q: %w", user, server, err)
	}
	if !readable {
		agent, srv := pgx.Identifier{self}.Sanitize(), pgx.Identifier{server}.Sanitize()
		return "", fmt.Errorf("node DSN: the agent's role %q cannot read the user mapping for %q on server %q (PostgreSQL shows a mapping's options only to its own role, when that role may use the server, and to superusers): "+
			"create the mapping for the agent's role with CREATE USER MAPPING FOR %s SERVER %s OPTIONS (user '...', password '...'), GRANT USAGE ON FOREIGN SERVER %s TO %s, and name it with user_mapping=%s",
			self, user, server, agent, srv, srv, agent, self)
	}
	for _, o := range append(srvOpts, umOpts...) {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			continue
		}
		kv[k] = v
	}
	if _, ok := kv["user"]; !ok {
		kv["user"] = user
	}
	return formatKeyValues(kv), nil
}
