package conflicts

import (
	"errors"
	"fmt"
	"testing"
)

func TestConflictIs(t *testing.T) {
	sentinels := []error{ErrInsertInsert, ErrUpdateUpdate, ErrUpdateDelete, ErrDeleteDelete, ErrUnhandledTxAbort}
	tests := []struct {
		name  string
		local Version
		in    Change
		want  error
	}{
		{"insert_insert", row(5, self), change(Insert, 6, upper), ErrInsertInsert},
		{"update_update", row(5, self), change(Update, 6, upper), ErrUpdateUpdate},
		{"update_delete", Version{}, change(Update, 6, upper), ErrUpdateDelete},
		{"delete_delete", Version{}, change(Delete, 6, upper), ErrDeleteDelete},
		{"unhandled_tx_abort", Version{}, partial(change(Insert, 6, upper)), ErrUnhandledTxAbort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.local, tt.in, self)
			err := fmt.Errorf("apply txn: %w", NewConflict("public.t", "(id)=(1)", tt.local, tt.in, d))
			for _, s := range sentinels {
				if got, want := errors.Is(err, s), s == tt.want; got != want {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", err, s, got, want)
				}
			}
			var c *Conflict
			if !errors.As(err, &c) {
				t.Fatalf("errors.As(%v, *Conflict) = false, want true", err)
			}
			if got, want := c.Table, "public.t"; got != want {
				t.Errorf("Table = %q, want %q", got, want)
			}
			if got, want := c.Remote.Origin, upper; got != want {
				t.Errorf("Remote.Origin = %s, want %s", got, want)
			}
		})
	}
}

func TestAbortConflict(t *testing.T) {
	cause := errors.New(`duplicate key value violates unique constraint "t_email_key"`)
	err := error(AbortConflict("public.t", "(id)=(1)", row(5, self), change(Insert, 6, upper), cause))
	if !errors.Is(err, ErrUnhandledTxAbort) {
		t.Errorf("errors.Is(%v, ErrUnhandledTxAbort) = false, want true", err)
	}
	if !errors.Is(err, cause) {
		t.Errorf("errors.Is(%v, cause) = false, want true", err)
	}
	if errors.Is(err, ErrInsertInsert) {
		t.Errorf("errors.Is(%v, ErrInsertInsert) = true, want false", err)
	}
	var c *Conflict
	if !errors.As(err, &c) {
		t.Fatalf("errors.As(%v, *Conflict) = false, want true", err)
	}
	if got, want := c.Decision, Abort(); got != want {
		t.Errorf("Decision = %+v, want %+v", got, want)
	}
}

func TestConflictError(t *testing.T) {
	tests := []struct {
		name string
		c    *Conflict
		want string
	}{
		{
			"keep remote",
			NewConflict("inventory.products", "(id)=(7)", row(5, self), change(Update, 6, upper),
				conflict(ApplyAsIs, UpdateUpdate, KeepRemote)),
			"update_update on inventory.products key (id)=(7): remote update from node 20 at 2025-01-01T00:00:06.000000Z, " +
				"local row from node 10 at 2025-01-01T00:00:05.000000Z: last_update_wins_keep_remote",
		},
		{
			"tombstone",
			NewConflict("public.t", "(id)=(1)", tomb(7, other), change(Update, 6, upper), conflict(Skip, UpdateDelete, SkipChange)),
			"update_delete on public.t key (id)=(1): remote update from node 20 at 2025-01-01T00:00:06.000000Z, " +
				"local delete from node 30 at 2025-01-01T00:00:07.000000Z: skip_change",
		},
		{
			"no row",
			NewConflict("public.t", "(id)=(1)", Version{}, change(Delete, 6, upper), conflict(Skip, DeleteDelete, SkipChange)),
			"delete_delete on public.t key (id)=(1): remote delete from node 20 at 2025-01-01T00:00:06.000000Z, no local row: skip_change",
		},
		{
			"abort without key",
			AbortConflict("public.gone", "", Version{}, change(Insert, 6, upper), errors.New(`relation "public.gone" does not exist`)),
			"unhandled_tx_abort on public.gone: remote insert from node 20 at 2025-01-01T00:00:06.000000Z, no local row: " +
				`relation "public.gone" does not exist`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.Error(); got != tt.want {
				t.Errorf("Error() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	tests := []struct{ got, want string }{
		{Insert.String(), "insert"},
		{Update.String(), "update"},
		{Delete.String(), "delete"},
		{Op(9).String(), "op(9)"},
		{ApplyAsIs.String(), "apply"},
		{ApplyAsUpdate.String(), "apply_as_update"},
		{ApplyAsInsert.String(), "apply_as_insert"},
		{Skip.String(), "skip"},
		{Keep.String(), "keep"},
		{Retry.String(), "retry"},
		{Action(0).String(), "action(0)"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("String() = %q, want %q", tt.got, tt.want)
		}
	}
	if Type("nope").Err() != nil {
		t.Errorf(`Type("nope").Err() != nil, want nil`)
	}
}
