package apply

import (
	"context"
	"fmt"

	"github.com/pgactive-go/pgactive/stream"
)

// slowPath applies a chunk change by change, resolving rows that are not in
// the state the origin left them in.
func (s *session) slowPath(ctx context.Context, txn *stream.Txn, tables []*table) error {
	return fmt.Errorf("transaction %s: a row was missing or already present; conflict resolution is not available", txn.CommitLSN)
}
