// Package conflicts is the decision core of the apply stage: for one incoming
// row change of a remote transaction it decides what the apply worker must do,
// given the local version of the row with the same primary key.
//
// It does no I/O, reads no clock, logs nothing and holds no state, so that
// every node reaches the same decision from the same information.
//
// Inputs: the local Version of the row (exists, or deleted and remembered by a
// tombstone, or unknown) with the commit time and origin of its last writer;
// the incoming Change (operation, the origin's commit time, the origin node,
// whether the new row is complete); the local node's ID.
//
// Outputs: a Decision (the Action for apply, whether it is a conflict, its
// pgactive type and resolution, whether to record a tombstone), and for
// recording and returning conflicts a *Conflict error that matches the
// sentinel of its type with errors.Is.
//
// # Rules
//
// A change supersedes the local version when it comes from the same origin, or
// when it Wins: later commit time, ties broken by the higher node ID (sysid,
// then database OID). Then:
//
//	change  local row                 action          conflict        resolution
//	insert  none / older tombstone    ApplyAsIs       -
//	insert  newer tombstone           Skip            update_delete   skip_change
//	insert  row, same origin          ApplyAsUpdate   -
//	insert  row, change wins          ApplyAsUpdate   insert_insert   keep_remote
//	insert  row, local wins           Keep            insert_insert   keep_local
//	update  row, same origin          ApplyAsIs       -
//	update  row, change wins          ApplyAsIs       update_update   keep_remote
//	update  row, local wins           Keep            update_update   keep_local
//	update  none / older tombstone    ApplyAsInsert   update_delete   apply_change
//	update  newer tombstone           Skip            update_delete   skip_change
//	delete  row, change wins          ApplyAsIs       -                             + tombstone
//	delete  row, local wins           Keep            update_delete   keep_local
//	delete  none / tombstone          Skip            delete_delete   skip_change   + tombstone if newer
//
// An insert or update that would have to create the row (ApplyAsIs of an
// insert, ApplyAsInsert) but whose new row is not complete (Change.FullRow is
// false: unchanged TOAST values) decides Retry with resolution
// unhandled_tx_abort: the row must not be lost and cannot be built, so the
// transaction is retried later (the missing insert may arrive from another
// origin meanwhile) and stays visible in lag and metrics until it can be
// applied or an operator skips it. Abort gives the decision for a transaction
// that fails with an error: Retry, recorded as unhandled_tx_abort.
//
// # Invariant
//
// If every node applies each origin's changes once and in commit order, records
// a tombstone for every delete (its own and applied ones) and commit times of
// causally later writes are later, then after writes stop every node holds, for
// each key, the change with the greatest (commit time, origin), and a key whose
// greatest change is a delete is absent: the property test checks this against
// a naive reference over random histories and delivery orders.
//
// # What the caller must provide
//
//   - The row's version from pg_xact_commit_timestamp_origin(xmin), the roident
//     mapped to the node's ID (0, a local write, may be passed as is). Lock the
//     row while deciding (SELECT ... FOR UPDATE) so no local write slips in.
//   - For a row already written earlier in the same remote transaction, whose
//     xmin is not committed yet, the change's own commit time and origin.
//   - Tombstones for every delete of a replicated row, local or applied, written
//     in the same transaction as the delete (so a local delete needs a trigger or
//     equivalent; a capture-side record would come too late), including the old
//     key of an update that changes the primary key. A tombstone row in a side
//     table gets its version from its own xmin, like a user row. Keep tombstones
//     until, from every other node, a transaction with a later commit time has
//     been applied locally; then no older change can still arrive.
//   - An update that changes the primary key is decided as a delete of the old
//     key followed by an insert of the new one, both with the change's commit
//     time and origin.
//   - Remote transactions committed one by one with their own origin commit
//     time (pg_replication_origin_xact_setup), so applied rows carry it.
//
// The apply side should warn when FutureCommit reports a remote commit time
// ahead of its clock; see docs/conflicts.md for what clock skew does.
package conflicts
