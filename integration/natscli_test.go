package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgactive-go/pgactive/monitor"
	"github.com/pgactive-go/pgactive/node"
	"github.com/pgactive-go/pgactive/stream"
)

// natsTool runs the real nats CLI against one server, with a configuration
// directory of its own so that no saved context applies.
type natsTool struct {
	path, url, config string
}

// findNATSCLI finds the nats CLI on PATH or where `go tool task deps`
// installs it ($GOPATH/bin); with CI=true a missing CLI fails the test.
func findNATSCLI(t *testing.T, url string) natsTool {
	t.Helper()
	path, err := exec.LookPath("nats")
	if err != nil {
		path = filepath.Join(build.Default.GOPATH, "bin", "nats")
		if fi, serr := os.Stat(path); serr != nil || fi.IsDir() {
			if os.Getenv("CI") == "true" {
				t.Fatalf("the nats CLI is neither on PATH nor at %s: run `go tool task deps`", path)
			}
			t.Skipf("the nats CLI is neither on PATH nor at %s: run `go tool task deps`", path)
		}
	}
	return natsTool{path: path, url: url, config: t.TempDir()}
}

// run runs `nats --server URL args...` and returns its standard output.
func (n natsTool) run(args ...string) (string, error) {
	cmd := exec.Command(n.path, append([]string{"--server", n.url, "--timeout", "10s"}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+n.config, "NATS_URL="+n.url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("nats %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// view runs `nats stream view` on a pseudo-terminal (it refuses to run
// without one) with script(1), for a few seconds: it waits at its "Next
// Page?" prompt. It reports false when it cannot run here.
func (n natsTool) view(t *testing.T, name string, allowDirect bool) (string, bool) {
	t.Helper()
	script, err := exec.LookPath("script")
	if err != nil || !allowDirect {
		// Paging an interest-retention stream needs direct get on the stream.
		t.Logf("nats stream view not run: script(1) found: %v, stream allows direct get: %v", err == nil, allowDirect)
		return "", false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	line := strings.Join([]string{n.path, "--server", n.url, "stream", "view", name, "2"}, " ")
	cmd := exec.CommandContext(ctx, script, "-qec", line, "/dev/null")
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+n.config)
	out, _ := cmd.Output()
	return string(out), true
}

// must runs the CLI and fails the test on error.
func (n natsTool) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// json runs the CLI and decodes its JSON output into v.
func (n natsTool) json(t *testing.T, v any, args ...string) {
	t.Helper()
	out := n.must(t, args...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("nats %s: %v:\n%s", strings.Join(args, " "), err, out)
	}
}

// consumerState is the part of `nats consumer info --json` the test reads.
type consumerState struct {
	Stream  string `json:"stream_name"`
	Name    string `json:"name"`
	Pending uint64 `json:"num_pending"`
	Acks    int    `json:"num_ack_pending"`
	Config  struct {
		Durable   string `json:"durable_name"`
		AckPolicy string `json:"ack_policy"`
	} `json:"config"`
}

// streamState is the part of `nats stream info --json` the test reads.
type streamState struct {
	Config struct {
		Name        string   `json:"name"`
		Subjects    []string `json:"subjects"`
		Retention   string   `json:"retention"`
		AllowDirect bool     `json:"allow_direct"`
	} `json:"config"`
	State struct {
		Messages  uint64 `json:"messages"`
		Consumers int    `json:"consumer_count"`
	} `json:"state"`
}

// TestNATSCLIShowsTheLayout drives the nats CLI against a running group:
// the streams, consumers, pending counts, message headers and key-value
// entries are where docs/operations.md says they are.
func TestNATSCLIShowsTheLayout(t *testing.T) {
	ns, pgs, agents, conns := startNodes(t, 2, itemsSchema)
	cli := findNATSCLI(t, ns.URL())
	mons := make([]*runningMonitor, 2)
	cfgs := make([]node.Config, 2)
	for i := range agents {
		createSchema(t, conns[i])
		cfgs[i] = node.Config{Group: "app", Node: fmt.Sprintf("node%d", i+1), DSN: pgs[i].DSN("app")}
		mons[i] = startMonitor(t, ns.URL(), agents[i], cfgs[i])
	}
	mustExec(t, conns[0], `INSERT INTO items VALUES (1, 'one')`)
	WaitSameRows(t, 30*time.Second, "items", conns[0], conns[1])
	WaitFor(t, 30*time.Second, "monitors ready", func() (bool, error) {
		return mons[0].Ready() && mons[1].Ready(), nil
	})

	s1, s2 := stream.StreamName("app", "node1"), stream.StreamName("app", "node2")
	var names []string
	cli.json(t, &names, "stream", "ls", "--names", "--json")
	for _, want := range []string{s1, s2} {
		if !slices.Contains(names, want) {
			t.Errorf("nats stream ls: no %s in %v", want, names)
		}
	}
	t.Logf("$ nats stream ls\n%s", cli.must(t, "stream", "ls"))

	var info streamState
	cli.json(t, &info, "stream", "info", s1, "--json")
	if info.Config.Name != s1 || !slices.Equal(info.Config.Subjects, []string{"pgactive.app.node1.>"}) ||
		info.Config.Retention != "interest" || info.State.Consumers != 1 {
		t.Errorf("nats stream info %s: got %+v", s1, info)
	}
	var consumers []string
	cli.json(t, &consumers, "consumer", "ls", s1, "--names", "--json")
	if !slices.Equal(consumers, []string{stream.ConsumerName("node2")}) {
		t.Errorf("nats consumer ls %s: got %v, want [apply_node2]", s1, consumers)
	}

	mons[1].Stop()
	agents[1].Stop()
	for i := 2; i <= 6; i++ {
		execPublished(t, conns[0], agents[0], `INSERT INTO items VALUES ($1, 'while node2 is stopped')`, i)
	}
	var ci consumerState
	WaitFor(t, 30*time.Second, "5 messages pending for apply_node2 in the CLI", func() (bool, error) {
		out, err := cli.run("consumer", "info", s1, "apply_node2", "--json")
		if err != nil {
			return false, err
		}
		ci = consumerState{}
		if err := json.Unmarshal([]byte(out), &ci); err != nil {
			return false, err
		}
		return ci.Pending+uint64(ci.Acks) == 5, fmt.Errorf("num_pending %d + num_ack_pending %d", ci.Pending, ci.Acks)
	})
	if ci.Stream != s1 || ci.Name != "apply_node2" || ci.Config.Durable != "apply_node2" || ci.Config.AckPolicy != "all" {
		t.Errorf("nats consumer info %s apply_node2: got %+v", s1, ci)
	}
	cli.json(t, &info, "stream", "info", s1, "--json")
	if info.State.Messages != 5 {
		t.Errorf("nats stream info %s: %d messages, want 5 kept for node2", s1, info.State.Messages)
	}
	t.Logf("$ nats stream info %s\n%s", s1, cli.must(t, "stream", "info", s1))
	t.Logf("$ nats consumer info %s apply_node2\n%s", s1, cli.must(t, "consumer", "info", s1, "apply_node2"))

	// Transactions are readable without decoding their bodies (`nats stream
	// view` shows the same, but only on a terminal).
	view := cli.must(t, "stream", "get", s1, "--last-for", stream.TxnSubject("app", "node1"))
	sysid := fmt.Sprint(agents[0].Identity().SysID)
	for _, want := range []string{"pgactive.app.node1.txn", stream.HeaderOrigin + ": node1", stream.HeaderCommitLSN + ": 0/",
		stream.HeaderCommitTime + ": 20", stream.HeaderTables + ": public.items", stream.HeaderMsgID + ": " + sysid + ":"} {
		if !strings.Contains(view, want) {
			t.Errorf("nats stream get %s: no %q in\n%s", s1, want, view)
		}
	}
	t.Logf("$ nats stream get %s --last-for %s\n%s", s1, stream.TxnSubject("app", "node1"), view)
	if out, ok := cli.view(t, s1, info.Config.AllowDirect); ok && !strings.Contains(out, stream.HeaderCommitLSN+": 0/") {
		t.Errorf("nats stream view %s: no %s header in\n%s", s1, stream.HeaderCommitLSN, out)
	}

	var row monitor.Row
	WaitFor(t, 30*time.Second, "lag row node1 → node2 in the bucket", func() (bool, error) {
		out, err := cli.run("kv", "get", stream.BucketName("app"), stream.LagKey("node1", "node2"), "--raw")
		if err != nil {
			return false, err
		}
		row = monitor.Row{}
		if err := json.Unmarshal([]byte(out), &row); err != nil {
			return false, err
		}
		return row.PendingMessages == 5 && !row.Active, fmt.Errorf("row %s", out)
	})
	keys := cli.must(t, "kv", "ls", stream.BucketName("app"))
	for _, want := range []string{stream.NodeKey("node1"), stream.NodeKey("node2"), stream.LagKey("node1", "node2"),
		stream.LagKey("node2", "node1"), monitor.WALKey("node1"), monitor.WALKey("node2"),
		monitor.ApplyKey("node1", "node2"), monitor.ApplyKey("node2", "node1")} {
		if !slices.Contains(strings.Fields(keys), want) {
			t.Errorf("nats kv ls %s: no %s in\n%s", stream.BucketName("app"), want, keys)
		}
	}
	t.Logf("$ nats kv ls %s\n%s", stream.BucketName("app"), keys)
	for _, key := range []string{stream.LagKey("node1", "node2"), monitor.WALKey("node1"), monitor.ApplyKey("node1", "node2")} {
		t.Logf("$ nats kv get %s %s --raw\n%s", stream.BucketName("app"), key, cli.must(t, "kv", "get", stream.BucketName("app"), key, "--raw"))
	}
}
