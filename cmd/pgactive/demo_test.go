package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgactive-go/pgactive/integration"
)

// TestDemo runs `pgactive demo` (what `go tool task demo` runs): two real
// PostgreSQL clusters, the embedded NATS server and the agents, through the
// quick start. The demo checks each step's outcome itself and fails when one
// does not happen; the test checks that it ran to the end and showed them.
func TestDemo(t *testing.T) {
	t.Setenv("PG_BINDIR", integration.PGBinDir(t)) // fails under CI=true, skips otherwise, when missing
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	start := time.Now()
	if err := runDemo(ctx, nil, &out, &errOut); err != nil {
		t.Fatalf("demo: %v\noutput:\n%s\nlog:\n%s", err, out.String(), tail(errOut.String(), 40))
	}
	t.Logf("demo ran in %s", time.Since(start).Round(100*time.Millisecond))
	for _, want := range []string{
		"== endpoint1: step 14, the row written on endpoint2 is here",
		"successfully restored database",
		"update_update | last_update_wins_keep_remote | sapone | savon",
		"update_update | last_update_wins_keep_local | savon | sapone",
		"the agents deleted both nodes' streams and consumers from NATS",
		"== done in",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	// The agents stop before the NATS server: no disconnect in the log.
	if strings.Contains(errOut.String(), "NATS disconnected") {
		t.Errorf("the demo's log warns of a NATS disconnect:\n%s", tail(errOut.String(), 40))
	}
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
