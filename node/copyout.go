package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// copyOutBufferSize is the read buffer of a copy stream: each read from
// the source's socket takes up to this much.
const copyOutBufferSize = 256 << 10

// copyOut is the data of one COPY ... TO STDOUT, read straight from the
// source connection's socket as the joining database's COPY FROM STDIN
// asks for it. The source sends one CopyData message per row; relaying them
// one by one (pgconn's CopyTo into an io.Pipe) cost a goroutine hand-off
// and a write to the joining database per row: 14 s of CPU for the 6.8
// million rows of a 1 GiB pgbench database, more than either server spent.
// copyOut strips the message headers and hands over whatever is buffered,
// so that each read of the COPY FROM side becomes one large CopyData
// message, with a single copy of the bytes in between (0.7 s of CPU).
//
// Read returns io.EOF once the source has ended the command
// (ReadyForQuery) without error, and the source's *pgconn.PgError if it
// failed; either way the connection is then idle again. If the reading
// stops earlier, the connection is in the middle of the command and must
// be closed.
type copyOut struct {
	conn   net.Conn
	r      *bufio.Reader
	copied *atomic.Int64 // data bytes read, for progress
	stop   func() bool   // stops the context's watch on conn

	started bool  // CopyOutResponse read
	left    int   // bytes of the current CopyData message still to read
	done    bool  // ReadyForQuery read, or the connection failed
	failed  error // the command's or the connection's error
	// result gets the outcome once the end is reached: nil, or the error
	// Read returns. It lets the caller learn the source's error without
	// racing with pgconn's CopyFrom, which reads in its own goroutine.
	result chan error
}

// startCopyOut sends sql, a COPY ... TO STDOUT, on conn, which must be
// idle and used by nothing else until the copyOut is closed. Cancelling ctx
// interrupts reads with an error.
func startCopyOut(ctx context.Context, conn *pgconn.PgConn, sql string, copied *atomic.Int64) (*copyOut, error) {
	if err := conn.SyncConn(ctx); err != nil {
		return nil, fmt.Errorf("take the source connection: %w", err)
	}
	msg, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return nil, fmt.Errorf("encode %q: %w", sql, err)
	}
	nc := conn.Conn()
	c := &copyOut{conn: nc, r: bufio.NewReaderSize(nc, copyOutBufferSize), copied: copied, result: make(chan error, 1)}
	c.stop = context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	if _, err := nc.Write(msg); err != nil {
		c.close()
		return nil, fmt.Errorf("send %q: %w", sql, err)
	}
	return c, nil
}

// close stops watching the context. The connection stays open.
func (c *copyOut) close() {
	if !c.stop() {
		_ = c.conn.SetDeadline(time.Time{}) // the context ended: undo its deadline
	}
}

// sourceError returns the error that ended the stream at the source, if
// it has ended there.
func (c *copyOut) sourceError() error {
	select {
	case err := <-c.result:
		c.result <- err
		return err
	default:
		return nil
	}
}

// Read reads data of the COPY. It blocks only while it has nothing to return.
func (c *copyOut) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && !c.done {
		if c.left == 0 {
			if n > 0 && c.r.Buffered() < 5 {
				break // return what we have rather than wait for more
			}
			c.next()
			continue
		}
		k := min(c.left, len(p)-n)
		if b := c.r.Buffered(); b > 0 {
			k = min(k, b)
		} else if n > 0 {
			break
		}
		m, err := c.r.Read(p[n : n+k])
		n += m
		c.left -= m
		if err != nil {
			c.fail(fmt.Errorf("read from the source: %w", err))
		}
	}
	c.copied.Add(int64(n))
	if n > 0 || !c.done {
		return n, nil
	}
	if c.failed != nil {
		return 0, c.failed
	}
	return 0, io.EOF
}

// next reads the next message's header, and the whole message unless it
// is CopyData.
func (c *copyOut) next() {
	h, err := c.r.Peek(5)
	if err != nil {
		c.fail(fmt.Errorf("read from the source: %w", err))
		return
	}
	typ, size := h[0], int(binary.BigEndian.Uint32(h[1:]))-4
	_, _ = c.r.Discard(5)
	if size < 0 {
		c.fail(fmt.Errorf("read from the source: message %q of length %d", typ, size+4))
		return
	}
	switch {
	case typ == 'd' && c.started:
		c.left = size
		return
	case typ == 'E':
		body := make([]byte, size)
		if _, err := io.ReadFull(c.r, body); err != nil {
			c.fail(fmt.Errorf("read from the source: %w", err))
			return
		}
		var e pgproto3.ErrorResponse
		if err := e.Decode(body); err != nil {
			c.fail(fmt.Errorf("read from the source: %w", err))
			return
		}
		if c.failed == nil {
			c.failed = fmt.Errorf("read from the source: %w", pgconn.ErrorResponseToPgError(&e))
		}
		return
	case typ == 'H' && !c.started:
		c.started = true
	case (typ == 'c' || typ == 'C') && c.started: // CopyDone, CommandComplete
	case typ == 'N' || typ == 'S' || typ == 'A': // notice, parameter status, notification
	case typ == 'Z':
		_, err := c.r.Discard(size)
		c.end(err)
		return
	default:
		c.fail(fmt.Errorf("read from the source: unexpected message %q in a COPY", typ))
		return
	}
	if _, err := c.r.Discard(size); err != nil {
		c.fail(fmt.Errorf("read from the source: %w", err))
	}
}

// end records the end of the command.
func (c *copyOut) end(err error) {
	if err != nil {
		c.fail(fmt.Errorf("read from the source: %w", err))
		return
	}
	c.done = true
	if c.failed == nil && !c.started {
		c.failed = errors.New("the source did not start the COPY")
	}
	c.result <- c.failed
}

// fail stops the stream on a broken connection.
func (c *copyOut) fail(err error) {
	c.failed = errors.Join(c.failed, err)
	c.done = true
	c.result <- c.failed
}
