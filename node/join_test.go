package node

import (
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/stream"
)

// someJetStream stands for a JetStream context that Validate only checks is there.
type someJetStream struct{ jetstream.JetStream }

func TestJoinConfigValidate(t *testing.T) {
	valid := func() JoinConfig {
		return JoinConfig{Group: "g", Node: "n3", DSN: "host=a", SourceNode: "n1", SourceDSN: "host=b",
			Layout: &stream.Layout{JS: someJetStream{}, Group: "g"}}
	}
	if c := valid(); c.Validate() != nil {
		t.Fatalf("valid config: %v", c.Validate())
	}
	for _, tc := range []struct {
		name   string
		change func(*JoinConfig)
		want   string
	}{
		{"no layout", func(c *JoinConfig) { c.Layout = nil }, "layout"},
		{"no JetStream", func(c *JoinConfig) { c.Layout.JS = nil }, "layout"},
		{"another group's layout", func(c *JoinConfig) { c.Layout.Group = "h" }, "layout"},
		{"no source", func(c *JoinConfig) { c.SourceNode = "" }, "source"},
		{"no DSN", func(c *JoinConfig) { c.DSN = "" }, "DSN"},
		{"from itself", func(c *JoinConfig) { c.SourceNode = "n3" }, "itself"},
		{"negative workers", func(c *JoinConfig) { c.Workers = -1 }, "workers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestStartPositions(t *testing.T) {
	snap := &snapshot{consistent: 0x3000100, applied: map[string]pglogrepl.LSN{"n2": 0x2000000, "n4": 0}}
	got := startPositions("n1", snap)
	want := map[string]pglogrepl.LSN{"n1": 0x30000FF, "n2": 0x2000000, "n4": 0}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("start of %s: got %s, want %s", k, got[k], v)
		}
	}
}

func TestJoinProgressReports(t *testing.T) {
	var reports []JoinProgress
	j := &joiner{cfg: JoinConfig{Progress: func(p JoinProgress) { reports = append(reports, p) }},
		log: slog.New(slog.DiscardHandler)}
	j.setTotal(1000)
	j.report(PhaseCopy)
	for _, copied := range []int64{100, 50, 995, 1000} {
		j.reportCopied(copied)
	}
	var got []int64
	for _, p := range reports[1:] {
		got = append(got, p.CopiedBytes)
	}
	want := []int64{100, 100, 990, 1000} // never back, under 99% until all is copied
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("copied bytes reported: got %v, want %v", got, want)
		}
	}
	if p := reports[len(reports)-1]; p.Percent() != 100 {
		t.Errorf("percent at the end: got %v", p.Percent())
	}
	if p := (JoinProgress{Phase: PhaseDone}); p.Percent() != 100 {
		t.Errorf("percent of an empty database once done: got %v", p.Percent())
	}
	if p := (JoinProgress{Phase: PhaseSchema}); p.Percent() != 0 {
		t.Errorf("percent of an empty database before the copy: got %v", p.Percent())
	}
}

func TestTempSlotName(t *testing.T) {
	a, err := tempSlotName()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tempSlotName()
	if !regexp.MustCompile(`^pgactive_join_[0-9a-f]{12}$`).MatchString(a) || a == b {
		t.Errorf("slot names %q, %q: want distinct valid slot names", a, b)
	}
}
