package stream

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"
)

// WireVersion is the version of the wire format this build writes. It reads
// MinWireVersion to WireVersion: version 1 bodies hold one transaction or
// chunk; version 2 bodies may hold several whole transactions (batch.go).
const (
	WireVersion    = 2
	MinWireVersion = 1
)

// Message headers (DESIGN §5). They repeat what the body says so that
// `nats stream view` is readable without decoding the body.
const (
	HeaderMsgID      = "Nats-Msg-Id"
	HeaderOrigin     = "Pgactive-Origin"
	HeaderCommitLSN  = "Pgactive-Commit-Lsn"
	HeaderCommitTime = "Pgactive-Commit-Time"
	HeaderTables     = "Pgactive-Tables"
	HeaderChunk      = "Pgactive-Chunk"
	HeaderLastChunk  = "Pgactive-Last-Chunk"
)

// ErrMalformed is wrapped by every error Decode returns for a body that is not
// a transaction of a known version.
var ErrMalformed = errors.New("malformed transaction message")

// Op is the kind of a row change.
type Op uint8

// The row change kinds.
const (
	OpInsert   Op = 'I'
	OpUpdate   Op = 'U'
	OpDelete   Op = 'D'
	OpTruncate Op = 'T'
	OpMessage  Op = 'M' // a transactional logical decoding message, such as replicated DDL
)

// PrefixDDL is the logical decoding message prefix of a DDL command to run on
// every node (pgactive_replicate_ddl_command).
const PrefixDDL = "pgactive:ddl"

func (o Op) String() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpTruncate:
		return "truncate"
	case OpMessage:
		return "message"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Truncate option flags, as pgoutput sends them.
const (
	TruncateCascade         uint8 = 1
	TruncateRestartIdentity uint8 = 2
)

// Column describes one published column of a relation.
type Column struct {
	Name    string `msgpack:"n"`
	TypeOID uint32 `msgpack:"t"`
	Key     bool   `msgpack:"k,omitempty"` // part of the replica identity
}

// Relation is a table as the origin published it. Changes refer to relations
// by their index in Txn.Relations, so column names travel once per message.
type Relation struct {
	Schema  string   `msgpack:"s"`
	Table   string   `msgpack:"t"`
	Columns []Column `msgpack:"c"`
}

// QualifiedName is schema.table, unquoted, for logs and headers.
func (r *Relation) QualifiedName() string { return r.Schema + "." + r.Table }

// DatumKind says what a Datum holds.
type DatumKind uint8

// The datum kinds.
const (
	DatumText      DatumKind = iota // Data holds the value in PostgreSQL's text format
	DatumNull                       // SQL NULL
	DatumUnchanged                  // an unchanged TOASTed value the origin did not send
)

// Datum is one column value.
type Datum struct {
	Kind DatumKind
	Data []byte
}

// Tuple is a row: one Datum per column of its relation, in column order.
type Tuple []Datum

// EncodeMsgpack writes a tuple as an array whose elements are nil (NULL),
// false (unchanged TOAST value) or binary (text-format value).
func (t Tuple) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeArrayLen(len(t)); err != nil {
		return err
	}
	for _, d := range t {
		var err error
		switch d.Kind {
		case DatumNull:
			err = enc.EncodeNil()
		case DatumUnchanged:
			err = enc.EncodeBool(false)
		default:
			if d.Data == nil {
				err = enc.EncodeBytesLen(0) // an empty value, not NULL
			} else {
				err = enc.EncodeBytes(d.Data)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// DecodeMsgpack reads what EncodeMsgpack wrote.
func (t *Tuple) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < 0 {
		*t = nil
		return nil
	}
	out := make(Tuple, 0, min(n, 1600)) // PostgreSQL allows at most 1600 columns
	for i := 0; i < n; i++ {
		code, err := dec.PeekCode()
		if err != nil {
			return err
		}
		switch {
		case code == 0xc0: // nil
			if err := dec.DecodeNil(); err != nil {
				return err
			}
			out = append(out, Datum{Kind: DatumNull})
		case code == 0xc2 || code == 0xc3: // false / true
			if _, err := dec.DecodeBool(); err != nil {
				return err
			}
			out = append(out, Datum{Kind: DatumUnchanged})
		default:
			b, err := dec.DecodeBytes()
			if err != nil {
				return err
			}
			if b == nil {
				b = []byte{}
			}
			out = append(out, Datum{Kind: DatumText, Data: b})
		}
	}
	*t = out
	return nil
}

// Change is one row change, or a truncate of one or more relations.
type Change struct {
	Op  Op  `msgpack:"o"`
	Rel int `msgpack:"r"` // index into Txn.Relations (insert, update, delete)
	// New is the new row (insert, update).
	New Tuple `msgpack:"n,omitempty"`
	// Old is the old key (replica identity columns; others NULL) or, with
	// OldFull, the whole old row. Empty for an update whose key did not change.
	Old     Tuple `msgpack:"x,omitempty"`
	OldFull bool  `msgpack:"f,omitempty"`
	// Truncated lists relation indexes for a truncate; TruncateFlags holds
	// TruncateCascade and TruncateRestartIdentity.
	Truncated     []int `msgpack:"tr,omitempty"`
	TruncateFlags uint8 `msgpack:"tf,omitempty"`
	// Prefix and Content are a message's (OpMessage).
	Prefix  string `msgpack:"p,omitempty"`
	Content []byte `msgpack:"m,omitempty"`
}

// Txn is one committed transaction of an origin node, or one chunk of it.
// A transaction too large for one message is split into chunks 0..n with the
// same CommitLSN; only the last has Last set. Every chunk carries the
// relations its changes refer to.
type Txn struct {
	V           int           `msgpack:"v"`
	Origin      string        `msgpack:"on"`
	OriginSysID uint64        `msgpack:"os"`
	XID         uint32        `msgpack:"x"`
	CommitLSN   pglogrepl.LSN `msgpack:"l"`
	EndLSN      pglogrepl.LSN `msgpack:"e"`
	CommitTime  int64         `msgpack:"ct"` // µs since the Unix epoch
	Chunk       int           `msgpack:"ch,omitempty"`
	Last        bool          `msgpack:"la"`
	Relations   []Relation    `msgpack:"rs"`
	Changes     []Change      `msgpack:"cs"`
}

// Time is the origin's commit time.
func (t *Txn) Time() time.Time { return time.UnixMicro(t.CommitTime).UTC() }

// MsgID is the de-duplication id of this message: "<sysid>:<commit LSN>" and,
// for chunks after the first, ":<chunk>".
func (t *Txn) MsgID() string {
	id := strconv.FormatUint(t.OriginSysID, 10) + ":" + t.CommitLSN.String()
	if t.Chunk > 0 {
		id += ":" + strconv.Itoa(t.Chunk)
	}
	return id
}

// Encode returns the msgpack body of t, stamped with WireVersion: the bytes
// msgpack.Marshal writes for t, without its reflection (see codec.go).
func Encode(t *Txn) ([]byte, error) {
	t.V = WireVersion
	n, err := encodedSize(t)
	if err != nil {
		return nil, fmt.Errorf("encode transaction %s: %w", t.MsgID(), err)
	}
	return appendTxn(make([]byte, 0, n), t), nil
}

// Decode parses a body written by Encode, or the same values in any msgpack
// encoding, and checks that it is internally consistent. It never panics and
// allocates at most a small multiple of len(b); every error wraps
// ErrMalformed. The transaction does not alias b.
func Decode(b []byte) (t *Txn, err error) {
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	out, err := decodeTxn(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := out.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return out, nil
}

func (t *Txn) validate() error {
	if t.V < MinWireVersion || t.V > WireVersion {
		return fmt.Errorf("wire version %d, this build reads %d to %d", t.V, MinWireVersion, WireVersion)
	}
	if t.Origin == "" || t.OriginSysID == 0 || t.CommitLSN == 0 {
		return errors.New("origin, origin sysid and commit LSN are required")
	}
	if t.Chunk < 0 {
		return fmt.Errorf("negative chunk %d", t.Chunk)
	}
	for i := range t.Relations {
		r := &t.Relations[i]
		if r.Table == "" || len(r.Columns) == 0 {
			return fmt.Errorf("relation %d has no name or no columns", i)
		}
	}
	for i := range t.Changes {
		if err := t.validateChange(&t.Changes[i]); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
	}
	return nil
}

func (t *Txn) validateChange(c *Change) error {
	if c.Op == OpMessage {
		if c.Prefix == "" {
			return errors.New("message without prefix")
		}
		return nil
	}
	if c.Op == OpTruncate {
		if len(c.Truncated) == 0 {
			return errors.New("truncate of no relation")
		}
		for _, r := range c.Truncated {
			if r < 0 || r >= len(t.Relations) {
				return fmt.Errorf("relation index %d out of range", r)
			}
		}
		return nil
	}
	if c.Rel < 0 || c.Rel >= len(t.Relations) {
		return fmt.Errorf("relation index %d out of range", c.Rel)
	}
	n := len(t.Relations[c.Rel].Columns)
	switch c.Op {
	case OpInsert:
		if len(c.New) != n {
			return fmt.Errorf("insert has %d values for %d columns", len(c.New), n)
		}
	case OpUpdate:
		if len(c.New) != n || (len(c.Old) != 0 && len(c.Old) != n) {
			return fmt.Errorf("update has %d/%d values for %d columns", len(c.New), len(c.Old), n)
		}
	case OpDelete:
		if len(c.Old) != n {
			return fmt.Errorf("delete has %d values for %d columns", len(c.Old), n)
		}
	default:
		return fmt.Errorf("unknown op %d", c.Op)
	}
	return nil
}

// Headers of a parked message.
const (
	HeaderParkedSubject = "Pgactive-Parked-Subject"
	HeaderParkedSeq     = "Pgactive-Parked-Seq"
	HeaderParkedError   = "Pgactive-Parked-Error"
)

// ParkedMsg wraps a message apply could not decode, to keep it in the parked
// stream with where it came from and why it was parked.
func ParkedMsg(group, origin, target string, seq uint64, subject string, data []byte, cause error) *nats.Msg {
	m := nats.NewMsg(ParkedSubject(group, origin, target))
	m.Data = data
	m.Header.Set(HeaderParkedSubject, subject)
	m.Header.Set(HeaderParkedSeq, strconv.FormatUint(seq, 10))
	m.Header.Set(HeaderParkedError, cause.Error())
	m.Header.Set(HeaderMsgID, "parked:"+Token(origin)+":"+Token(target)+":"+strconv.FormatUint(seq, 10))
	return m
}

// ParseMsgID splits a message id made by Txn.MsgID. ok is false for ids of
// another form.
func ParseMsgID(id string) (sysid uint64, lsn pglogrepl.LSN, chunk int, ok bool) {
	parts := strings.Split(id, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, 0, 0, false
	}
	sysid, err := strconv.ParseUint(parts[0], 10, 64)
	if err != nil {
		return 0, 0, 0, false
	}
	if lsn, err = pglogrepl.ParseLSN(parts[1]); err != nil {
		return 0, 0, 0, false
	}
	if len(parts) == 3 {
		if chunk, err = strconv.Atoi(parts[2]); err != nil || chunk <= 0 {
			return 0, 0, 0, false
		}
	}
	if (&Txn{OriginSysID: sysid, CommitLSN: lsn, Chunk: chunk}).MsgID() != id {
		return 0, 0, 0, false // not in canonical form
	}
	return sysid, lsn, chunk, true
}
