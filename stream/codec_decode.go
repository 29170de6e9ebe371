package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pglogrepl"
)

// The decoder of the wire format: see codec_encode.go for the format.

// decoder reads a message body. Every length it reads is checked against the
// bytes left before anything is allocated for it, so a body can make it
// allocate no more than a small multiple of the body's own size.
type decoder struct {
	b   []byte
	pos int
	// data holds the datum values and message contents, copied out of b: one
	// allocation per body rather than one per value.
	data []byte
	// datums is a block the tuples take their datums from, a few
	// allocations per body rather than one per tuple; taken counts the
	// datums handed out so far.
	datums []Datum
	taken  int
}

// Smallest encodings of the list elements the decoder accepts. A declared
// length is bounded by the bytes left divided by these before anything is
// allocated for it, so the capacity allocated is never more than what the body
// can fill, and the decoded values take at most about 70 bytes per byte of
// body (a 144-byte Change for 4 bytes, a 32-byte Datum for 1).
const (
	minRelationSize = 9 // {"t":"x","c":[{}]}
	minColumnSize   = 1 // {}
	minChangeSize   = 4 // {"o":1}
)

// decodeTxn reads a whole body into a transaction.
func decodeTxn(b []byte) (*Txn, error) {
	d := decoder{b: b}
	t := new(Txn)
	if err := d.txn(t); err != nil {
		return nil, err
	}
	if d.pos != len(d.b) {
		return nil, fmt.Errorf("%d trailing bytes", len(d.b)-d.pos)
	}
	return t, nil
}

func (d *decoder) txn(t *Txn) error {
	n, err := d.mapLen()
	if err != nil {
		return err
	}
	var seen fieldSet
	for range n {
		k, i, err := d.key(&seen, "v", "on", "os", "x", "l", "e", "ct", "ch", "la", "rs", "cs")
		if err != nil {
			return err
		}
		switch i {
		case 0:
			t.V, err = d.goInt()
		case 1:
			t.Origin, err = d.string()
		case 2:
			t.OriginSysID, err = d.uint(math.MaxUint64)
		case 3:
			t.XID, err = d.uint32()
		case 4:
			t.CommitLSN, err = d.lsn()
		case 5:
			t.EndLSN, err = d.lsn()
		case 6:
			t.CommitTime, err = d.int(math.MinInt64, math.MaxInt64)
		case 7:
			t.Chunk, err = d.goInt()
		case 8:
			t.Last, err = d.bool()
		case 9:
			t.Relations, err = d.relations()
		case 10:
			t.Changes, err = d.changes()
		default:
			err = d.skip(2)
		}
		if err != nil {
			return fmt.Errorf("field %q: %w", k, err)
		}
	}
	return nil
}

// relations reads a list of relations, allocating room for no more of them than
// the bytes left hold. Nil reads as nil, an empty array as an empty list.
func (d *decoder) relations() ([]Relation, error) {
	n, err := d.arrayLen()
	if n < 0 || err != nil {
		return nil, err
	}
	out := make([]Relation, 0, min(n, d.left()/minRelationSize))
	for i := range n {
		out = append(out, Relation{})
		if err := d.relation(&out[i]); err != nil {
			return nil, fmt.Errorf("relation %d: %w", i, err)
		}
	}
	return out, nil
}

func (d *decoder) relation(r *Relation) error {
	n, err := d.mapLen()
	if err != nil {
		return err
	}
	var seen fieldSet
	for range n {
		k, i, err := d.key(&seen, "s", "t", "c")
		if err != nil {
			return err
		}
		switch i {
		case 0:
			r.Schema, err = d.string()
		case 1:
			r.Table, err = d.string()
		case 2:
			r.Columns, err = d.columns()
		default:
			err = d.skip(4)
		}
		if err != nil {
			return fmt.Errorf("field %q: %w", k, err)
		}
	}
	if r.Table == "" || len(r.Columns) == 0 {
		// validate would reject it; rejecting it here keeps relations at
		// minRelationSize bytes at least.
		return errors.New("relation has no name or no columns")
	}
	return nil
}

// columns reads a list of columns, allocating room for no more of them than
// the bytes left hold. Nil reads as nil, an empty array as an empty list.
func (d *decoder) columns() ([]Column, error) {
	n, err := d.arrayLen()
	if n < 0 || err != nil {
		return nil, err
	}
	out := make([]Column, 0, min(n, d.left()/minColumnSize))
	for i := range n {
		out = append(out, Column{})
		if err := d.column(&out[i]); err != nil {
			return nil, fmt.Errorf("column %d: %w", i, err)
		}
	}
	return out, nil
}

func (d *decoder) column(c *Column) error {
	n, err := d.mapLen()
	if err != nil {
		return err
	}
	var seen fieldSet
	for range n {
		k, i, err := d.key(&seen, "n", "t", "k")
		if err != nil {
			return err
		}
		switch i {
		case 0:
			c.Name, err = d.string()
		case 1:
			c.TypeOID, err = d.uint32()
		case 2:
			c.Key, err = d.bool()
		default:
			err = d.skip(6)
		}
		if err != nil {
			return fmt.Errorf("field %q: %w", k, err)
		}
	}
	return nil
}

// changes reads a list of changes, allocating room for no more of them than
// the bytes left hold. Nil reads as nil, an empty array as an empty list.
func (d *decoder) changes() ([]Change, error) {
	n, err := d.arrayLen()
	if n < 0 || err != nil {
		return nil, err
	}
	out := make([]Change, 0, min(n, d.left()/minChangeSize))
	for i := range n {
		out = append(out, Change{})
		if err := d.change(&out[i]); err != nil {
			return nil, fmt.Errorf("change %d: %w", i, err)
		}
	}
	return out, nil
}

func (d *decoder) change(c *Change) error {
	n, err := d.mapLen()
	if err != nil {
		return err
	}
	var seen fieldSet
	for range n {
		k, i, err := d.key(&seen, "o", "r", "n", "x", "f", "tr", "tf", "p", "m")
		if err != nil {
			return err
		}
		switch i {
		case 0:
			var op uint8
			op, err = d.uint8()
			c.Op = Op(op)
		case 1:
			c.Rel, err = d.goInt()
		case 2:
			c.New, err = d.tuple()
		case 3:
			c.Old, err = d.tuple()
		case 4:
			c.OldFull, err = d.bool()
		case 5:
			c.Truncated, err = d.ints()
		case 6:
			c.TruncateFlags, err = d.uint8()
		case 7:
			c.Prefix, err = d.string()
		case 8:
			c.Content, err = d.bytes()
		default:
			err = d.skip(4)
		}
		if err != nil {
			return fmt.Errorf("field %q: %w", k, err)
		}
	}
	if c.Op == 0 {
		// validate would reject it; rejecting it here keeps changes at
		// minChangeSize bytes at least.
		return errors.New("change without op")
	}
	return nil
}

// tuple reads what Tuple.EncodeMsgpack writes, and a string for a binary
// value. An empty tuple reads as nil, as omitempty leaves it out.
func (d *decoder) tuple() (Tuple, error) {
	n, err := d.arrayLen()
	if n <= 0 || err != nil {
		return nil, err
	}
	t := d.tupleOf(n)
	for i := range t {
		if d.pos >= len(d.b) {
			return nil, errEarlyEnd
		}
		switch d.b[d.pos] {
		case codeNil:
			d.pos++
			t[i].Kind = DatumNull
		case codeFalse, codeTrue:
			d.pos++
			t[i].Kind = DatumUnchanged
		default:
			v, err := d.str()
			if err != nil {
				return nil, fmt.Errorf("value %d: %w", i, err)
			}
			t[i] = Datum{Kind: DatumText, Data: d.keep(v)}
		}
	}
	return t, nil
}

// tupleOf returns a tuple of n zero datums, n no more than the bytes left.
// When the block has no room for them, the next block holds as many datums as
// the rest of the body would at the density of the tuples read so far (the
// first tuple gets a block of its own size), and never more than the bytes
// left: each datum takes one at least.
func (d *decoder) tupleOf(n int) Tuple {
	if cap(d.datums)-len(d.datums) < n {
		size := n
		if d.taken > 0 {
			rest := uint64(d.taken) * uint64(d.left()) / uint64(d.pos)
			size = max(n, int(min(rest, uint64(d.left()))))
		}
		d.datums = make([]Datum, 0, size)
	}
	start := len(d.datums)
	d.datums = d.datums[:start+n]
	d.taken += n
	return d.datums[start : start+n : start+n]
}

// ints reads a list of relation indexes. An empty list reads as nil.
func (d *decoder) ints() ([]int, error) {
	n, err := d.arrayLen()
	if n <= 0 || err != nil {
		return nil, err
	}
	out := make([]int, n)
	for i := range out {
		if out[i], err = d.goInt(); err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
	}
	return out, nil
}

// fieldSet records the fields of a map read so far, by their index in the
// list of known keys.
type fieldSet uint16

// key reads a map key and returns its index in known, or -1 for a key to
// skip. A known key repeated is an error: the library would merge the two
// values, this decoder would not, and a body must mean one thing.
func (d *decoder) key(seen *fieldSet, known ...string) (k []byte, i int, err error) {
	if k, err = d.str(); err != nil {
		return nil, 0, fmt.Errorf("map key: %w", err)
	}
	for i, name := range known {
		if sameKey(k, name) {
			if *seen&(1<<i) != 0 {
				return nil, 0, fmt.Errorf("field %q repeated", k)
			}
			*seen |= 1 << i
			return k, i, nil
		}
	}
	return k, -1, nil
}

// sameKey reports whether k is name: a loop beats a call to the runtime's
// comparison for keys of one or two bytes.
func sameKey(k []byte, name string) bool {
	if len(k) != len(name) {
		return false
	}
	for i := range k {
		if k[i] != name[i] {
			return false
		}
	}
	return true
}

var errEarlyEnd = errors.New("body ends early")

func (d *decoder) left() int { return len(d.b) - d.pos }

// next returns the next n bytes.
func (d *decoder) next(n uint64) ([]byte, error) {
	if n > uint64(d.left()) {
		return nil, errEarlyEnd
	}
	v := d.b[d.pos : d.pos+int(n) : d.pos+int(n)]
	d.pos += int(n)
	return v, nil
}

func (d *decoder) code() (byte, error) {
	if d.pos >= len(d.b) {
		return 0, errEarlyEnd
	}
	c := d.b[d.pos]
	d.pos++
	return c, nil
}

// length reads the big-endian length of size bytes (1, 2 or 4) after a code.
func (d *decoder) length(size int) (uint64, error) {
	b, err := d.next(uint64(size))
	if err != nil {
		return 0, err
	}
	return bigEndian(b), nil
}

// mapLen reads a map header and returns its number of entries, 0 for nil.
func (d *decoder) mapLen() (int, error) {
	c, err := d.code()
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c&0xf0 == 0x80:
		n = uint64(c & 0x0f)
	case c == codeNil:
	case c == codeMap16:
		n, err = d.length(2)
	case c == codeMap32:
		n, err = d.length(4)
	default:
		return 0, fmt.Errorf("want a map, got code 0x%02x", c)
	}
	if err != nil {
		return 0, err
	}
	if 2*n > uint64(d.left()) {
		return 0, fmt.Errorf("map of %d entries in %d bytes", n, d.left())
	}
	return int(n), nil
}

// arrayLen reads an array header and returns its number of elements, -1 for nil.
func (d *decoder) arrayLen() (int, error) {
	c, err := d.code()
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c&0xf0 == 0x90:
		n = uint64(c & 0x0f)
	case c == codeNil:
		return -1, nil
	case c == codeArray16:
		n, err = d.length(2)
	case c == codeArray32:
		n, err = d.length(4)
	default:
		return 0, fmt.Errorf("want an array, got code 0x%02x", c)
	}
	if err != nil {
		return 0, err
	}
	if n > uint64(d.left()) {
		return 0, fmt.Errorf("array of %d elements in %d bytes", n, d.left())
	}
	return int(n), nil
}

// str returns the payload of a string or binary value, nil for nil. It
// aliases the body.
func (d *decoder) str() ([]byte, error) {
	c, err := d.code()
	if err != nil {
		return nil, err
	}
	var n uint64
	switch {
	case c&0xe0 == 0xa0:
		n = uint64(c & 0x1f)
	case c == codeNil:
		return nil, nil
	case c == codeStr8 || c == codeBin8:
		n, err = d.length(1)
	case c == codeStr16 || c == codeBin16:
		n, err = d.length(2)
	case c == codeStr32 || c == codeBin32:
		n, err = d.length(4)
	default:
		return nil, fmt.Errorf("want a string, got code 0x%02x", c)
	}
	if err != nil {
		return nil, err
	}
	return d.next(n)
}

func (d *decoder) string() (string, error) {
	b, err := d.str()
	return string(b), err
}

// bytes reads a binary or string value into a copy; empty reads as nil.
func (d *decoder) bytes() ([]byte, error) {
	b, err := d.str()
	if len(b) == 0 || err != nil {
		return nil, err
	}
	return d.keep(b), nil
}

// keep copies v, a slice of the body already read, into d.data. The copy has
// no spare capacity, so appending to it cannot overwrite the next value.
func (d *decoder) keep(v []byte) []byte {
	if d.data == nil {
		// v and every value after it fit in what is left of the body.
		d.data = make([]byte, 0, len(v)+d.left())
	}
	start := len(d.data)
	d.data = append(d.data, v...)
	return d.data[start:len(d.data):len(d.data)]
}

func (d *decoder) bool() (bool, error) {
	c, err := d.code()
	if err != nil {
		return false, err
	}
	switch c {
	case codeTrue:
		return true, nil
	case codeFalse, codeNil:
		return false, nil
	}
	return false, fmt.Errorf("want a boolean, got code 0x%02x", c)
}

// integer reads an integer of any msgpack encoding, nil as 0. With neg, the
// value is int64(u) and negative; otherwise it is u.
func (d *decoder) integer() (u uint64, neg bool, err error) {
	c, err := d.code()
	if err != nil {
		return 0, false, err
	}
	switch {
	case c <= 0x7f:
		return uint64(c), false, nil
	case c >= 0xe0:
		return uint64(int64(int8(c))), true, nil
	case c == codeNil:
		return 0, false, nil
	case c >= codeUint8 && c <= codeUint64:
		b, err := d.next(1 << (c - codeUint8))
		if err != nil {
			return 0, false, err
		}
		return bigEndian(b), false, nil
	case c >= codeInt8 && c <= codeInt64:
		b, err := d.next(1 << (c - codeInt8))
		if err != nil {
			return 0, false, err
		}
		shift := 64 - 8*len(b)
		v := int64(bigEndian(b)<<shift) >> shift // sign-extended
		return uint64(v), v < 0, nil
	}
	return 0, false, fmt.Errorf("want an integer, got code 0x%02x", c)
}

// bigEndian reads an unsigned integer of 1, 2, 4 or 8 bytes.
func bigEndian(b []byte) uint64 {
	switch len(b) {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(binary.BigEndian.Uint16(b))
	case 4:
		return uint64(binary.BigEndian.Uint32(b))
	}
	return binary.BigEndian.Uint64(b)
}

// uint reads a non-negative integer no larger than maxValue.
func (d *decoder) uint(maxValue uint64) (uint64, error) {
	u, neg, err := d.integer()
	switch {
	case err != nil:
		return 0, err
	case neg:
		return 0, fmt.Errorf("negative value %d for an unsigned field", int64(u))
	case u > maxValue:
		return 0, fmt.Errorf("value %d out of range", u)
	}
	return u, nil
}

// int reads an integer from minValue to maxValue.
func (d *decoder) int(minValue, maxValue int64) (int64, error) {
	u, neg, err := d.integer()
	if err != nil {
		return 0, err
	}
	if neg {
		if v := int64(u); v < minValue {
			return 0, fmt.Errorf("value %d out of range", v)
		}
	} else if u > uint64(maxValue) {
		return 0, fmt.Errorf("value %d out of range", u)
	}
	return int64(u), nil
}

func (d *decoder) goInt() (int, error) {
	v, err := d.int(math.MinInt, math.MaxInt)
	return int(v), err
}

func (d *decoder) uint8() (uint8, error) {
	v, err := d.uint(math.MaxUint8)
	return uint8(v), err
}

func (d *decoder) uint32() (uint32, error) {
	v, err := d.uint(math.MaxUint32)
	return uint32(v), err
}

func (d *decoder) lsn() (pglogrepl.LSN, error) {
	v, err := d.uint(math.MaxUint64)
	return pglogrepl.LSN(v), err
}

// skip reads past one value of any type, at the given nesting depth.
func (d *decoder) skip(depth int) error {
	if depth > maxDepth {
		return errors.New("nested too deeply")
	}
	c, err := d.code()
	if err != nil {
		return err
	}
	var children uint64
	switch {
	case c <= 0x7f || c >= 0xe0 || c == codeNil || c == codeFalse || c == codeTrue:
		return nil
	case c&0xf0 == 0x80:
		children = 2 * uint64(c&0x0f)
	case c&0xf0 == 0x90:
		children = uint64(c & 0x0f)
	case c&0xe0 == 0xa0:
		_, err = d.next(uint64(c & 0x1f))
		return err
	default:
		children, err = d.skipFixed(c)
		if err != nil {
			return err
		}
	}
	if children > uint64(d.left()) {
		return fmt.Errorf("collection of %d values in %d bytes", children, d.left())
	}
	for range children {
		if err := d.skip(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

// skipFixed reads past a value whose code has no inline payload or length, or
// the header of a collection, and returns how many values the collection holds.
func (d *decoder) skipFixed(c byte) (children uint64, err error) {
	var size uint64 // bytes of payload
	switch c {
	case codeBin8, codeStr8, codeBin16, codeStr16, codeBin32, codeStr32:
		size, err = d.length(lengthSize(c))
	case 0xc7, 0xc8, 0xc9: // ext 8, 16, 32: length, type, data
		size, err = d.length(1 << (c - 0xc7))
		size++
	case 0xca, 0xcb: // float 32, 64
		size = 4 << (c - 0xca)
	case codeUint8, codeUint16, codeUint32, codeUint64:
		size = 1 << (c - codeUint8)
	case codeInt8, codeInt16, codeInt32, codeInt64:
		size = 1 << (c - codeInt8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16: type, data
		size = 1 + 1<<(c-0xd4)
	case codeArray16, codeArray32:
		return d.length(lengthSize(c))
	case codeMap16, codeMap32:
		n, err := d.length(lengthSize(c))
		return 2 * n, err
	default:
		return 0, fmt.Errorf("unknown msgpack code 0x%02x", c)
	}
	if err != nil {
		return 0, err
	}
	_, err = d.next(size)
	return 0, err
}

// lengthSize is the size of the length after a str, bin, array or map code.
func lengthSize(c byte) int {
	switch c {
	case codeBin8, codeStr8:
		return 1
	case codeBin16, codeStr16, codeArray16, codeMap16:
		return 2
	}
	return 4
}
