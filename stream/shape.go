package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxDepth bounds the nesting of a message body; the format needs 5 levels.
const maxDepth = 16

// checkShape walks the msgpack structure of b without building values and
// rejects what could make the decoder allocate or recurse without bound: a
// declared length larger than the bytes left, nesting deeper than maxDepth,
// trailing bytes, or a code msgpack does not define.
func checkShape(b []byte) error {
	pos := 0
	stack := []uint64{1} // values still to read at each open level
	for len(stack) > 0 {
		top := len(stack) - 1
		if stack[top] == 0 {
			stack = stack[:top]
			continue
		}
		stack[top]--
		if pos >= len(b) {
			return errors.New("body ends early")
		}
		size, children, err := header(b[pos:])
		if err != nil {
			return err
		}
		pos += size
		if pos > len(b) {
			return errors.New("value longer than the body")
		}
		if children > 0 {
			if children > uint64(len(b)-pos) {
				return fmt.Errorf("collection of %d values in %d bytes", children, len(b)-pos)
			}
			if len(stack) >= maxDepth {
				return errors.New("nested too deeply")
			}
			stack = append(stack, children)
		}
	}
	if pos != len(b) {
		return fmt.Errorf("%d trailing bytes", len(b)-pos)
	}
	return nil
}

// header returns the size of the value's header plus any inline payload,
// and the number of nested values that follow it.
func header(b []byte) (size int, children uint64, err error) {
	c := b[0]
	need := func(n int) error {
		if len(b) < n {
			return errors.New("header ends early")
		}
		return nil
	}
	u8 := func() int { return int(b[1]) }
	u16 := func() int { return int(binary.BigEndian.Uint16(b[1:])) }
	u32 := func() uint64 { return uint64(binary.BigEndian.Uint32(b[1:])) }
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		return 1, 0, nil
	case c >= 0x80 && c <= 0x8f:
		return 1, 2 * uint64(c&0x0f), nil
	case c >= 0x90 && c <= 0x9f:
		return 1, uint64(c & 0x0f), nil
	case c >= 0xa0 && c <= 0xbf:
		return 1 + int(c&0x1f), 0, nil
	}
	switch c {
	case 0xc4, 0xd9: // bin8, str8
		if err := need(2); err != nil {
			return 0, 0, err
		}
		return 2 + u8(), 0, nil
	case 0xc5, 0xda: // bin16, str16
		if err := need(3); err != nil {
			return 0, 0, err
		}
		return 3 + u16(), 0, nil
	case 0xc6, 0xdb: // bin32, str32
		if err := need(5); err != nil {
			return 0, 0, err
		}
		n := u32()
		if n > uint64(len(b)) {
			return 0, 0, errors.New("string longer than the body")
		}
		return 5 + int(n), 0, nil
	case 0xc7: // ext8
		if err := need(2); err != nil {
			return 0, 0, err
		}
		return 3 + u8(), 0, nil
	case 0xc8: // ext16
		if err := need(3); err != nil {
			return 0, 0, err
		}
		return 4 + u16(), 0, nil
	case 0xc9: // ext32
		if err := need(5); err != nil {
			return 0, 0, err
		}
		n := u32()
		if n > uint64(len(b)) {
			return 0, 0, errors.New("extension longer than the body")
		}
		return 6 + int(n), 0, nil
	case 0xcc, 0xd0:
		return 2, 0, nil
	case 0xcd, 0xd1:
		return 3, 0, nil
	case 0xca, 0xce, 0xd2:
		return 5, 0, nil
	case 0xcb, 0xcf, 0xd3:
		return 9, 0, nil
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16
		return 2 + 1<<(c-0xd4), 0, nil
	case 0xdc: // array16
		if err := need(3); err != nil {
			return 0, 0, err
		}
		return 3, uint64(u16()), nil
	case 0xdd: // array32
		if err := need(5); err != nil {
			return 0, 0, err
		}
		return 5, u32(), nil
	case 0xde: // map16
		if err := need(3); err != nil {
			return 0, 0, err
		}
		return 3, 2 * uint64(u16()), nil
	case 0xdf: // map32
		if err := need(5); err != nil {
			return 0, 0, err
		}
		return 5, 2 * u32(), nil
	}
	return 0, 0, fmt.Errorf("unknown msgpack code 0x%02x", c)
}
