package stream

import "testing"

func TestNames(t *testing.T) {
	tests := []struct{ got, want string }{
		{Token("endpoint1-app"), "endpoint1-app"},
		{Token("a.b c*>"), "a_b_c__"},
		{Token(""), "_"},
		{Token("café"), "caf__"},
		{StreamName("app", "endpoint1-app"), "PGACTIVE_app_endpoint1-app"},
		{TxnSubject("app", "n.1"), "pgactive.app.n_1.txn"},
		{ConsumerName("node 2"), "apply_node_2"},
		{BucketName("app"), "PGACTIVE_app"},
		{NodeKey("n1"), "nodes.n1"},
		{LagKey("a", "b"), "lag.a.b"},
		{ParkedSubject("g", "a", "b"), "pgactive_parked.g.a.b"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("case %d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}
