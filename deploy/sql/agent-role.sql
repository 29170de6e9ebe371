-- agent-role.sql: a least-privilege PostgreSQL 15 role for the pgactive-go
-- agent, instead of a superuser (docs/deploy.md, "A least-privilege role for
-- the agent").
--
-- Run it with psql, as a superuser, in every database the agent replicates,
-- on every node, before the agent starts:
--
--   psql -v owner=app_owner -d app -f agent-role.sql
--
--   owner  the role that owns the replicated tables (best: the database too).
--          It must not be a superuser: the agent becomes a member of it.
--   agent  the agent's role, created if missing (default: pgactive_agent).
--
-- Then give the role a password (\password pgactive_agent) and run the agent
-- with a DSN naming it. The agent checks every grant below at start-up and
-- names the statement of any that is missing.

\set ON_ERROR_STOP on
\if :{?agent}
\else
\set agent pgactive_agent
\endif
\if :{?owner}
\else
DO $$ BEGIN RAISE EXCEPTION 'agent-role.sql: name the role that owns the replicated tables: psql -v owner=ROLE ...'; END $$;
\endif
SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'owner' AND NOT rolsuper) AS pgactive_bad_owner \gset
\if :pgactive_bad_owner
DO $$ BEGIN RAISE EXCEPTION 'agent-role.sql: the owner role must exist and must not be a superuser (the agent becomes a member of it)'; END $$;
\endif

-- Cluster-wide: once per PostgreSQL server (repeating it changes nothing).

SELECT format('CREATE ROLE %I', :'agent')
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'agent') \gexec

-- LOGIN; REPLICATION for the node's replication slot, the stream from it and
-- the snapshot a joining node copies from; BYPASSRLS so that tables with
-- row-level security are copied and applied whole (the agent asks for it only
-- where a table has row-level security).
ALTER ROLE :"agent" LOGIN REPLICATION BYPASSRLS;

-- Read and write every table: the replicated ones (conflict checks, applying
-- rows, the initial copy of a joining node) and pgactive's own.
GRANT pg_read_all_data, pg_write_all_data TO :"agent";

-- Owner privileges on the replicated objects: the tombstone trigger the agent
-- puts on each table, replicating TRUNCATE and pgactive_replicate_ddl_command,
-- and restoring the schema, with its owners, when a node joins.
GRANT :"owner" TO :"agent";

-- In this database: the replication origin functions, superuser-only unless
-- granted. Apply runs in a replication origin session so that its changes
-- never loop.
GRANT EXECUTE ON FUNCTION
    pg_catalog.pg_replication_origin_advance(text, pg_lsn),
    pg_catalog.pg_replication_origin_create(text),
    pg_catalog.pg_replication_origin_oid(text),
    pg_catalog.pg_replication_origin_progress(text, boolean),
    pg_catalog.pg_replication_origin_session_setup(text),
    pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)
TO :"agent";

-- What only a superuser can create: the extension (it creates the foreign-data
-- wrapper pgactive_fdw) and the publication FOR ALL TABLES capture decodes
-- through. A superuser agent would create the publication itself.
CREATE EXTENSION IF NOT EXISTS pgactive;
SELECT 'CREATE PUBLICATION pgactive_publication FOR ALL TABLES'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = 'pgactive_publication') \gexec
