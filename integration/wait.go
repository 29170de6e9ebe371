package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	pollInterval = 100 * time.Millisecond
	// queryTimeout bounds one query of a poll, so that a stuck node cannot outlast the deadline by much.
	queryTimeout = 30 * time.Second
	// diffRowsShown is how many differing rows per side a convergence failure prints.
	diffRowsShown = 5
)

// WaitFor calls cond every 100ms until it returns true, and fails the test if that has not happened
// within timeout. cond's error does not stop the wait: it is remembered, and the last one is reported
// on timeout, so return the current state as an error ("3 of 5 nodes ready") to have it reported.
// WaitFor must be called on the test goroutine.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(pollInterval)
	}
	if lastErr != nil {
		t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, lastErr)
		return
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
}

// TableRows returns every row of table as its text representation (SELECT t::text FROM table t),
// sorted bytewise. Two nodes hold the same data exactly when their TableRows are equal. table may be
// schema-qualified ("public.accounts"); each part is quoted as an identifier, unless table already
// holds double quotes, in which case it is used as written.
func TableRows(t testing.TB, conn *pgx.Conn, table string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	rows, err := tableRows(ctx, conn, table)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func tableRows(ctx context.Context, conn *pgx.Conn, table string) ([]string, error) {
	name := tableIdentifier(table).Sanitize()
	if strings.ContainsRune(table, '"') {
		name = table // already quoted SQL
	}
	sql := fmt.Sprintf(`SELECT harness_row::text FROM %s AS harness_row ORDER BY harness_row::text COLLATE "C"`, name)
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("read rows of %s on %s: %w", table, connLabel(conn), err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read rows of %s on %s: %w", table, connLabel(conn), err)
	}
	return got, nil
}

// tableIdentifier splits "schema.table" into an identifier; a name without a dot is left unqualified.
func tableIdentifier(table string) pgx.Identifier {
	if schema, name, ok := strings.Cut(table, "."); ok {
		return pgx.Identifier{schema, name}
	}
	return pgx.Identifier{table}
}

// WaitSameRows waits until table holds the same rows ([TableRows]) on every connection. On timeout it
// fails the test with the row count on each node and the first rows that differ from the first node.
// WaitSameRows must be called on the test goroutine.
func WaitSameRows(t testing.TB, timeout time.Duration, table string, conns ...*pgx.Conn) {
	t.Helper()
	if len(conns) < 2 {
		t.Fatalf("WaitSameRows on %s: need at least two connections, got %d", table, len(conns))
		return
	}
	WaitFor(t, timeout, "the same rows of "+table+" on every node", func() (bool, error) {
		return compareNodes(table, conns)
	})
}

// compareNodes reads table on every connection and says whether all match the first; if not, the
// error describes the difference.
func compareNodes(table string, conns []*pgx.Conn) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	all := make([][]string, len(conns))
	var errs []error
	for i, c := range conns {
		rows, err := tableRows(ctx, c, table)
		if err != nil {
			errs = append(errs, err)
		}
		all[i] = rows
	}
	if len(errs) > 0 {
		return false, errors.Join(errs...)
	}
	var counts, diffs []string
	for i, rows := range all {
		counts = append(counts, fmt.Sprintf("%s: %d rows", connLabel(conns[i]), len(rows)))
		if i > 0 {
			if d := describeDiff(all[0], rows); d != "" {
				diffs = append(diffs, fmt.Sprintf("%s against %s:\n%s", connLabel(conns[i]), connLabel(conns[0]), d))
			}
		}
	}
	if len(diffs) == 0 {
		return true, nil
	}
	return false, fmt.Errorf("%s\n%s", strings.Join(counts, ", "), strings.Join(diffs, "\n"))
}

// describeDiff compares two sorted row lists as multisets and describes the first differing rows on
// each side, or returns "" if they are equal.
func describeDiff(want, got []string) string {
	var missing, extra []string
	i, j := 0, 0
	for i < len(want) || j < len(got) {
		switch {
		case j == len(got) || (i < len(want) && want[i] < got[j]):
			missing = append(missing, want[i])
			i++
		case i == len(want) || got[j] < want[i]:
			extra = append(extra, got[j])
			j++
		default:
			i++
			j++
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return ""
	}
	var b strings.Builder
	writeRows(&b, "missing", missing)
	writeRows(&b, "extra", extra)
	return strings.TrimRight(b.String(), "\n")
}

func writeRows(b *strings.Builder, label string, rows []string) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "  %s %d rows:\n", label, len(rows))
	for k, r := range rows {
		if k == diffRowsShown {
			fmt.Fprintf(b, "    ... and %d more\n", len(rows)-diffRowsShown)
			break
		}
		fmt.Fprintf(b, "    %s\n", r)
	}
}

// connLabel names a connection by its port and database, as tests know their nodes by them.
func connLabel(c *pgx.Conn) string {
	cfg := c.Config()
	return fmt.Sprintf("port %d/%s", cfg.Port, cfg.Database)
}
