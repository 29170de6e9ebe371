// Package extension is the SQL surface of pgactive-go: the pgactive extension's
// control file and install script, embedded in the binary, and the two ways to
// put them into a database.
//
// Stage: none of the data flow. The objects it creates are the contract between
// users (pgactive's quick start, typed as is) and the agent:
//
//   - schema pgactive with pgactive's functions, tables and types: the lifecycle
//     functions (pgactive_create_group, pgactive_join_group,
//     pgactive_wait_for_node_ready, pgactive_detach_nodes, pgactive_remove),
//     pgactive_nodes, pgactive_conflict_history, the lag, stats and apply-pause
//     functions, pgactive_snowflake_id_nextval;
//   - the foreign data wrapper pgactive_fdw, whose servers and user mappings hold
//     the nodes' connection data and credentials.
//
// Inputs: a PostgreSQL server, either its share directory ([Install], after which
// users run CREATE EXTENSION pgactive) or a superuser connection ([CreateSchema],
// for servers whose files cannot be changed).
//
// Outputs: the SQL functions only validate, record and queue. A request is a row
// in pgactive.pgactive_requests plus NOTIFY pgactive_requests with the request_id
// as payload; the agent carries it out and records its state there. The agent
// keeps pgactive_nodes, pgactive_join_progress, pgactive_lag and pgactive_stats
// up to date, and watches pgactive_apply_state.
//
// Invariants: a lifecycle function that fails changes nothing (it runs in the
// caller's transaction); error messages never quote a DSN, which may hold a
// password; the script is idempotent, so [CreateSchema] can run at every start.
package extension
