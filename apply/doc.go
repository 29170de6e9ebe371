// Package apply is the last stage of pgactive-go: it applies the transactions
// of one origin node to the local database.
//
// Input: the origin's JetStream stream through the durable consumer
// apply_<target>. Output: local commits made inside a replication-origin
// session, so that each carries the origin's commit time and origin id (and
// capture on this node drops it: no loops), and conflict history rows.
//
// Invariants: transactions apply in the origin's commit order, each once: the
// origin's position is recorded atomically with the local commit
// (pg_replication_origin_xact_setup) and anything at or below it is skipped;
// JetStream acknowledgements only cover transactions whose local commit is
// flushed; a failing transaction is retried with backoff, never skipped;
// a message that cannot be decoded is parked, counted and reported. Rows are
// found by this node's primary key: an update or delete of a table without
// one is refused, not guessed. An error caused by a table that differs from
// the origin's comes back as a *SchemaError that names the fix, in the
// conflict history and the worker's Status.LastError alike.
package apply
