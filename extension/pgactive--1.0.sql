/* pgactive--1.0.sql: the SQL surface of pgactive-go, in schema pgactive.
 *
 * The objects keep pgactive's names, arguments, defaults and column types, so
 * that pgactive's quick start works as typed. There is no C code: the lifecycle
 * functions validate their arguments, record the local node in
 * pgactive.pgactive_nodes and queue a request for the pgactive-go agent
 * (a row in pgactive.pgactive_requests plus NOTIFY pgactive_requests). The agent
 * does the replication work and keeps the state tables up to date.
 *
 * Every statement is idempotent, so the same script serves CREATE EXTENSION and
 * `pgactive run --create-schema` (which runs it without the psql guard below).
 */

-- complain if the script is sourced in psql rather than run by CREATE EXTENSION
\echo Use "CREATE EXTENSION pgactive" to load this file. \quit

CREATE SCHEMA IF NOT EXISTS pgactive;
GRANT USAGE ON SCHEMA pgactive TO public;

-------------------------------------------------------------------------------
-- Types
-------------------------------------------------------------------------------

DO $do$
BEGIN
    IF pg_catalog.to_regtype('pgactive.pgactive_conflict_type') IS NULL THEN
        CREATE TYPE pgactive.pgactive_conflict_type AS ENUM (
            'insert_insert',
            'insert_update',
            'update_update',
            'update_delete',
            'delete_delete',
            'unhandled_tx_abort'
        );
    END IF;
    IF pg_catalog.to_regtype('pgactive.pgactive_conflict_resolution') IS NULL THEN
        CREATE TYPE pgactive.pgactive_conflict_resolution AS ENUM (
            'conflict_trigger_skip_change',
            'conflict_trigger_returned_tuple',
            'last_update_wins_keep_local',
            'last_update_wins_keep_remote',
            'apply_change',
            'skip_change',
            'unhandled_tx_abort'
        );
    END IF;
END
$do$;

COMMENT ON TYPE pgactive.pgactive_conflict_type IS
'Kind of apply conflict: two inserts of one key, concurrent updates, an update or delete that found no row, or an apply error';
COMMENT ON TYPE pgactive.pgactive_conflict_resolution IS
'How an apply conflict was resolved (last-update-wins by commit time, skipped, applied) or that the transaction failed';

-------------------------------------------------------------------------------
-- Tables maintained by the agent
-------------------------------------------------------------------------------

-- Members of the group. The agent mirrors the whole group's membership into
-- this table on every node; the local row is inserted by
-- pgactive_create_group / pgactive_join_group.
CREATE TABLE IF NOT EXISTS pgactive.pgactive_nodes (
    node_sysid text NOT NULL,
    node_timeline oid NOT NULL,
    node_dboid oid NOT NULL,
    node_status "char" NOT NULL,
    node_name text NOT NULL,
    node_dsn text,
    node_init_from_dsn text,
    node_read_only boolean DEFAULT false,
    node_seq_id smallint,
    node_group text,
    PRIMARY KEY (node_sysid, node_timeline, node_dboid),
    CHECK (node_status IN ('b', 'i', 'c', 'o', 'r', 'k'))
);
CREATE UNIQUE INDEX IF NOT EXISTS pgactive_nodes_node_name ON pgactive.pgactive_nodes (node_name);
REVOKE ALL ON TABLE pgactive.pgactive_nodes FROM PUBLIC;

COMMENT ON TABLE pgactive.pgactive_nodes IS 'Nodes of the pgactive group this database belongs to';
COMMENT ON COLUMN pgactive.pgactive_nodes.node_sysid IS 'System identifier of the node''s PostgreSQL cluster';
COMMENT ON COLUMN pgactive.pgactive_nodes.node_timeline IS 'Timeline of the node''s cluster when it joined';
COMMENT ON COLUMN pgactive.pgactive_nodes.node_dboid IS 'OID of the node''s database in its cluster';
COMMENT ON COLUMN pgactive.pgactive_nodes.node_status IS
'b beginning, i copying initial data, c catching up, o creating outbound, r ready, k detached';
COMMENT ON COLUMN pgactive.pgactive_nodes.node_seq_id IS
'Number of the node in the group (0-1023), assigned by the agent; used by pgactive_snowflake_id_nextval';
COMMENT ON COLUMN pgactive.pgactive_nodes.node_group IS
'Name of the group (pgactive-go): the creating database''s name, NULL on a joining node until the agent learns it';

-- Requests to the agent. Each request function inserts a row and notifies
-- channel pgactive_requests with the request_id as payload. The agent sees
-- both only once the caller commits.
CREATE TABLE IF NOT EXISTS pgactive.pgactive_requests (
    request_id bigserial PRIMARY KEY,
    request text NOT NULL,
    args jsonb NOT NULL DEFAULT '{}',
    requested_at timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'done', 'failed')),
    error text,
    finished_at timestamptz
);
REVOKE ALL ON TABLE pgactive.pgactive_requests FROM PUBLIC;
COMMENT ON TABLE pgactive.pgactive_requests IS
'Requests from the SQL functions to the pgactive-go agent (create_group, join_group, detach_nodes, remove, skip_changes, replicate_ddl)';

-- Progress of the initial copy of a joining node, one row per joining node,
-- kept up to date by the agent and reported by pgactive_wait_for_node_ready.
CREATE TABLE IF NOT EXISTS pgactive.pgactive_join_progress (
    node_name text PRIMARY KEY,
    source_node text,
    dbname text,
    phase text,
    total_bytes bigint,
    copied_bytes bigint,
    started_at timestamptz,
    finished_at timestamptz
);
REVOKE ALL ON TABLE pgactive.pgactive_join_progress FROM PUBLIC;

-- One row per replication path (origin -> target), refreshed by the agent,
-- read by pgactive_get_replication_lag_info.
CREATE TABLE IF NOT EXISTS pgactive.pgactive_lag (
    origin_node text NOT NULL,
    target_node text NOT NULL,
    node_name text,
    node_sysid text,
    application_name text,
    slot_name text,
    active boolean NOT NULL DEFAULT false,
    active_pid integer,
    pending_wal_decoding bigint,
    pending_wal_to_apply bigint,
    restart_lsn pg_lsn,
    confirmed_flush_lsn pg_lsn,
    sent_lsn pg_lsn,
    write_lsn pg_lsn,
    flush_lsn pg_lsn,
    replay_lsn pg_lsn,
    pending_messages bigint,
    lag_seconds double precision,
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Why the target cannot apply the origin's next transaction, '' if it can.
    last_error text,
    PRIMARY KEY (origin_node, target_node)
);
-- Schemas made by an earlier CreateSchema lack the column.
ALTER TABLE pgactive.pgactive_lag ADD COLUMN IF NOT EXISTS last_error text;
REVOKE ALL ON TABLE pgactive.pgactive_lag FROM PUBLIC;

-- Apply counters per origin node on this node, refreshed by the agent, read
-- by pgactive_get_stats. nr_rollback counts apply transactions that failed.
CREATE TABLE IF NOT EXISTS pgactive.pgactive_stats (
    origin_node text PRIMARY KEY,
    origin_sysid text,
    origin_name text,
    nr_commit bigint NOT NULL DEFAULT 0,
    nr_rollback bigint NOT NULL DEFAULT 0,
    nr_insert bigint NOT NULL DEFAULT 0,
    nr_insert_conflict bigint NOT NULL DEFAULT 0,
    nr_update bigint NOT NULL DEFAULT 0,
    nr_update_conflict bigint NOT NULL DEFAULT 0,
    nr_delete bigint NOT NULL DEFAULT 0,
    nr_delete_conflict bigint NOT NULL DEFAULT 0,
    nr_disconnect bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON TABLE pgactive.pgactive_stats FROM PUBLIC;
COMMENT ON COLUMN pgactive.pgactive_stats.origin_name IS
'Replication origin the agent applies this origin node''s changes under';

-- Whether apply is paused on this node: exactly one row.
CREATE TABLE IF NOT EXISTS pgactive.pgactive_apply_state (
    onerow boolean PRIMARY KEY DEFAULT true CHECK (onerow),
    paused boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pgactive.pgactive_apply_state (onerow, paused) VALUES (true, false)
    ON CONFLICT (onerow) DO NOTHING;
REVOKE ALL ON TABLE pgactive.pgactive_apply_state FROM PUBLIC;

-------------------------------------------------------------------------------
-- Conflict history (written by the agent's apply workers)
-------------------------------------------------------------------------------

CREATE SEQUENCE IF NOT EXISTS pgactive.pgactive_conflict_history_id_seq;

CREATE TABLE IF NOT EXISTS pgactive.pgactive_conflict_history (
    conflict_id bigint NOT NULL DEFAULT nextval('pgactive.pgactive_conflict_history_id_seq'),
    local_node_sysid text NOT NULL,
    PRIMARY KEY (local_node_sysid, conflict_id),
    local_conflict_xid xid NOT NULL,
    local_conflict_lsn pg_lsn NOT NULL,
    local_conflict_time timestamptz NOT NULL,
    object_schema text,
    object_name text,
    remote_node_sysid text NOT NULL,
    remote_txid xid NOT NULL,
    remote_commit_time timestamptz NOT NULL,
    remote_commit_lsn pg_lsn NOT NULL,
    conflict_type pgactive.pgactive_conflict_type NOT NULL,
    conflict_resolution pgactive.pgactive_conflict_resolution NOT NULL,
    local_tuple json,
    remote_tuple json,
    local_tuple_xmin xid,
    local_tuple_origin_sysid text,
    error_message text,
    error_sqlstate text CHECK (length(error_sqlstate) = 5),
    error_querystring text,
    error_cursorpos integer,
    error_detail text,
    error_hint text,
    error_context text,
    error_columnname text,
    error_typename text,
    error_constraintname text,
    error_filename text,
    error_lineno integer,
    error_funcname text,
    remote_node_timeline oid,
    remote_node_dboid oid,
    local_tuple_origin_timeline oid,
    local_tuple_origin_dboid oid,
    local_commit_time timestamptz
);
ALTER SEQUENCE pgactive.pgactive_conflict_history_id_seq
    OWNED BY pgactive.pgactive_conflict_history.conflict_id;
REVOKE ALL ON TABLE pgactive.pgactive_conflict_history FROM PUBLIC;

COMMENT ON TABLE pgactive.pgactive_conflict_history IS
'Apply conflicts detected on this node, one row each, and how they were resolved';
COMMENT ON COLUMN pgactive.pgactive_conflict_history.local_conflict_xid IS
'Transaction ID of the local apply transaction that met the conflict';
COMMENT ON COLUMN pgactive.pgactive_conflict_history.remote_commit_time IS
'Commit time of the remote transaction on its origin node';
COMMENT ON COLUMN pgactive.pgactive_conflict_history.local_tuple_origin_sysid IS
'System identifier of the node that last wrote the local row';
COMMENT ON COLUMN pgactive.pgactive_conflict_history.error_message IS
'For unhandled_tx_abort: the error of the failed apply; the other error_ columns give its fields';


-- Tombstones: keys deleted recently, so that a change that arrives after a
-- delete it predates (from another node, or late) does not bring the row
-- back. The version of a tombstone (commit time and origin of the deleting
-- transaction) is its own xmin's, read with pg_xact_commit_timestamp_origin.
-- key is the text of an array of the key columns' text values, in column
-- order, as pgactive_record_tombstone builds it. The agent keeps rows until
-- every node has applied past them.
CREATE TABLE IF NOT EXISTS pgactive.pgactive_tombstones (
    schema_name text NOT NULL,
    table_name text NOT NULL,
    key text NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name, key)
);
REVOKE ALL ON TABLE pgactive.pgactive_tombstones FROM PUBLIC;

-- AFTER DELETE row trigger the agent puts on every table with a primary key,
-- its arguments the key columns in column order. It runs as its owner: the
-- roles that delete rows need no privilege on pgactive_tombstones, and a
-- trigger only ever records keys of the table it is on.
CREATE OR REPLACE FUNCTION pgactive.pgactive_record_tombstone()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog
AS $fn$
DECLARE
    vals text[] := '{}';
    col text;
    v text;
BEGIN
    FOREACH col IN ARRAY TG_ARGV LOOP
        EXECUTE format('SELECT ($1).%I::text', col) INTO v USING OLD;
        vals := array_append(vals, v);
    END LOOP;
    INSERT INTO pgactive.pgactive_tombstones (schema_name, table_name, key)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, vals::text)
    ON CONFLICT (schema_name, table_name, key) DO UPDATE SET deleted_at = now();
    RETURN NULL;
END
$fn$;

-------------------------------------------------------------------------------
-- Identity and agent
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgactive.pgactive_version()
RETURNS text
LANGUAGE sql IMMUTABLE
AS $fn$ SELECT '1.0'::text $fn$;

-- The (sysid, timeline, dboid) triple that identifies this database as a node.
CREATE OR REPLACE FUNCTION pgactive.pgactive_get_local_nodeid(
    sysid OUT text,
    timeline OUT oid,
    dboid OUT oid)
RETURNS record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT s.system_identifier::text, c.timeline_id::oid, d.oid
    FROM pg_catalog.pg_control_system() s,
         pg_catalog.pg_control_checkpoint() c,
         pg_catalog.pg_database d
    WHERE d.datname = pg_catalog.current_database()
$fn$;

CREATE OR REPLACE FUNCTION pgactive.pgactive_get_local_node_name()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT n.node_name
    FROM pgactive.pgactive_nodes n, pgactive.pgactive_get_local_nodeid() i
    WHERE n.node_sysid = i.sysid
      AND n.node_timeline = i.timeline
      AND n.node_dboid = i.dboid
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_get_local_node_name() IS
'Name of this database''s node in pgactive.pgactive_nodes, or NULL if it is not a node';

-- True while a pgactive-go agent is connected to this database. The agent's
-- sessions set application_name = 'pgactive:agent'.
CREATE OR REPLACE FUNCTION pgactive.pgactive_is_agent_attached()
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- pg_stat_activity is read once per transaction unless the snapshot is
    -- cleared, and callers poll this function inside one statement.
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    RETURN EXISTS (
        SELECT 1
        FROM pg_catalog.pg_stat_activity a
        WHERE a.application_name = 'pgactive:agent'
          AND a.datname = pg_catalog.current_database());
END
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_is_agent_attached() IS
'Whether a pgactive-go agent serves this database (a session with application_name pgactive:agent is connected)';

-- A libpq value, quoted when it needs to be.
CREATE OR REPLACE FUNCTION pgactive._pgactive_conninfo_value(v text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET standard_conforming_strings = on
AS $fn$
    SELECT CASE WHEN v ~ '^[^\s''\\]+$' THEN v
                ELSE '''' || replace(replace(v, '\', '\\'), '''', '\''') || '''' END
$fn$;

-- A connection string for this database, without a password, for messages.
CREATE OR REPLACE FUNCTION pgactive._pgactive_local_dsn()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT concat_ws(' ',
        'host=' || host(inet_server_addr()),
        'port=' || current_setting('port'),
        'dbname=' || pgactive._pgactive_conninfo_value(current_database()::text),
        'user=' || pgactive._pgactive_conninfo_value(current_user::text))
$fn$;

-- Raise the error every lifecycle function gives when no agent serves this
-- database.
CREATE OR REPLACE FUNCTION pgactive._pgactive_require_agent()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT pgactive.pgactive_is_agent_attached() THEN
        RAISE EXCEPTION USING
            ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('no pgactive agent is attached to database "%s"; start an agent with: pgactive run --dsn ''%s''',
                             current_database(), pgactive._pgactive_local_dsn()),
            HINT = 'The agent does the replication work of pgactive-go; add the password or other options the agent needs to --dsn. SELECT pgactive.pgactive_is_agent_attached(); tells whether one is connected.';
    END IF;
END
$fn$;

-- Queue a request for the agent: a row in pgactive_requests, then NOTIFY
-- pgactive_requests with the request_id. Returns the request_id.
CREATE OR REPLACE FUNCTION pgactive._pgactive_request(p_request text, p_args jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    id bigint;
BEGIN
    INSERT INTO pgactive.pgactive_requests (request, args)
    VALUES (p_request, coalesce(p_args, '{}'::jsonb))
    RETURNING request_id INTO id;
    PERFORM pg_catalog.pg_notify('pgactive_requests', id::text);
    RETURN id;
END
$fn$;

-------------------------------------------------------------------------------
-- Connection data: FDW pgactive_fdw, servers and user mappings, node DSNs
-------------------------------------------------------------------------------

-- libpq's connection keywords (PostgreSQL 15, plus those of later releases).
CREATE OR REPLACE FUNCTION pgactive._pgactive_libpq_keywords()
RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $fn$
    SELECT ARRAY[
        'host', 'hostaddr', 'port', 'dbname', 'user', 'password', 'passfile',
        'channel_binding', 'connect_timeout', 'client_encoding', 'options',
        'application_name', 'fallback_application_name', 'keepalives',
        'keepalives_idle', 'keepalives_interval', 'keepalives_count',
        'tcp_user_timeout', 'replication', 'sslmode', 'sslnegotiation',
        'sslcompression', 'sslcert', 'sslkey', 'sslpassword', 'sslcertmode',
        'sslrootcert', 'sslcrl', 'sslcrldir', 'sslsni', 'requirepeer',
        'require_auth', 'ssl_min_protocol_version', 'ssl_max_protocol_version',
        'gssencmode', 'krbsrvname', 'gsslib', 'gssdelegation', 'service',
        'target_session_attrs', 'load_balance_hosts']::text[]
$fn$;

-- Option names a server, a user mapping or the wrapper itself may carry:
-- user and the secrets (password, sslpassword) belong in user mappings, the
-- other libpq keywords in servers; replication and client_encoding are the
-- agent's business.
CREATE OR REPLACE FUNCTION pgactive._pgactive_fdw_options(catalog oid)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE
        WHEN catalog = 'pg_catalog.pg_user_mapping'::regclass THEN
            ARRAY['user', 'password', 'sslpassword']::text[]
        WHEN catalog = 'pg_catalog.pg_foreign_server'::regclass THEN
            ARRAY(SELECT k FROM unnest(pgactive._pgactive_libpq_keywords()) k
                  WHERE k NOT IN ('user', 'password', 'sslpassword', 'replication', 'client_encoding'))
        ELSE ARRAY[]::text[]
    END
$fn$;

CREATE OR REPLACE FUNCTION pgactive.pgactive_fdw_validator(options text[], catalog oid)
RETURNS void
LANGUAGE plpgsql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    opt text;
    opt_name text;
    allowed text[] := pgactive._pgactive_fdw_options(catalog);
BEGIN
    FOREACH opt IN ARRAY options LOOP
        opt_name := split_part(opt, '=', 1);
        IF NOT opt_name = ANY (allowed) THEN
            RAISE EXCEPTION USING
                ERRCODE = 'fdw_option_name_not_found',
                MESSAGE = format('invalid option "%s"', opt_name),
                HINT = CASE WHEN cardinality(allowed) = 0
                            THEN 'pgactive_fdw takes no options here: put connection options on the server and user, password on the user mapping.'
                            ELSE 'Valid options in this context are: ' || array_to_string(allowed, ', ') END;
        END IF;
    END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION pgactive.pgactive_fdw_validator(text[], oid) FROM PUBLIC;

DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_data_wrapper WHERE fdwname = 'pgactive_fdw') THEN
        CREATE FOREIGN DATA WRAPPER pgactive_fdw VALIDATOR pgactive.pgactive_fdw_validator;
    END IF;
END
$do$;
COMMENT ON FOREIGN DATA WRAPPER pgactive_fdw IS
'Connection data of pgactive nodes: servers hold host, port, dbname; user mappings hold user, password';

-- Check a node DSN given to a lifecycle function as argument param, and
-- return its form: 'user_mapping' (user_mapping=U pgactive_foreign_server=S,
-- resolved by the agent from the catalog), 'conninfo' (libpq keyword=value
-- pairs) or 'url' (postgres:// or postgresql://). Error messages never quote
-- the DSN, which may hold a password.
CREATE OR REPLACE FUNCTION pgactive._pgactive_check_dsn(param text, dsn text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $fn$
DECLARE
    pair constant text := '([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(''(?:[^''\\]|\\.)*''|(?:[^\s''\\]|\\.)*)';
    forms constant text := 'Use ''user_mapping=<role> pgactive_foreign_server=<server>'', a libpq connection string such as ''host=... port=... dbname=... user=...'', or a postgresql:// URL.';
    m text[];
    k text;
    v text;
    mapping text;
    server text;
    libpq_keys int := 0;
    srv record;
BEGIN
    IF dsn IS NULL OR btrim(dsn) = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('%s must not be empty', param), HINT = forms;
    END IF;
    IF dsn ~* '^\s*postgres(ql)?://' THEN
        RETURN 'url';
    END IF;
    IF regexp_replace(dsn, '\s*' || pair || '\s*', '', 'g') <> '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('%s is not a valid connection string: expected keyword=value pairs', param),
            HINT = forms;
    END IF;
    FOR m IN SELECT regexp_matches(dsn, pair, 'g') LOOP
        k := m[1];
        v := m[2];
        IF left(v, 1) = '''' THEN
            v := substr(v, 2, length(v) - 2);
        END IF;
        v := regexp_replace(v, '\\(.)', '\1', 'g');
        IF lower(k) = 'user_mapping' THEN
            mapping := v;
        ELSIF lower(k) = 'pgactive_foreign_server' THEN
            server := v;
        ELSIF k = ANY (pgactive._pgactive_libpq_keywords()) THEN
            libpq_keys := libpq_keys + 1;
        ELSE
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = format('%s has an unknown keyword "%s"', param, k),
                HINT = forms;
        END IF;
    END LOOP;

    IF mapping IS NULL AND server IS NULL THEN
        RETURN 'conninfo';
    END IF;
    IF libpq_keys > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('%s mixes user_mapping/pgactive_foreign_server with libpq keywords', param),
            HINT = 'Put connection options on the foreign server and credentials on the user mapping, and give only user_mapping=<role> pgactive_foreign_server=<server>.';
    END IF;
    IF coalesce(mapping, '') = '' OR coalesce(server, '') = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('%s must give both user_mapping=<role> and pgactive_foreign_server=<server>', param),
            HINT = forms;
    END IF;

    SELECT s.oid, s.srvname, w.fdwname INTO srv
    FROM pg_catalog.pg_foreign_server s
    JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw
    WHERE s.srvname = server;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('foreign server "%s" named in %s does not exist', server, param),
            HINT = format('Create it with: CREATE SERVER %I FOREIGN DATA WRAPPER pgactive_fdw OPTIONS (host ''...'', port ''...'', dbname ''...'');', server);
    END IF;
    IF srv.fdwname <> 'pgactive_fdw' THEN
        RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
            MESSAGE = format('foreign server "%s" named in %s uses foreign data wrapper %s, not pgactive_fdw', server, param, srv.fdwname),
            HINT = 'Create a server with: CREATE SERVER ... FOREIGN DATA WRAPPER pgactive_fdw OPTIONS (host ''...'', port ''...'', dbname ''...'');';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_user_mappings um
                   WHERE um.srvid = srv.oid AND um.usename = mapping) THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('user mapping for "%s" on foreign server "%s" named in %s does not exist', mapping, server, param),
            HINT = format('Create it with: CREATE USER MAPPING FOR %I SERVER %I OPTIONS (user ''...'', password ''...'');', mapping, server);
    END IF;
    RETURN 'user_mapping';
END
$fn$;

-------------------------------------------------------------------------------
-- Group lifecycle
-------------------------------------------------------------------------------

-- Shared by pgactive_create_group and pgactive_join_group: validate, record
-- the local node with status 'b', queue the request. Changes nothing unless
-- every check passes.
CREATE OR REPLACE FUNCTION pgactive._pgactive_begin_node(
    p_request text,
    p_node_name text,
    p_node_dsn text,
    p_join_using_dsn text,
    p_group text,
    p_args jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    localid record;
    cur record;
    other record;
BEGIN
    IF p_node_name IS NULL OR btrim(p_node_name) = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'node_name must not be empty';
    END IF;
    PERFORM pgactive._pgactive_check_dsn('node_dsn', p_node_dsn);
    IF p_request = 'join_group' THEN
        PERFORM pgactive._pgactive_check_dsn('join_using_dsn', p_join_using_dsn);
        IF btrim(p_join_using_dsn) = btrim(p_node_dsn) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'join_using_dsn is the same as node_dsn',
                HINT = 'node_dsn connects to this database; join_using_dsn connects to a member of the group to copy the data from.';
        END IF;
    END IF;

    LOCK TABLE pgactive.pgactive_nodes IN SHARE ROW EXCLUSIVE MODE;
    SELECT * INTO localid FROM pgactive.pgactive_get_local_nodeid();

    SELECT n.node_name, n.node_status INTO cur
    FROM pgactive.pgactive_nodes n
    WHERE (n.node_sysid, n.node_timeline, n.node_dboid) = (localid.sysid, localid.timeline, localid.dboid);
    IF FOUND AND cur.node_status <> 'k' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = 'this database is already a member of a pgactive group',
            DETAIL = format('It is node "%s" with status ''%s'' in pgactive.pgactive_nodes.', cur.node_name, cur.node_status),
            HINT = 'To add another database, connect to it and run pgactive.pgactive_join_group there. To leave the group, detach this node and run pgactive.pgactive_remove().';
    END IF;

    SELECT n.node_status INTO other
    FROM pgactive.pgactive_nodes n
    WHERE n.node_name = p_node_name
      AND (n.node_sysid, n.node_timeline, n.node_dboid) <> (localid.sysid, localid.timeline, localid.dboid);
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = format('node name "%s" is already used by another node', p_node_name),
            DETAIL = format('pgactive.pgactive_nodes has a node "%s" with status ''%s''.', p_node_name, other.node_status),
            HINT = 'Choose another node_name.';
    END IF;

    PERFORM pgactive._pgactive_require_agent();

    -- A detached local row left from an earlier membership gives way.
    DELETE FROM pgactive.pgactive_nodes n
    WHERE (n.node_sysid, n.node_timeline, n.node_dboid) = (localid.sysid, localid.timeline, localid.dboid);
    DELETE FROM pgactive.pgactive_join_progress jp WHERE jp.node_name = p_node_name;

    INSERT INTO pgactive.pgactive_nodes (
        node_sysid, node_timeline, node_dboid, node_status, node_name,
        node_dsn, node_init_from_dsn, node_read_only, node_seq_id, node_group)
    VALUES (
        localid.sysid, localid.timeline, localid.dboid, 'b', p_node_name,
        p_node_dsn, p_join_using_dsn, false, NULL, p_group);

    PERFORM pgactive._pgactive_request(p_request,
        jsonb_build_object(
            'node_name', p_node_name,
            'node_dsn', p_node_dsn,
            'join_using_dsn', p_join_using_dsn) || coalesce(p_args, '{}'::jsonb));
END
$fn$;

-- Warn about tables whose changes cannot be replicated safely.
CREATE OR REPLACE FUNCTION pgactive._pgactive_warn_tables()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT n.nspname, c.relname
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p')
          AND c.relpersistence = 'p'
          AND NOT c.relispartition
          AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgactive')
          AND n.nspname NOT LIKE 'pg_toast%'
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                          WHERE i.indrelid = c.oid AND i.indisprimary)
        ORDER BY 1, 2
    LOOP
        RAISE WARNING USING
            MESSAGE = format('table %I.%I has no PRIMARY KEY', t.nspname, t.relname),
            HINT = 'Only INSERTs into a table without a PRIMARY KEY are replicated; UPDATE and DELETE on it are refused. Add a PRIMARY KEY.';
    END LOOP;

    FOR t IN
        SELECT n.nspname, c.relname, ic.relname AS indexname
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
        JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE i.indisunique
          AND NOT i.indisprimary
          AND c.relkind IN ('r', 'p')
          AND c.relpersistence = 'p'
          AND NOT c.relispartition
          AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgactive')
          AND n.nspname NOT LIKE 'pg_toast%'
        ORDER BY 1, 2, 3
    LOOP
        RAISE WARNING USING
            MESSAGE = format('table %I.%I has secondary unique constraint or index %I', t.nspname, t.relname, t.indexname),
            DETAIL = 'Conflicts are resolved by PRIMARY KEY: rows written on two nodes with the same value in another unique key can make replication stop with an error.',
            HINT = 'Drop the secondary unique constraint, or make sure each value is only ever written on one node.';
    END LOOP;
END
$fn$;

-- pgactive's signature. apply_delay and replication_sets are passed on to the
-- agent in the request's args; pgactive-go replicates every table.
CREATE OR REPLACE FUNCTION pgactive.pgactive_create_group(
    node_name text,
    node_dsn text,
    apply_delay integer DEFAULT NULL,
    replication_sets text[] DEFAULT ARRAY['default'])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pgactive._pgactive_begin_node(
        'create_group', node_name, node_dsn, NULL, current_database()::text,
        jsonb_build_object(
            'node_group', current_database()::text,
            'apply_delay', apply_delay,
            'replication_sets', to_jsonb(replication_sets)));
    PERFORM pgactive._pgactive_warn_tables();
END
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_create_group(text, text, integer, text[]) IS
'Make this database the first node of a new pgactive group; the agent does the work, pgactive_wait_for_node_ready waits for it';
REVOKE ALL ON FUNCTION pgactive.pgactive_create_group(text, text, integer, text[]) FROM PUBLIC;

-- pgactive's signature. apply_delay, replication_sets, the bypass_* flags and
-- data_only_node_init are passed on to the agent in the request's args;
-- bypass_user_tables_check and data_only_node_init also skip the check below
-- that the joining database holds no tables.
CREATE OR REPLACE FUNCTION pgactive.pgactive_join_group(
    node_name text,
    node_dsn text,
    join_using_dsn text,
    apply_delay integer DEFAULT NULL,
    replication_sets text[] DEFAULT ARRAY['default'],
    bypass_collation_check boolean DEFAULT false,
    bypass_node_identifier_creation boolean DEFAULT false,
    bypass_user_tables_check boolean DEFAULT false,
    data_only_node_init boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t record;
BEGIN
    -- A member already has tables: say what is really wrong first.
    SELECT n.node_name, n.node_status INTO t
    FROM pgactive.pgactive_nodes n, pgactive.pgactive_get_local_nodeid() i
    WHERE (n.node_sysid, n.node_timeline, n.node_dboid) = (i.sysid, i.timeline, i.dboid) AND n.node_status <> 'k';
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = 'this database is already a member of a pgactive group',
            DETAIL = format('It is node "%s" with status ''%s'' in pgactive.pgactive_nodes.', t.node_name, t.node_status),
            HINT = 'To leave the group, detach this node and run pgactive.pgactive_remove().';
    END IF;
    IF NOT coalesce(bypass_user_tables_check, false) AND NOT coalesce(data_only_node_init, false) THEN
        SELECT n.nspname, c.relname INTO t
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgactive')
          AND n.nspname NOT LIKE 'pg_toast%'
          AND n.nspname NOT LIKE 'pg_temp%'
        ORDER BY 1, 2
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = 'database joining pgactive group has existing user tables',
                DETAIL = format('Table %I.%I exists; the join copies the schema and data of the group into an empty database.', t.nspname, t.relname),
                HINT = 'Join from an empty database (CREATE DATABASE ...), or drop the tables first.';
        END IF;
    END IF;
    PERFORM pgactive._pgactive_begin_node(
        'join_group', node_name, node_dsn, join_using_dsn, NULL,
        jsonb_build_object(
            'apply_delay', apply_delay,
            'replication_sets', to_jsonb(replication_sets),
            'bypass_collation_check', bypass_collation_check,
            'bypass_node_identifier_creation', bypass_node_identifier_creation,
            'bypass_user_tables_check', bypass_user_tables_check,
            'data_only_node_init', data_only_node_init));
END
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_join_group(text, text, text, integer, text[], boolean, boolean, boolean, boolean) IS
'Join this (empty) database to the group of the node join_using_dsn connects to; the agent copies the data, pgactive_wait_for_node_ready waits for it';
REVOKE ALL ON FUNCTION pgactive.pgactive_join_group(text, text, text, integer, text[], boolean, boolean, boolean, boolean) FROM PUBLIC;

-- An interval as HH:MM:SS.ffffff, hours not wrapping at a day.
CREATE OR REPLACE FUNCTION pgactive._pgactive_format_duration(d interval)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
AS $fn$
    SELECT format('%s:%s:%s.%s',
                  lpad((us / 3600000000)::text, 2, '0'),
                  lpad((us / 60000000 % 60)::text, 2, '0'),
                  lpad((us / 1000000 % 60)::text, 2, '0'),
                  lpad((us % 1000000)::text, 6, '0'))
    FROM (SELECT greatest(round(extract(epoch FROM d) * 1000000), 0)::bigint AS us) s
$fn$;

-- Wait until this node is ready (status 'r'). timeout in seconds, 0 waits
-- forever. While the node copies its initial data, a NOTICE every
-- progress_interval seconds reports the progress the agent records in
-- pgactive_join_progress, and one NOTICE reports the end of the copy.
CREATE OR REPLACE FUNCTION pgactive.pgactive_wait_for_node_ready(
    timeout integer DEFAULT 0,
    progress_interval integer DEFAULT 60)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    poll constant float8 := 0.2;
    agent_grace constant interval := '15 seconds';
    started timestamptz := clock_timestamp();
    next_progress timestamptz;
    agent_missing_since timestamptz;
    restored_reported boolean := false;
    localid record;
    node record;
    req record;
    prog record;
BEGIN
    IF timeout IS NULL OR timeout < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = '"timeout" must be 0 (wait forever) or a number of seconds';
    END IF;
    IF progress_interval IS NULL OR progress_interval <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = '"progress_interval" must be a positive number of seconds';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('can only wait for the node in a READ COMMITTED transaction, not %s',
                             upper(current_setting('transaction_isolation')));
    END IF;
    PERFORM pgactive._pgactive_require_agent();

    SELECT * INTO localid FROM pgactive.pgactive_get_local_nodeid();
    next_progress := started + make_interval(secs => progress_interval);
    LOOP
        SELECT n.node_name, n.node_status INTO node
        FROM pgactive.pgactive_nodes n
        WHERE (n.node_sysid, n.node_timeline, n.node_dboid) = (localid.sysid, localid.timeline, localid.dboid);
        IF NOT FOUND THEN
            -- The agent undoes a create or join it could not carry out.
            SELECT r.request_id, r.request, r.state, r.error INTO req
            FROM pgactive.pgactive_requests r
            WHERE r.request IN ('create_group', 'join_group')
            ORDER BY r.request_id DESC
            LIMIT 1;
            IF FOUND AND req.state = 'failed' THEN
                RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                    MESSAGE = coalesce(req.error, format('the %s request failed', req.request)),
                    DETAIL = format('pgactive.pgactive_requests request_id %s (%s) failed; the agent undid it.',
                                    req.request_id, req.request),
                    HINT = format('Fix the cause and call pgactive.pgactive_%s again.', req.request);
            END IF;
            IF FOUND AND req.state IN ('pending', 'running') THEN
                -- The agent deletes the node row of a failed request before
                -- it records the failure: wait for its outcome.
                IF NOT pgactive.pgactive_is_agent_attached() THEN
                    PERFORM pgactive._pgactive_require_agent();
                END IF;
                IF timeout > 0 AND clock_timestamp() - started >= make_interval(secs => timeout) THEN
                    RAISE EXCEPTION USING
                        MESSAGE = format('the %s request did not finish within %s seconds', req.request, timeout);
                END IF;
                PERFORM pg_catalog.pg_sleep(poll);
                CONTINUE;
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = 'this database is not a pgactive node',
                HINT = 'Run pgactive.pgactive_create_group(...) or pgactive.pgactive_join_group(...) first.';
        END IF;

        SELECT * INTO prog FROM pgactive.pgactive_join_progress jp WHERE jp.node_name = node.node_name;
        IF FOUND THEN
            IF prog.finished_at IS NOT NULL THEN
                IF NOT restored_reported THEN
                    RAISE NOTICE '%', format('successfully restored database ''%s'' from node %s in %s',
                        coalesce(prog.dbname, current_database()::text), prog.source_node,
                        pgactive._pgactive_format_duration(prog.finished_at - coalesce(prog.started_at, prog.finished_at)));
                    restored_reported := true;
                END IF;
            ELSIF clock_timestamp() >= next_progress THEN
                IF coalesce(prog.total_bytes, 0) > 0 THEN
                    RAISE NOTICE '%', format('restoring database ''%s'', %s%% of %s MB complete',
                        coalesce(prog.dbname, current_database()::text),
                        least(greatest(coalesce(prog.copied_bytes, 0) * 100 / prog.total_bytes, 0), 100),
                        round(prog.total_bytes / 1048576.0));
                ELSE
                    RAISE NOTICE '%', format('restoring database ''%s'' from node %s (%s)',
                        coalesce(prog.dbname, current_database()::text), prog.source_node,
                        coalesce(prog.phase, 'starting'));
                END IF;
                next_progress := clock_timestamp() + make_interval(secs => progress_interval);
            END IF;
        END IF;

        IF node.node_status = 'r' THEN
            RETURN;
        END IF;
        IF node.node_status = 'k' THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = format('node "%s" is detached and will not become ready', node.node_name),
                HINT = 'Run pgactive.pgactive_remove() to clean it up, then create or join a group again.';
        END IF;

        SELECT r.request_id, r.request, r.state, r.error INTO req
        FROM pgactive.pgactive_requests r
        WHERE r.request IN ('create_group', 'join_group')
        ORDER BY r.request_id DESC
        LIMIT 1;
        IF FOUND AND req.state = 'failed' THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = coalesce(req.error, format('the %s request failed', req.request)),
                DETAIL = format('pgactive.pgactive_requests request_id %s (%s) failed; node "%s" has status ''%s''.',
                                req.request_id, req.request, node.node_name, node.node_status),
                HINT = 'Fix the cause, run pgactive.pgactive_detach_nodes and pgactive.pgactive_remove() on this node, and try again.';
        END IF;

        IF pgactive.pgactive_is_agent_attached() THEN
            agent_missing_since := NULL;
        ELSIF agent_missing_since IS NULL THEN
            agent_missing_since := clock_timestamp();
        ELSIF clock_timestamp() - agent_missing_since > agent_grace THEN
            PERFORM pgactive._pgactive_require_agent();
        END IF;

        IF timeout > 0 AND clock_timestamp() - started >= make_interval(secs => timeout) THEN
            RAISE EXCEPTION USING
                MESSAGE = format('node "%s" did not become ready within %s seconds; its status is ''%s''',
                                 node.node_name, timeout, node.node_status);
        END IF;
        PERFORM pg_catalog.pg_sleep(poll);
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_wait_for_node_ready(integer, integer) IS
'Wait until this node is ready, reporting the progress of its initial copy';
REVOKE ALL ON FUNCTION pgactive.pgactive_wait_for_node_ready(integer, integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgactive.pgactive_detach_nodes(p_nodes text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    unknown text;
    r record;
BEGIN
    IF p_nodes IS NULL OR cardinality(p_nodes) = 0 OR array_position(p_nodes, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'p_nodes must name at least one node, without NULLs';
    END IF;
    LOCK TABLE pgactive.pgactive_nodes IN SHARE ROW EXCLUSIVE MODE;

    SELECT string_agg(format('"%s"', u.nm), ', ' ORDER BY u.ord) INTO unknown
    FROM unnest(p_nodes) WITH ORDINALITY AS u(nm, ord)
    WHERE NOT EXISTS (SELECT 1 FROM pgactive.pgactive_nodes n WHERE n.node_name = u.nm);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'no_data_found',
            MESSAGE = format('no node named %s in pgactive.pgactive_nodes', unknown),
            HINT = 'SELECT node_name, node_status FROM pgactive.pgactive_nodes; lists the nodes.';
    END IF;

    FOR r IN SELECT n.node_name FROM pgactive.pgactive_nodes n
             WHERE n.node_name = ANY (p_nodes) AND n.node_status = 'k'
             ORDER BY n.node_name
    LOOP
        RAISE INFO 'node "%" is already detached', r.node_name;
    END LOOP;

    UPDATE pgactive.pgactive_nodes n SET node_status = 'k'
    WHERE n.node_name = ANY (p_nodes) AND n.node_status <> 'k';

    PERFORM pgactive._pgactive_request('detach_nodes',
        jsonb_build_object('nodes', to_jsonb(p_nodes)));
END
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_detach_nodes(text[]) IS
'Detach nodes from the group: marks them detached here, and the agent tells the group';
REVOKE ALL ON FUNCTION pgactive.pgactive_detach_nodes(text[]) FROM PUBLIC;

-- The same as stream.Token in Go: each byte outside [A-Za-z0-9_-] becomes '_'.
CREATE OR REPLACE FUNCTION pgactive._pgactive_token(s text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
AS $fn$
    SELECT CASE WHEN s = '' THEN '_' ELSE
        (SELECT string_agg(CASE WHEN c ~ '^[A-Za-z0-9_-]$' THEN c
                                ELSE repeat('_', octet_length(c)) END, '' ORDER BY i)
         FROM regexp_split_to_table(s, '') WITH ORDINALITY AS t(c, i))
    END
$fn$;

-- pgactive_<group>_, the start of the names earlier versions gave this
-- node's group's replication origins, pgactive_<group>_<node> and
-- pgactive_<group>_copy_<i> (apply.LegacyOriginName in Go), without the
-- database; NULL outside a group.
CREATE OR REPLACE FUNCTION pgactive._pgactive_legacy_origin_prefix()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT 'pgactive_' || pgactive._pgactive_token(coalesce(
        (SELECT n.node_group FROM pgactive.pgactive_nodes n, pgactive.pgactive_get_local_nodeid() i
         WHERE (n.node_sysid, n.node_timeline, n.node_dboid) = (i.sysid, i.timeline, i.dboid)),
        (SELECT n.node_group FROM pgactive.pgactive_nodes n
         WHERE n.node_group IS NOT NULL ORDER BY n.node_name LIMIT 1))) || '_'
$fn$;

-- Replication origins this database's agent applies under. Origins belong to
-- the whole cluster, not to a database, so only these are candidates: those
-- named pgactive_<this database's OID>_... (apply.OriginName and
-- apply.CopyOriginName in Go), the origins the agent reports in
-- pgactive_stats, and the legacy names of the other nodes and of the copy.
-- Legacy names are matched whole: their prefix would also match the origins
-- of another group on the cluster whose name starts with this one's and '_'.
CREATE OR REPLACE FUNCTION pgactive._pgactive_local_origins()
RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT ro.roname::text
    FROM pg_catalog.pg_replication_origin ro,
         (SELECT pgactive._pgactive_legacy_origin_prefix() AS legacy,
                 'pgactive_' || (SELECT d.oid FROM pg_catalog.pg_database d
                                 WHERE d.datname = pg_catalog.current_database()) || '_' AS own) p
    WHERE starts_with(ro.roname, p.own)
       OR ro.roname IN (SELECT s.origin_name FROM pgactive.pgactive_stats s)
       OR ro.roname IN (SELECT p.legacy || pgactive._pgactive_token(n.node_name)
                        FROM pgactive.pgactive_nodes n, pgactive.pgactive_get_local_nodeid() i
                        WHERE (n.node_sysid, n.node_timeline, n.node_dboid) IS DISTINCT FROM (i.sysid, i.timeline, i.dboid))
       OR (starts_with(ro.roname, p.legacy || 'copy_')
           AND substr(ro.roname, length(p.legacy || 'copy_') + 1) ~ '^[0-9]+$')
$fn$;

-- Remove pgactive from this node: its slot, replication origins, publication,
-- the foreign servers on pgactive_fdw, and the node rows; then tell the agent,
-- which deletes the node's NATS objects and stops. DROP EXTENSION pgactive
-- works afterwards.
CREATE OR REPLACE FUNCTION pgactive.pgactive_remove(force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    busy_wait constant interval := '10 seconds';
    localid record;
    node record;
    grp text;
    s record;
    o text;
    deadline timestamptz;
    servers text;
BEGIN
    LOCK TABLE pgactive.pgactive_nodes IN SHARE ROW EXCLUSIVE MODE;
    SELECT * INTO localid FROM pgactive.pgactive_get_local_nodeid();
    SELECT n.node_name, n.node_status, n.node_group INTO node
    FROM pgactive.pgactive_nodes n
    WHERE (n.node_sysid, n.node_timeline, n.node_dboid) = (localid.sysid, localid.timeline, localid.dboid);
    IF FOUND AND node.node_status <> 'k' THEN
        IF NOT coalesce(force, false) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = format('node "%s" is not detached (status ''%s''), not removing it', node.node_name, node.node_status),
                HINT = format('Detach it first with: SELECT pgactive.pgactive_detach_nodes(ARRAY[%L]); or use pgactive.pgactive_remove(force := true).', node.node_name);
        END IF;
        RAISE WARNING 'removing node "%", which is not detached (status ''%'')', node.node_name, node.node_status;
    END IF;
    grp := node.node_group;

    -- The slot(s) of this database: stop the walsender, then drop.
    FOR s IN SELECT rs.slot_name FROM pg_catalog.pg_replication_slots rs
             WHERE rs.database = current_database() AND starts_with(rs.slot_name::text, 'pgactive_')
    LOOP
        deadline := clock_timestamp() + busy_wait;
        LOOP
            BEGIN
                PERFORM pg_catalog.pg_terminate_backend(rs.active_pid)
                FROM pg_catalog.pg_replication_slots rs
                WHERE rs.slot_name = s.slot_name AND rs.active_pid IS NOT NULL
                  AND rs.active_pid <> pg_catalog.pg_backend_pid();
                PERFORM pg_catalog.pg_drop_replication_slot(s.slot_name);
                EXIT;
            EXCEPTION
                WHEN undefined_object THEN
                    EXIT; -- a temporary slot went away with its session
                WHEN object_in_use THEN
                    IF clock_timestamp() > deadline THEN
                        RAISE;
                    END IF;
                    PERFORM pg_catalog.pg_sleep(0.1);
            END;
        END LOOP;
    END LOOP;

    -- The replication origins the agent applies under. Its apply sessions
    -- hold them, so end those first.
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    PERFORM pg_catalog.pg_terminate_backend(a.pid)
    FROM pg_catalog.pg_stat_activity a
    WHERE a.datname = current_database()
      AND a.application_name LIKE 'pgactive:%:apply'
      AND a.pid <> pg_catalog.pg_backend_pid();
    FOR o IN SELECT pgactive._pgactive_local_origins() LOOP
        deadline := clock_timestamp() + busy_wait;
        LOOP
            BEGIN
                PERFORM pg_catalog.pg_replication_origin_drop(o);
                EXIT;
            EXCEPTION
                WHEN undefined_object THEN
                    EXIT;
                WHEN object_in_use THEN
                    -- This database's apply sessions are gone: the holder is
                    -- a session of another database on this cluster.
                    IF clock_timestamp() > deadline THEN
                        RAISE WARNING 'replication origin "%" is in use by another session, not dropping it', o;
                        EXIT;
                    END IF;
                    PERFORM pg_catalog.pg_sleep(0.1);
            END;
        END LOOP;
    END LOOP;
    -- Origins named like this group's legacy ones, for no other node this
    -- database knows, may be another group's or another database's on this
    -- cluster: named, not dropped.
    FOR o IN SELECT ro.roname::text FROM pg_catalog.pg_replication_origin ro
             WHERE starts_with(ro.roname, pgactive._pgactive_legacy_origin_prefix())
               AND ro.roname NOT IN (SELECT pgactive._pgactive_local_origins())
             ORDER BY ro.roname LOOP
        RAISE NOTICE 'replication origin "%" is named like this group''s origins but for no node this database knows, so it may belong to another group on this cluster and was kept; if it was this node''s, drop it with: SELECT pg_replication_origin_drop(%L);', o, o;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = 'pgactive_publication') THEN
        DROP PUBLICATION pgactive_publication;
    END IF;

    -- Servers on pgactive_fdw would keep DROP EXTENSION pgactive from working.
    SELECT string_agg(quote_ident(fs.srvname), ', ' ORDER BY fs.srvname) INTO servers
    FROM pg_catalog.pg_foreign_server fs
    JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = fs.srvfdw
    WHERE w.fdwname = 'pgactive_fdw';
    IF servers IS NOT NULL THEN
        EXECUTE 'DROP SERVER ' || servers || ' CASCADE';
        RAISE NOTICE 'dropped foreign server(s) % on pgactive_fdw and their user mappings', servers;
    END IF;

    -- The tombstone triggers the agent put on replicated tables.
    FOR o IN SELECT format('DROP TRIGGER pgactive_tombstone ON %s', t.tgrelid::regclass)
             FROM pg_catalog.pg_trigger t WHERE t.tgname = 'pgactive_tombstone' LOOP
        EXECUTE o;
    END LOOP;

    DELETE FROM pgactive.pgactive_nodes;
    DELETE FROM pgactive.pgactive_tombstones;
    DELETE FROM pgactive.pgactive_join_progress;
    DELETE FROM pgactive.pgactive_lag;
    DELETE FROM pgactive.pgactive_stats;
    UPDATE pgactive.pgactive_requests r
    SET state = 'failed', error = 'cancelled by pgactive_remove()', finished_at = now()
    WHERE r.state = 'pending';

    PERFORM pgactive._pgactive_request('remove',
        jsonb_build_object('node_name', node.node_name, 'node_group', grp, 'force', coalesce(force, false)));

    RAISE NOTICE 'pgactive removed from this node; you can now DROP EXTENSION pgactive';
END
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_remove(boolean) IS
'Remove pgactive from this detached node: slot, replication origins, publication, foreign servers on pgactive_fdw, node rows';
REVOKE ALL ON FUNCTION pgactive.pgactive_remove(boolean) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Monitoring
-------------------------------------------------------------------------------

-- One row per replication path of the group, as the agent last reported it.
-- active is false when the agent has not refreshed the row for 30 seconds.
-- last_error, after pgactive's columns, says why the target cannot apply the
-- origin's next transaction (NULL while it can).
DO $do$
BEGIN
    -- A schema made by an earlier CreateSchema has the function without
    -- last_error: CREATE OR REPLACE cannot change its result columns.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
               WHERE p.oid = pg_catalog.to_regprocedure('pgactive.pgactive_get_replication_lag_info()')
                 AND NOT 'last_error' = ANY (p.proargnames)) THEN
        DROP FUNCTION pgactive.pgactive_get_replication_lag_info();
    END IF;
END
$do$;
CREATE OR REPLACE FUNCTION pgactive.pgactive_get_replication_lag_info(
    OUT node_name text,
    OUT node_sysid text,
    OUT application_name text,
    OUT slot_name text,
    OUT active boolean,
    OUT active_pid integer,
    OUT pending_wal_decoding bigint,
    OUT pending_wal_to_apply bigint,
    OUT restart_lsn pg_lsn,
    OUT confirmed_flush_lsn pg_lsn,
    OUT sent_lsn pg_lsn,
    OUT write_lsn pg_lsn,
    OUT flush_lsn pg_lsn,
    OUT replay_lsn pg_lsn,
    OUT pending_messages bigint,
    OUT lag_seconds double precision,
    OUT last_error text)
RETURNS SETOF record
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(l.node_name, l.target_node), l.node_sysid, l.application_name, l.slot_name,
           l.active AND l.updated_at > clock_timestamp() - interval '30 seconds',
           l.active_pid, l.pending_wal_decoding, l.pending_wal_to_apply,
           l.restart_lsn, l.confirmed_flush_lsn, l.sent_lsn, l.write_lsn, l.flush_lsn, l.replay_lsn,
           l.pending_messages, l.lag_seconds, nullif(l.last_error, '')
    FROM pgactive.pgactive_lag l
    ORDER BY l.origin_node, l.target_node
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_get_replication_lag_info() IS
'Replication lag of every origin -> target path of the group';
REVOKE ALL ON FUNCTION pgactive.pgactive_get_replication_lag_info() FROM PUBLIC;

-- Apply counters per origin node. rep_node_id and rilocalid are the OID of
-- the replication origin, riremoteid its name.
CREATE OR REPLACE FUNCTION pgactive.pgactive_get_stats(
    OUT rep_node_id oid,
    OUT rilocalid oid,
    OUT riremoteid text,
    OUT nr_commit int8,
    OUT nr_rollback int8,
    OUT nr_insert int8,
    OUT nr_insert_conflict int8,
    OUT nr_update int8,
    OUT nr_update_conflict int8,
    OUT nr_delete int8,
    OUT nr_delete_conflict int8,
    OUT nr_disconnect int8)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT ro.roident, ro.roident, coalesce(s.origin_name, s.origin_node),
           s.nr_commit, s.nr_rollback, s.nr_insert, s.nr_insert_conflict,
           s.nr_update, s.nr_update_conflict, s.nr_delete, s.nr_delete_conflict,
           s.nr_disconnect
    FROM pgactive.pgactive_stats s
    LEFT JOIN pg_catalog.pg_replication_origin ro ON ro.roname = s.origin_name
    ORDER BY s.origin_node
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_get_stats() IS
'Apply counters of this node per origin node (nr_rollback counts failed apply transactions)';
REVOKE ALL ON FUNCTION pgactive.pgactive_get_stats() FROM PUBLIC;

-------------------------------------------------------------------------------
-- Control
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgactive._pgactive_set_apply_paused(p_paused boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    INSERT INTO pgactive.pgactive_apply_state AS st (onerow, paused, updated_at)
    VALUES (true, p_paused, now())
    ON CONFLICT (onerow) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at;
    PERFORM pg_catalog.pg_notify('pgactive_requests', 'apply');
END
$fn$;

CREATE OR REPLACE FUNCTION pgactive.pgactive_apply_pause()
RETURNS void
LANGUAGE sql VOLATILE
AS $fn$ SELECT pgactive._pgactive_set_apply_paused(true) $fn$;
COMMENT ON FUNCTION pgactive.pgactive_apply_pause() IS
'Pause applying changes from other nodes on this node (they wait in JetStream)';
REVOKE ALL ON FUNCTION pgactive.pgactive_apply_pause() FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgactive.pgactive_apply_resume()
RETURNS void
LANGUAGE sql VOLATILE
AS $fn$ SELECT pgactive._pgactive_set_apply_paused(false) $fn$;
COMMENT ON FUNCTION pgactive.pgactive_apply_resume() IS 'Resume applying changes from other nodes on this node';
REVOKE ALL ON FUNCTION pgactive.pgactive_apply_resume() FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgactive.pgactive_is_apply_paused()
RETURNS boolean
LANGUAGE sql STABLE
AS $fn$ SELECT coalesce((SELECT st.paused FROM pgactive.pgactive_apply_state st), false) $fn$;

-- Ask the agent to skip the changes of one origin node up to and including
-- upto_lsn (its commit LSN), for an operator getting past a change that
-- cannot be applied.
CREATE OR REPLACE FUNCTION pgactive.pgactive_skip_changes(
    from_sysid text,
    from_timeline oid,
    from_dboid oid,
    upto_lsn pg_lsn)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    origin text;
BEGIN
    IF from_sysid IS NULL OR from_timeline IS NULL OR from_dboid IS NULL OR upto_lsn IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'from_sysid, from_timeline, from_dboid and upto_lsn must not be NULL';
    END IF;
    IF (from_sysid, from_timeline, from_dboid) = (SELECT i.sysid, i.timeline, i.dboid FROM pgactive.pgactive_get_local_nodeid() i) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'cannot skip changes of the local node';
    END IF;
    SELECT n.node_name INTO origin FROM pgactive.pgactive_nodes n
    WHERE (n.node_sysid, n.node_timeline, n.node_dboid) = (from_sysid, from_timeline, from_dboid);
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'no_data_found',
            MESSAGE = format('no node (%s,%s,%s) in pgactive.pgactive_nodes', from_sysid, from_timeline, from_dboid);
    END IF;
    PERFORM pgactive._pgactive_request('skip_changes', jsonb_build_object(
        'node_name', origin,
        'from_sysid', from_sysid,
        'from_timeline', from_timeline::bigint,
        'from_dboid', from_dboid::bigint,
        'upto_lsn', upto_lsn::text));
END
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_skip_changes(text, oid, oid, pg_lsn) IS
'Have the agent skip the changes of an origin node up to a commit LSN';
REVOKE ALL ON FUNCTION pgactive.pgactive_skip_changes(text, oid, oid, pg_lsn) FROM PUBLIC;

-- Run a DDL command here and have the agent run it on the other nodes. As in
-- pgactive, it runs with an empty search_path: qualify every name.
CREATE OR REPLACE FUNCTION pgactive.pgactive_replicate_ddl_command(cmd text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = ''
AS $fn$
BEGIN
    IF cmd IS NULL OR btrim(cmd) = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'cmd must not be empty';
    END IF;
    EXECUTE cmd;
    -- Decoded in this transaction's place in the stream: every other node
    -- runs the command between the same data changes.
    PERFORM pg_catalog.pg_logical_emit_message(true, 'pgactive:ddl', cmd);
END
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_replicate_ddl_command(text) IS
'Run a DDL command on this node and, through the agent, on every other node';
REVOKE ALL ON FUNCTION pgactive.pgactive_replicate_ddl_command(text) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Global ids
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgactive._pgactive_local_seq_id()
RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT n.node_seq_id::integer
    FROM pgactive.pgactive_nodes n, pgactive.pgactive_get_local_nodeid() i
    WHERE (n.node_sysid, n.node_timeline, n.node_dboid) = (i.sysid, i.timeline, i.dboid)
$fn$;

-- A bigint unique across the group, from a local sequence:
--
--   bit 63      0 (ids are positive)
--   bits 62-22  milliseconds since 2016-10-07 00:00:00 UTC (41 bits, until 2086)
--   bits 21-12  node_seq_id of this node (10 bits, 0-1023)
--   bits 11-0   nextval of the sequence modulo 4096 (12 bits)
--
-- Ids of one node grow with time; two ids can only collide if one node draws
-- more than 4096 values in one millisecond or its clock goes back.
-- (pgactive itself packs 40 + 10 + 14 bits.)
CREATE OR REPLACE FUNCTION pgactive.pgactive_snowflake_id_nextval(regclass)
RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    epoch_ms constant bigint := 1475798400000; -- 2016-10-07 00:00:00 UTC
    node integer := pgactive._pgactive_local_seq_id();
    seq bigint;
    ms bigint;
BEGIN
    IF node IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = 'node sequence ID not allocated',
            DETAIL = 'This node has no node_seq_id in pgactive.pgactive_nodes.',
            HINT = 'The agent assigns it when the node joins a group: check that the node is ready.';
    END IF;
    IF node < 0 OR node > 1023 THEN
        RAISE EXCEPTION 'node_seq_id % is out of range 0 .. 1023', node;
    END IF;
    seq := nextval($1);
    IF seq < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = format('sequence %s produced a negative value', $1),
            DETAIL = 'Sequences used by pgactive_snowflake_id_nextval must produce positive values.';
    END IF;
    ms := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - epoch_ms;
    IF ms < 0 OR ms >= (1::bigint << 41) THEN
        RAISE EXCEPTION 'cannot generate an id: the clock (%) is outside the id''s time range', clock_timestamp();
    END IF;
    RETURN (ms << 22) | (node::bigint << 12) | (seq % 4096);
END
$fn$;
COMMENT ON FUNCTION pgactive.pgactive_snowflake_id_nextval(regclass) IS
'Id unique across the group: 41 bits of milliseconds, 10 bits of node_seq_id, 12 bits of the local sequence';
