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
// a message that cannot be decoded is parked, counted and reported.
package apply
