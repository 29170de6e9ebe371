// Package capture is the first stage of pgactive-go: it reads a node's own
// committed transactions from PostgreSQL logical decoding and publishes them
// to the node's JetStream stream.
//
// Input: the pgoutput stream of one logical replication slot over a
// publication FOR ALL TABLES. Output: messages on the node's subject, each
// holding the whole transactions decoded at once (up to 256, or ChunkSize
// bytes) or one chunk of a large transaction, with the de-duplication id
// "<sysid>:<commit LSN>" of the last.
//
// Invariants: transactions that carry a replication origin were applied from
// another node and are dropped here, so nothing loops; changes to the
// pgactive schema are never published; the slot's confirmed position advances
// only to the end of transactions JetStream has acknowledged, so a crash of
// the agent, NATS or PostgreSQL replays at most what may not have been
// stored; a new session skips what the stream holds already (stored.go), and
// the stream's de-duplication drops the rest of a replay.
package capture
