package stream

import (
	"encoding/binary"
	"errors"
	"math"
)

// This file and codec_decode.go are the hand-written codec of the wire
// format. The msgpack struct tags on Txn, Relation, Column and Change, and
// Tuple's EncodeMsgpack, define the format; appendTxn writes exactly the
// bytes msgpack.Marshal writes for them (structs as maps keyed by tag in field order, omitempty fields left
// out; uint8, uint32 and uint64 fields at full width, int fields compact,
// int64 at full width), and decoder reads them and any equivalent msgpack.
// codec_test.go checks both against the library.

// maxDepth bounds the nesting of a message body; the format needs 6 levels.
const maxDepth = 16

// msgpack codes of the values the format uses.
const (
	codeNil     = 0xc0
	codeFalse   = 0xc2
	codeTrue    = 0xc3
	codeBin8    = 0xc4
	codeBin16   = 0xc5
	codeBin32   = 0xc6
	codeUint8   = 0xcc
	codeUint16  = 0xcd
	codeUint32  = 0xce
	codeUint64  = 0xcf
	codeInt8    = 0xd0
	codeInt16   = 0xd1
	codeInt32   = 0xd2
	codeInt64   = 0xd3
	codeStr8    = 0xd9
	codeStr16   = 0xda
	codeStr32   = 0xdb
	codeArray16 = 0xdc
	codeArray32 = 0xdd
	codeMap16   = 0xde
	codeMap32   = 0xdf
)

// errTooLong is returned by encodedSize for a string, value or list msgpack
// cannot represent: its lengths are 32-bit.
var errTooLong = errors.New("value longer than msgpack allows (4 GiB)")

// encodedSize returns the length of appendTxn's encoding of t.
func encodedSize(t *Txn) (int, error) {
	n := 1 + 2 + intSize(int64(t.V)) + 3 + strSize(len(t.Origin)) + 3 + 9 + 2 + 5 + 2 + 9 + 2 + 9 + 3 + 9 + 3 + 1
	long := uint64(len(t.Origin))
	if t.Chunk != 0 {
		n += 3 + intSize(int64(t.Chunk))
	}
	n += 3 + arraySize(len(t.Relations))
	long = max(long, uint64(len(t.Relations)), uint64(len(t.Changes)))
	for i := range t.Relations {
		r := &t.Relations[i]
		n += 1 + 2 + strSize(len(r.Schema)) + 2 + strSize(len(r.Table)) + 2 + arraySize(len(r.Columns))
		long = max(long, uint64(len(r.Schema)), uint64(len(r.Table)), uint64(len(r.Columns)))
		for j := range r.Columns {
			c := &r.Columns[j]
			n += 1 + 2 + strSize(len(c.Name)) + 2 + 5
			if c.Key {
				n += 3
			}
			long = max(long, uint64(len(c.Name)))
		}
	}
	n += 3 + arraySize(len(t.Changes))
	for i := range t.Changes {
		size, l := changeSize(&t.Changes[i])
		n, long = n+size, max(long, l)
	}
	if long > math.MaxUint32 {
		return 0, errTooLong
	}
	return n, nil
}

// changeSize returns the length of c's encoding and the longest length in it.
func changeSize(c *Change) (n int, long uint64) {
	n = 1 + 2 + 2 + 2 + intSize(int64(c.Rel))
	if len(c.New) > 0 {
		size, l := tupleSize(c.New)
		n, long = n+2+size, max(long, l)
	}
	if len(c.Old) > 0 {
		size, l := tupleSize(c.Old)
		n, long = n+2+size, max(long, l)
	}
	if c.OldFull {
		n += 2 + 1
	}
	if len(c.Truncated) > 0 {
		n += 3 + arraySize(len(c.Truncated))
		for _, r := range c.Truncated {
			n += intSize(int64(r))
		}
		long = max(long, uint64(len(c.Truncated)))
	}
	if c.TruncateFlags != 0 {
		n += 3 + 2
	}
	if c.Prefix != "" {
		n += 2 + strSize(len(c.Prefix))
	}
	if len(c.Content) > 0 {
		n += 2 + binSize(len(c.Content))
	}
	return n, max(long, uint64(len(c.Prefix)), uint64(len(c.Content)))
}

// tupleSize returns the length of t's encoding and the longest length in it.
func tupleSize(t Tuple) (n int, long uint64) {
	n = arraySize(len(t))
	long = uint64(len(t))
	for i := range t {
		switch t[i].Kind {
		case DatumNull, DatumUnchanged:
			n++
		default:
			n += binSize(len(t[i].Data))
			long = max(long, uint64(len(t[i].Data)))
		}
	}
	return n, long
}

// appendTxn appends the msgpack encoding of t to dst: the bytes
// msgpack.Marshal(t) writes.
func appendTxn(dst []byte, t *Txn) []byte {
	fields := 10
	if t.Chunk != 0 {
		fields++
	}
	dst = append(dst, 0x80|byte(fields))
	dst = appendInt(append(dst, 0xa1, 'v'), int64(t.V))
	dst = appendStr(append(dst, 0xa2, 'o', 'n'), t.Origin)
	dst = appendUint64(append(dst, 0xa2, 'o', 's'), t.OriginSysID)
	dst = appendUint32(append(dst, 0xa1, 'x'), t.XID)
	dst = appendUint64(append(dst, 0xa1, 'l'), uint64(t.CommitLSN))
	dst = appendUint64(append(dst, 0xa1, 'e'), uint64(t.EndLSN))
	dst = appendInt64(append(dst, 0xa2, 'c', 't'), t.CommitTime)
	if t.Chunk != 0 {
		dst = appendInt(append(dst, 0xa2, 'c', 'h'), int64(t.Chunk))
	}
	dst = appendBool(append(dst, 0xa2, 'l', 'a'), t.Last)
	dst = append(dst, 0xa2, 'r', 's')
	if t.Relations == nil {
		dst = append(dst, codeNil)
	} else {
		dst = appendArrayLen(dst, len(t.Relations))
		for i := range t.Relations {
			dst = appendRelation(dst, &t.Relations[i])
		}
	}
	dst = append(dst, 0xa2, 'c', 's')
	if t.Changes == nil {
		return append(dst, codeNil)
	}
	dst = appendArrayLen(dst, len(t.Changes))
	for i := range t.Changes {
		dst = appendChange(dst, &t.Changes[i])
	}
	return dst
}

func appendRelation(dst []byte, r *Relation) []byte {
	dst = appendStr(append(dst, 0x83, 0xa1, 's'), r.Schema)
	dst = appendStr(append(dst, 0xa1, 't'), r.Table)
	dst = append(dst, 0xa1, 'c')
	if r.Columns == nil {
		return append(dst, codeNil)
	}
	dst = appendArrayLen(dst, len(r.Columns))
	for i := range r.Columns {
		c := &r.Columns[i]
		if c.Key {
			dst = append(dst, 0x83)
		} else {
			dst = append(dst, 0x82)
		}
		dst = appendStr(append(dst, 0xa1, 'n'), c.Name)
		dst = appendUint32(append(dst, 0xa1, 't'), c.TypeOID)
		if c.Key {
			dst = append(dst, 0xa1, 'k', codeTrue)
		}
	}
	return dst
}

func appendChange(dst []byte, c *Change) []byte {
	fields := 2
	for _, present := range [...]bool{len(c.New) > 0, len(c.Old) > 0, c.OldFull, len(c.Truncated) > 0,
		c.TruncateFlags != 0, c.Prefix != "", len(c.Content) > 0} {
		if present {
			fields++
		}
	}
	dst = append(dst, 0x80|byte(fields), 0xa1, 'o', codeUint8, byte(c.Op))
	dst = appendInt(append(dst, 0xa1, 'r'), int64(c.Rel))
	if len(c.New) > 0 {
		dst = appendTuple(append(dst, 0xa1, 'n'), c.New)
	}
	if len(c.Old) > 0 {
		dst = appendTuple(append(dst, 0xa1, 'x'), c.Old)
	}
	if c.OldFull {
		dst = append(dst, 0xa1, 'f', codeTrue)
	}
	if len(c.Truncated) > 0 {
		dst = appendArrayLen(append(dst, 0xa2, 't', 'r'), len(c.Truncated))
		for _, r := range c.Truncated {
			dst = appendInt(dst, int64(r))
		}
	}
	if c.TruncateFlags != 0 {
		dst = append(dst, 0xa2, 't', 'f', codeUint8, c.TruncateFlags)
	}
	if c.Prefix != "" {
		dst = appendStr(append(dst, 0xa1, 'p'), c.Prefix)
	}
	if len(c.Content) > 0 {
		dst = appendBin(append(dst, 0xa1, 'm'), c.Content)
	}
	return dst
}

// appendTuple writes what Tuple.EncodeMsgpack writes.
func appendTuple(dst []byte, t Tuple) []byte {
	dst = appendArrayLen(dst, len(t))
	for i := range t {
		switch t[i].Kind {
		case DatumNull:
			dst = append(dst, codeNil)
		case DatumUnchanged:
			dst = append(dst, codeFalse)
		default:
			dst = appendBin(dst, t[i].Data)
		}
	}
	return dst
}

// intSize is the length of appendInt's encoding of v.
func intSize(v int64) int {
	switch {
	case v >= -32 && v <= math.MaxInt8:
		return 1
	case v >= math.MinInt8 && v <= math.MaxUint8:
		return 2
	case v >= math.MinInt16 && v <= math.MaxUint16:
		return 3
	case v >= math.MinInt32 && v <= math.MaxUint32:
		return 5
	}
	return 9
}

// appendInt writes v in the fewest bytes, as msgpack's Encoder.EncodeInt does:
// unsigned codes for values from 0, signed codes below -32.
func appendInt(dst []byte, v int64) []byte {
	if v >= 0 {
		u := uint64(v)
		switch {
		case u <= math.MaxInt8:
			return append(dst, byte(u))
		case u <= math.MaxUint8:
			return append(dst, codeUint8, byte(u))
		case u <= math.MaxUint16:
			return binary.BigEndian.AppendUint16(append(dst, codeUint16), uint16(u))
		case u <= math.MaxUint32:
			return appendUint32(dst, uint32(u))
		}
		return appendUint64(dst, u)
	}
	switch {
	case v >= -32:
		return append(dst, byte(v))
	case v >= math.MinInt8:
		return append(dst, codeInt8, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(dst, codeInt16), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(dst, codeInt32), uint32(v))
	}
	return appendInt64(dst, v)
}

func appendUint32(dst []byte, v uint32) []byte {
	return binary.BigEndian.AppendUint32(append(dst, codeUint32), v)
}

func appendUint64(dst []byte, v uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, codeUint64), v)
}

func appendInt64(dst []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, codeInt64), uint64(v))
}

func appendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, codeTrue)
	}
	return append(dst, codeFalse)
}

func strSize(n int) int {
	switch {
	case n < 32:
		return 1 + n
	case n <= math.MaxUint8:
		return 2 + n
	case n <= math.MaxUint16:
		return 3 + n
	}
	return 5 + n
}

func appendStr(dst []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n <= math.MaxUint8:
		dst = append(dst, codeStr8, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, codeStr16), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, codeStr32), uint32(n))
	}
	return append(dst, s...)
}

func binSize(n int) int {
	switch {
	case n <= math.MaxUint8:
		return 2 + n
	case n <= math.MaxUint16:
		return 3 + n
	}
	return 5 + n
}

func appendBin(dst []byte, b []byte) []byte {
	n := len(b)
	switch {
	case n <= math.MaxUint8:
		dst = append(dst, codeBin8, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, codeBin16), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, codeBin32), uint32(n))
	}
	return append(dst, b...)
}

func arraySize(n int) int {
	switch {
	case n < 16:
		return 1
	case n <= math.MaxUint16:
		return 3
	}
	return 5
}

func appendArrayLen(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, codeArray16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, codeArray32), uint32(n))
}
