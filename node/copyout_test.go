package node

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// backendStream encodes what a server sends in answer to a COPY TO STDOUT.
func backendStream(t *testing.T, msgs ...pgproto3.BackendMessage) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// fixtureCopyOut reads a copy from stream, as startCopyOut would from a
// connection.
func fixtureCopyOut(stream []byte, bufSize int) (*copyOut, *atomic.Int64) {
	var copied atomic.Int64
	return &copyOut{r: bufio.NewReaderSize(bytes.NewReader(stream), bufSize), copied: &copied,
		result: make(chan error, 1)}, &copied
}

// readAllSmall reads c to its end with reads of n bytes.
func readAllSmall(c *copyOut, n int) ([]byte, error) {
	var out []byte
	p := make([]byte, n)
	for {
		k, err := c.Read(p)
		out = append(out, p[:k]...)
		if err != nil {
			return out, err
		}
		if k == 0 {
			return out, errors.New("a read returned nothing and no error")
		}
	}
}

func TestCopyOutData(t *testing.T) {
	rows := []string{"1\ta\n", "2\tb\n", strings.Repeat("x", 5000) + "\n", "", "4\t\\N\n"}
	msgs := []pgproto3.BackendMessage{&pgproto3.CopyOutResponse{OverallFormat: 0, ColumnFormatCodes: []uint16{0, 0}}}
	var want []byte
	for i, r := range rows {
		msgs = append(msgs, &pgproto3.CopyData{Data: []byte(r)})
		want = append(want, r...)
		if i == 1 { // asynchronous messages may come between rows
			msgs = append(msgs, &pgproto3.NoticeResponse{Severity: "NOTICE", Message: "hi"},
				&pgproto3.ParameterStatus{Name: "in_hot_standby", Value: "off"})
		}
	}
	msgs = append(msgs, &pgproto3.CopyDone{}, &pgproto3.CommandComplete{CommandTag: []byte("COPY 5")},
		&pgproto3.ReadyForQuery{TxStatus: 'T'})
	stream := backendStream(t, msgs...)

	for _, tc := range []struct {
		name          string
		bufSize, read int
	}{
		{"large reads", 1 << 16, 1 << 16},
		{"reads smaller than rows", 1 << 16, 7},
		{"small buffer", 16, 1 << 16},
		{"both small", 16, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, copied := fixtureCopyOut(stream, tc.bufSize)
			got, err := readAllSmall(c, tc.read)
			if err != io.EOF {
				t.Fatalf("end of the copy: got %v, want io.EOF", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("data: got %q, want %q", got, want)
			}
			if copied.Load() != int64(len(want)) {
				t.Errorf("bytes counted: got %d, want %d", copied.Load(), len(want))
			}
			if err := c.sourceError(); err != nil {
				t.Errorf("source error: got %v, want none", err)
			}
			if n, err := c.Read(make([]byte, 10)); n != 0 || err != io.EOF {
				t.Errorf("read after the end: got %d, %v, want 0, io.EOF", n, err)
			}
		})
	}
}

func TestCopyOutErrors(t *testing.T) {
	start := &pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0}}
	row := &pgproto3.CopyData{Data: []byte("1\n")}
	failure := &pgproto3.ErrorResponse{Severity: "ERROR", Code: "40001", Message: "snapshot too old"}
	ready := &pgproto3.ReadyForQuery{TxStatus: 'E'}
	for _, tc := range []struct {
		name   string
		stream []pgproto3.BackendMessage
		code   string // of the *pgconn.PgError, if any
		want   string
	}{
		{"error before the copy", []pgproto3.BackendMessage{failure, ready}, "40001", "snapshot too old"},
		{"error during the copy", []pgproto3.BackendMessage{start, row, failure, ready}, "40001", "snapshot too old"},
		{"connection lost", []pgproto3.BackendMessage{start, row, row}, "", "EOF"},
		{"not a COPY", []pgproto3.BackendMessage{&pgproto3.RowDescription{}, ready}, "", "unexpected message 'T'"},
		{"data before the start", []pgproto3.BackendMessage{row, ready}, "", "unexpected message 'd'"},
		{"no copy at all", []pgproto3.BackendMessage{&pgproto3.EmptyQueryResponse{}, ready}, "", "unexpected message 'I'"},
		{"ends without starting", []pgproto3.BackendMessage{ready}, "", "did not start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := fixtureCopyOut(backendStream(t, tc.stream...), 64)
			_, err := readAllSmall(c, 5)
			if err == nil || err == io.EOF || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
			var pgErr *pgconn.PgError
			if tc.code != "" && (!errors.As(err, &pgErr) || pgErr.Code != tc.code) {
				t.Errorf("got %v, want a *pgconn.PgError with code %s", err, tc.code)
			}
			if got := c.sourceError(); got == nil || got.Error() != err.Error() {
				t.Errorf("source error: got %v, want %v", got, err)
			}
			if n, again := c.Read(make([]byte, 10)); n != 0 || again == nil || again == io.EOF {
				t.Errorf("read after the error: got %d, %v, want 0 and the error", n, again)
			}
		})
	}
}
