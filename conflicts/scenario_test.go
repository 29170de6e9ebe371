package conflicts

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var updateFlag = flag.Bool("update", false, "rewrite the scenarios' golden files")

// TestScenarios runs the scripts in testdata/scenarios/*.txt on model nodes
// and compares the trace with the .golden file beside each (-update rewrites
// them). The script language, one command a line, # starts a comment:
//
//	nodes a=1 b=2                     name the nodes and give their IDs
//	write a insert k value @3         a local write on a at time 3s (update too)
//	write a update k value @3 partial an update without the full row
//	write a delete k @4
//	deliver a b                       deliver the next change from a to b
//	deliver-all                       deliver everything that can be
//	state                             print every node's rows
//	converged                         fail unless all nodes hold the same rows
//	diverged                          fail unless they do not
func TestScenarios(t *testing.T) {
	scripts, err := filepath.Glob(filepath.Join("testdata", "scenarios", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) == 0 {
		t.Fatal("no scenarios in testdata/scenarios")
	}
	for _, script := range scripts {
		name := strings.TrimSuffix(filepath.Base(script), ".txt")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(script)
			if err != nil {
				t.Fatal(err)
			}
			got := runScenario(t, script, string(src))
			golden := strings.TrimSuffix(script, ".txt") + ".golden"
			if *updateFlag {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden file (create it with -update): %v", err)
			}
			if got != string(want) {
				t.Errorf("trace differs from %s (rerun with -update if intended)\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

// scenario is the state of one script run.
type scenario struct {
	t      *testing.T
	out    strings.Builder
	names  []string // node names in declaration order
	nodes  map[string]*replica
	byID   map[NodeID]string
	queues map[[2]string][]rowChange
}

func runScenario(t *testing.T, file, src string) string {
	s := &scenario{t: t, nodes: map[string]*replica{}, byID: map[NodeID]string{}, queues: map[[2]string][]rowChange{}}
	for i, line := range strings.Split(strings.TrimRight(src, "\n"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			fmt.Fprintln(&s.out, line)
			continue
		}
		fmt.Fprintf(&s.out, "> %s\n", line)
		if err := s.run(strings.Fields(line)); err != nil {
			t.Fatalf("%s:%d: %s: %v", file, i+1, line, err)
		}
	}
	return s.out.String()
}

func (s *scenario) run(args []string) error {
	switch args[0] {
	case "nodes":
		return s.declare(args[1:])
	case "write":
		return s.write(args[1:])
	case "deliver":
		if len(args) != 3 {
			return fmt.Errorf("want: deliver FROM TO")
		}
		_, err := s.deliver([2]string{args[1], args[2]})
		return err
	case "deliver-all":
		return s.deliverAll()
	case "state":
		for _, n := range s.names {
			fmt.Fprintf(&s.out, "%s:\n", n)
			for _, l := range strings.Split(strings.TrimSuffix(s.nodes[n].stateWith(s.name), "\n"), "\n") {
				fmt.Fprintf(&s.out, "  %s\n", l)
			}
		}
		return nil
	case "converged", "diverged":
		same := true
		for _, n := range s.names[1:] {
			same = same && s.nodes[n].state() == s.nodes[s.names[0]].state()
		}
		if same != (args[0] == "converged") {
			s.t.Errorf("%s: nodes are not %s", strings.Join(args, " "), args[0])
		}
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func (s *scenario) name(id NodeID) string {
	if n, ok := s.byID[id]; ok {
		return n
	}
	return numeric(id)
}

func (s *scenario) declare(args []string) error {
	for _, a := range args {
		name, id, ok := strings.Cut(a, "=")
		n, err := strconv.ParseUint(id, 10, 64)
		if !ok || err != nil || n == 0 {
			return fmt.Errorf("want NAME=ID with ID > 0, got %q", a)
		}
		s.names = append(s.names, name)
		s.nodes[name] = newReplica(NodeID{SysID: n})
		s.byID[NodeID{SysID: n}] = name
	}
	return nil
}

// write parses "NODE OP KEY [VALUE] @SECONDS [partial]", writes locally and
// queues the change for the other nodes.
func (s *scenario) write(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("want: write NODE OP KEY [VALUE] @T [partial]")
	}
	r, ok := s.nodes[args[0]]
	if !ok {
		return fmt.Errorf("unknown node %q", args[0])
	}
	c := rowChange{Key: args[2], Change: Change{Origin: r.self, FullRow: true}}
	switch args[1] {
	case "insert":
		c.Op = Insert
	case "update":
		c.Op = Update
	case "delete":
		c.Op = Delete
	default:
		return fmt.Errorf("unknown operation %q", args[1])
	}
	rest := args[3:]
	if c.Op != Delete {
		if len(rest) == 0 {
			return fmt.Errorf("missing value")
		}
		c.Value, rest = rest[0], rest[1:]
	}
	if len(rest) == 0 || !strings.HasPrefix(rest[0], "@") {
		return fmt.Errorf("missing @time")
	}
	sec, err := strconv.Atoi(rest[0][1:])
	if err != nil {
		return fmt.Errorf("bad time %q", rest[0])
	}
	c.CommitTime = epoch.Add(time.Duration(sec) * time.Second)
	if len(rest) > 1 && rest[1] == "partial" {
		c.FullRow = false
	}
	r.write(c)
	for _, n := range s.names {
		if n != args[0] {
			q := [2]string{args[0], n}
			s.queues[q] = append(s.queues[q], c)
		}
	}
	return nil
}

// deliver delivers the head of queue q, leaving it there on a retry. It
// reports whether the change was taken off the queue.
func (s *scenario) deliver(q [2]string) (bool, error) {
	if len(s.queues[q]) == 0 {
		return false, fmt.Errorf("nothing to deliver from %s to %s", q[0], q[1])
	}
	c := s.queues[q][0]
	d, err := s.nodes[q[1]].deliver(c)
	if err != nil {
		return false, err
	}
	fmt.Fprintf(&s.out, "%s <- %s: %s @%s: %v", q[1], q[0], c, stamp(c.CommitTime), d.Action)
	if d.Conflict {
		fmt.Fprintf(&s.out, " [%s, %s]", d.Type, d.Resolution)
	}
	if d.RecordTombstone {
		fmt.Fprint(&s.out, " +tombstone")
	}
	fmt.Fprintln(&s.out)
	if d.Action == Retry {
		return false, nil
	}
	s.queues[q] = s.queues[q][1:]
	return true, nil
}

// deliverAll delivers, pass after pass over the queues in declaration order,
// until nothing more can be delivered, and reports changes left waiting.
func (s *scenario) deliverAll() error {
	for progress := true; progress; {
		progress = false
		for _, from := range s.names {
			for _, to := range s.names {
				q := [2]string{from, to}
				if len(s.queues[q]) == 0 {
					continue
				}
				done, err := s.deliver(q)
				if err != nil {
					return err
				}
				progress = progress || done
			}
		}
	}
	waiting := 0
	for _, q := range s.queues {
		waiting += len(q)
	}
	if waiting > 0 {
		fmt.Fprintf(&s.out, "stalled: %d changes wait\n", waiting)
	}
	return nil
}
