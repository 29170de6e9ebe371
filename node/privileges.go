package node

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgactive-go/pgactive/capture"
)

// grantsGuide is where the user guide lists the grants of a least-privilege
// agent role, and deploy/sql/agent-role.sql gives them.
const grantsGuide = `docs/deploy.md, "A least-privilege role for the agent" (deploy/sql/agent-role.sql)`

// originFunctions are the replication origin functions the agent calls,
// with their argument types. PostgreSQL 15 lets only superusers call them
// unless EXECUTE is granted; a least-privilege agent role needs EXECUTE on
// each, in every database it serves.
func originFunctions() []string {
	return []string{
		"pg_catalog.pg_replication_origin_advance(text, pg_lsn)",
		"pg_catalog.pg_replication_origin_create(text)",
		"pg_catalog.pg_replication_origin_oid(text)",
		"pg_catalog.pg_replication_origin_progress(text, boolean)",
		"pg_catalog.pg_replication_origin_session_setup(text)",
		"pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)",
	}
}

// Grant is something the agent's role lacks: what it is, what the agent
// needs it for, and the statement a superuser runs to give it.
type Grant struct {
	What string
	Why  string
	Fix  string
}

// PrivilegeError is returned when the agent's role lacks what the agent
// needs. It matches ErrNotReady.
type PrivilegeError struct {
	Node    string // the node, or its database while it has no name
	Role    string
	Missing []Grant
}

func (e *PrivilegeError) Error() string {
	parts := make([]string, len(e.Missing))
	for i, g := range e.Missing {
		parts[i] = fmt.Sprintf("%s, %s: %s", g.What, g.Why, g.Fix)
	}
	return fmt.Sprintf("%s: role %q lacks what the agent needs: %s. Run these statements as a superuser, or run the agent as a superuser; see %s",
		e.Node, e.Role, strings.Join(parts, "; "), grantsGuide)
}

// Is makes a PrivilegeError match ErrNotReady.
func (e *PrivilegeError) Is(target error) bool { return target == ErrNotReady }

// roleState is what the agent's role may do, as read by readRole.
type roleState struct {
	name                          string
	super, replication, bypassRLS bool
	readAll, writeAll             bool
	noExecute                     []string // origin functions it may not call
}

// readRole reads the agent's role: its attributes, predefined roles and
// EXECUTE on the replication origin functions.
func readRole(ctx context.Context, conn *pgx.Conn) (roleState, error) {
	var r roleState
	err := conn.QueryRow(ctx, `SELECT r.rolname::text, r.rolsuper, r.rolreplication, r.rolbypassrls,
			pg_has_role(r.oid, 'pg_read_all_data', 'USAGE'), pg_has_role(r.oid, 'pg_write_all_data', 'USAGE'),
			ARRAY(SELECT f FROM unnest($1::text[]) f WHERE NOT has_function_privilege(r.oid, f, 'EXECUTE'))
		FROM pg_roles r WHERE r.rolname = current_user`, originFunctions()).Scan(
		&r.name, &r.super, &r.replication, &r.bypassRLS, &r.readAll, &r.writeAll, &r.noExecute)
	if err != nil {
		return roleState{}, fmt.Errorf("read the privileges of the agent's role: %w", err)
	}
	return r, nil
}

// missing lists what the role lacks to run the agent: nothing for a
// superuser.
func (r roleState) missing() []Grant {
	if r.super {
		return nil
	}
	role := pgx.Identifier{r.name}.Sanitize()
	var out []Grant
	if !r.replication {
		out = append(out, Grant{What: "the REPLICATION attribute", Why: "to create the node's replication slot and stream from it",
			Fix: "ALTER ROLE " + role + " REPLICATION"})
	}
	if !r.readAll {
		out = append(out, Grant{What: "membership in pg_read_all_data", Why: "to read every replicated table (conflicts, the initial copy of a joining node) and pgactive's tables",
			Fix: "GRANT pg_read_all_data TO " + role})
	}
	if !r.writeAll {
		out = append(out, Grant{What: "membership in pg_write_all_data", Why: "to apply the other nodes' rows and keep pgactive's tables",
			Fix: "GRANT pg_write_all_data TO " + role})
	}
	for _, f := range r.noExecute {
		out = append(out, Grant{What: "EXECUTE on " + f, Why: "to apply in a replication origin session (superuser-only unless granted), in this database",
			Fix: "GRANT EXECUTE ON FUNCTION " + f + " TO " + role})
	}
	return out
}

// checkRole refuses a role that lacks what every part of the agent needs.
func checkRole(ctx context.Context, conn *pgx.Conn, node string) error {
	r, err := readRole(ctx, conn)
	if err != nil {
		return fmt.Errorf("%s: %w", node, err)
	}
	if m := r.missing(); len(m) > 0 {
		return &PrivilegeError{Node: node, Role: r.name, Missing: m}
	}
	return nil
}

// replicationState is what CheckReplication reads: whether the publication
// exists, and the tables the role cannot fully replicate.
type replicationState struct {
	role        roleState
	publication bool
	owned       []ownedTable // tables without TRIGGER or TRUNCATE for the role
	rls         []string     // tables with row-level security
}

// ownedTable is a replicated table the agent's role lacks a privilege on.
type ownedTable struct {
	schema, name, owner string
	ownerSuper          bool
}

// CheckReplication verifies what a node needs before it replicates, beyond
// Check: the publication capture decodes through (only a superuser can
// create one FOR ALL TABLES), TRIGGER and TRUNCATE on every replicated
// table (the tombstone trigger; replicating TRUNCATE), and BYPASSRLS where
// a table has row-level security (or the agent would read and write only
// the rows the policies let it). A superuser passes: the agent creates the
// publication itself.
func CheckReplication(ctx context.Context, conn *pgx.Conn, node string) error {
	node = label(node, conn.Config().Database)
	st, err := readReplication(ctx, conn)
	if err != nil {
		return fmt.Errorf("%s: %w", node, err)
	}
	if m := st.missing(); len(m) > 0 {
		return &PrivilegeError{Node: node, Role: st.role.name, Missing: m}
	}
	return nil
}

func readReplication(ctx context.Context, conn *pgx.Conn) (replicationState, error) {
	var st replicationState
	var err error
	if st.role, err = readRole(ctx, conn); err != nil || st.role.super {
		return st, err
	}
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, capture.PublicationName).Scan(&st.publication)
	if err != nil {
		return st, fmt.Errorf("look up publication %q: %w", capture.PublicationName, err)
	}
	rows, err := conn.Query(ctx, `SELECT n.nspname::text, c.relname::text, o.rolname::text, o.rolsuper,
			NOT (has_table_privilege(c.oid, 'TRIGGER') AND has_table_privilege(c.oid, 'TRUNCATE')),
			c.relrowsecurity
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_roles o ON o.oid = c.relowner
		WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
			AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
			AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
			AND (NOT (has_table_privilege(c.oid, 'TRIGGER') AND has_table_privilege(c.oid, 'TRUNCATE')) OR c.relrowsecurity)
		ORDER BY 1, 2`, capture.OwnSchema)
	if err != nil {
		return st, fmt.Errorf("read privileges on the replicated tables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var t ownedTable
		var lacks, rls bool
		if err := rows.Scan(&t.schema, &t.name, &t.owner, &t.ownerSuper, &lacks, &rls); err != nil {
			return st, fmt.Errorf("read privileges on the replicated tables: %w", err)
		}
		if lacks {
			st.owned = append(st.owned, t)
		}
		if rls {
			st.rls = append(st.rls, pgx.Identifier{t.schema, t.name}.Sanitize())
		}
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("read privileges on the replicated tables: %w", err)
	}
	return st, nil
}

// missing lists what the role lacks to replicate: nothing for a superuser.
func (st replicationState) missing() []Grant {
	if st.role.super {
		return nil
	}
	role := pgx.Identifier{st.role.name}.Sanitize()
	var out []Grant
	if !st.publication {
		out = append(out, Grant{What: "the publication " + capture.PublicationName,
			Why: "which capture decodes through and only a superuser can create (FOR ALL TABLES), in this database",
			Fix: "CREATE PUBLICATION " + pgx.Identifier{capture.PublicationName}.Sanitize() + " FOR ALL TABLES"})
	}
	if len(st.rls) > 0 && !st.role.bypassRLS {
		out = append(out, Grant{What: "the BYPASSRLS attribute",
			Why: "because row-level security is enabled on " + listSome(st.rls) + " and the agent must copy and apply every row",
			Fix: "ALTER ROLE " + role + " BYPASSRLS"})
	}
	return append(out, ownerGrants(st.owned, role)...)
}

// ownerGrants says how the role gets TRIGGER and TRUNCATE on tables: by
// membership in the role that owns them, which a join and replicated DDL
// need too; on tables a superuser owns (membership would make the agent a
// superuser), by grants on their schemas.
func ownerGrants(tables []ownedTable, role string) []Grant {
	byOwner := map[string][]string{}
	var owners, schemas []string
	bySchema := map[string][]string{}
	for _, t := range tables {
		name := pgx.Identifier{t.schema, t.name}.Sanitize()
		if t.ownerSuper {
			if _, ok := bySchema[t.schema]; !ok {
				schemas = append(schemas, t.schema)
			}
			bySchema[t.schema] = append(bySchema[t.schema], name)
			continue
		}
		if _, ok := byOwner[t.owner]; !ok {
			owners = append(owners, t.owner)
		}
		byOwner[t.owner] = append(byOwner[t.owner], name)
	}
	slices.Sort(owners)
	var out []Grant
	const why = "to put the tombstone trigger on them and replicate TRUNCATE"
	for _, o := range owners {
		owner := pgx.Identifier{o}.Sanitize()
		out = append(out, Grant{What: "TRIGGER and TRUNCATE on " + listSome(byOwner[o]) + ", owned by " + owner,
			Why: why + " (membership in their owner also lets a join restore the schema and replicated DDL run)",
			Fix: "GRANT " + owner + " TO " + role})
	}
	for _, s := range schemas {
		out = append(out, Grant{What: "TRIGGER and TRUNCATE on " + listSome(bySchema[s]) + ", owned by a superuser",
			Why: why,
			Fix: "GRANT TRIGGER, TRUNCATE ON ALL TABLES IN SCHEMA " + pgx.Identifier{s}.Sanitize() + " TO " + role})
	}
	return out
}

// listSome names up to five items and how many more there are.
func listSome(items []string) string {
	if len(items) <= 5 {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:5], ", "), len(items)-5)
}
