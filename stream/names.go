package stream

import (
	"strings"
)

// Token returns s made safe for use as one token of a NATS subject and as part
// of a stream, consumer or bucket name: ASCII letters, digits, '-' and '_' are
// kept, every other byte becomes '_'. An empty input becomes "_".
func Token(s string) string {
	if s == "" {
		return "_"
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// StreamName is the JetStream stream that holds the transactions of node in group.
func StreamName(group, node string) string {
	return "PGACTIVE_" + Token(group) + "_" + Token(node)
}

// SubjectPrefix is the subject space of node's stream: pgactive.<g>.<node>.
func SubjectPrefix(group, node string) string {
	return "pgactive." + Token(group) + "." + Token(node)
}

// TxnSubject is the subject a transaction of node is published on.
func TxnSubject(group, node string) string {
	return SubjectPrefix(group, node) + ".txn"
}

// ConsumerName is the durable consumer through which target applies an origin's stream.
func ConsumerName(target string) string {
	return "apply_" + Token(target)
}

// BucketName is the key-value bucket holding the group's membership, state and lag rows.
func BucketName(group string) string {
	return "PGACTIVE_" + Token(group)
}

// ParkedStreamName is the stream that keeps messages apply could not decode.
func ParkedStreamName(group string) string {
	return "PGACTIVE_" + Token(group) + "_PARKED"
}

// ParkedSubject is where a message from origin that target could not decode is kept.
func ParkedSubject(group, origin, target string) string {
	return "pgactive_parked." + Token(group) + "." + Token(origin) + "." + Token(target)
}

// NodeKey is the KV key of a member's record.
func NodeKey(node string) string { return "nodes." + Token(node) }

// LagKey is the KV key of the lag row of the origin → target path.
func LagKey(origin, target string) string { return "lag." + Token(origin) + "." + Token(target) }
