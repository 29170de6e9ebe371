// Package stream is the transport stage of pgactive-go: everything that touches
// NATS JetStream.
//
// It holds the one definition of the wire format (Txn, Encode, Decode), the
// names of streams, subjects, consumers and the key-value bucket, the set-up of
// those objects, publishing with de-duplication ids, and the embedded server.
//
// Inputs are decoded transactions from capture; outputs are JetStream messages
// consumed by apply, each holding one or more whole transactions of one origin
// in commit order, or one chunk of a large transaction (Batch, DecodeMsg).
// Invariants: a message's id is "<origin sysid>:<commit LSN>" of its last
// transaction (plus ":<chunk>" for chunks after the first), so a message
// published twice is dropped by the server's de-duplication; decoding never
// panics and rejects unknown versions.
package stream
