package apply

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
)

// maxPrepared bounds the statements one session keeps prepared; past it,
// statements are parsed on each use.
const maxPrepared = 2048

// preparedStmts prepares each statement text once per session, so the
// server parses and plans it once and each use only binds parameters.
// Parameter types are inferred from the columns at preparation, and
// parameters are sent in text format, so every type round-trips through its
// own text form.
type preparedStmts struct {
	byText map[string]*pgconn.StatementDescription
}

// queue adds sql with text-format params to b, prepared on first use.
// Past maxPrepared statements, sql is parsed each time it runs.
func (p *preparedStmts) queue(ctx context.Context, conn *pgconn.PgConn, b *pgconn.Batch, sql string, params [][]byte) error {
	return p.queueFormat(ctx, conn, b, sql, params, nil)
}

// binaryParams is the parameter format code that sends every parameter in its
// type's binary form.
var binaryParams = []int16{1}

// queueFormat is queue with the parameters' format codes (nil: all text).
func (p *preparedStmts) queueFormat(ctx context.Context, conn *pgconn.PgConn, b *pgconn.Batch, sql string, params [][]byte, formats []int16) error {
	sd, ok := p.byText[sql]
	if !ok {
		if len(p.byText) >= maxPrepared {
			b.ExecParams(sql, params, nil, formats, nil)
			return nil
		}
		if p.byText == nil {
			p.byText = map[string]*pgconn.StatementDescription{}
		}
		var err error
		sd, err = conn.Prepare(ctx, "pgactive_"+strconv.Itoa(len(p.byText)), sql, nil)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", sql, err)
		}
		p.byText[sql] = sd
	}
	b.ExecStatement(sd, params, formats, nil)
	return nil
}
