// Package node is the agent of one database taking part in a group: it checks
// the database, registers the node in the group's key-value bucket, and runs
// the node's capture worker and one apply worker per other member, starting
// and stopping them as membership changes.
//
// Inputs: the node's DSN, group and name, a NATS connection. Outputs: running
// workers and the node's member record. Invariant: before this node's capture
// publishes anything, every known member has a consumer on this node's
// stream, and this node has one on every member's stream, so no member
// misses a transaction.
package node
