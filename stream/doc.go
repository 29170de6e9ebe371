// Package stream is the transport stage of pgactive-go: everything that touches
// NATS JetStream.
//
// It holds the one definition of the wire format (Txn, Encode, Decode), the
// names of streams, subjects, consumers and the key-value bucket, the set-up of
// those objects, publishing with de-duplication ids, and the embedded server.
//
// Inputs are decoded transactions from capture; outputs are JetStream messages
// consumed by apply. Invariants: a transaction's message id is always
// "<origin sysid>:<commit LSN>" (plus ":<chunk>" for chunks after the first),
// so a re-published transaction is dropped by the server's de-duplication;
// Decode never panics and rejects unknown versions.
package stream
