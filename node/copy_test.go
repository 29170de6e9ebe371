package node

import "testing"

func TestCopyTracker(t *testing.T) {
	tables := []copyTable{{name: "a", size: 1000}, {name: "b", size: 500}, {name: "c", size: 0}}
	tr := newCopyTracker(tables, 2)
	if tr.total != 1500 {
		t.Fatalf("total: got %d, want 1500", tr.total)
	}
	tr.start(0, 1000)
	tr.start(1, 500)
	tr.workers[0].streamed.Store(400)
	tr.workers[1].streamed.Store(900) // text output larger than the table on disk
	if got := tr.copied(); got != 900 {
		t.Errorf("copied while streaming: got %d, want 900 (a table counts at most its size)", got)
	}
	tr.finish(1, 500)
	tr.start(1, 0)
	tr.workers[1].streamed.Store(50) // an empty table on disk still streams bytes
	if got := tr.copied(); got != 900 {
		t.Errorf("copied after a table ended: got %d, want 900", got)
	}
	tr.finish(1, 0)
	tr.finish(0, 1000)
	if got := tr.copied(); got != tr.total {
		t.Errorf("copied at the end: got %d, want %d", got, tr.total)
	}
}

func TestCopyTableSQL(t *testing.T) {
	tb := copyTable{schema: "my schema", name: `odd"name`, columns: []string{"id", "Total Sum"}}
	if got, want := tb.ident(), `"my schema"."odd""name"`; got != want {
		t.Errorf("ident: got %s, want %s", got, want)
	}
	if got, want := tb.columnList(), ` ("id", "Total Sum")`; got != want {
		t.Errorf("columnList: got %s, want %s", got, want)
	}
	if got := (&copyTable{schema: "s", name: "t"}).columnList(); got != "" {
		t.Errorf("columnList of a table without columns: got %q, want empty", got)
	}
	if got, want := quoteLiteral("00000003-0000000A-1'"), "'00000003-0000000A-1'''"; got != want {
		t.Errorf("quoteLiteral: got %s, want %s", got, want)
	}
}
