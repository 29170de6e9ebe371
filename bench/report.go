package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// GoalKind says how a figure is judged.
type GoalKind int

// The goal kinds of issue 7.
const (
	NoGoal       GoalKind = iota
	RatioAtLeast          // ours / native ≥ Value
	RatioAtMost           // ours / native ≤ Value
	OursAtMost            // ours ≤ Value, in the figure's unit
)

// Goal is the target a figure is judged against.
type Goal struct {
	Kind  GoalKind
	Value float64
}

func (g Goal) String() string {
	switch g.Kind {
	case RatioAtLeast:
		return fmt.Sprintf("≥ %.1f×", g.Value)
	case RatioAtMost:
		return fmt.Sprintf("≤ %.1f×", g.Value)
	case OursAtMost:
		return fmt.Sprintf("≤ %s", trimFloat(g.Value))
	}
	return ""
}

// Figure is one measured quantity, for pgactive-go and its baseline.
// A value not measured is NaN.
type Figure struct {
	Scenario string
	Metric   string
	Unit     string
	Ours     float64
	Native   float64
	Goal     Goal
}

// Ratio is ours / native, or NaN.
func (f Figure) Ratio() float64 {
	if math.IsNaN(f.Ours) || math.IsNaN(f.Native) || f.Native == 0 {
		return math.NaN()
	}
	return f.Ours / f.Native
}

// Met reports whether the goal is met; ok is false without a goal or figures.
func (f Figure) Met() (met, ok bool) {
	r := f.Ratio()
	switch f.Goal.Kind {
	case RatioAtLeast:
		return r >= f.Goal.Value, !math.IsNaN(r)
	case RatioAtMost:
		return r <= f.Goal.Value, !math.IsNaN(r)
	case OursAtMost:
		return f.Ours <= f.Goal.Value, !math.IsNaN(f.Ours)
	}
	return false, false
}

// Report is the outcome of a benchmark run.
type Report struct {
	Machine  Machine
	Command  string
	Scale    string
	Figures  []Figure
	Notes    []string // what each scenario measured and how, in order
	Failures []string // scenarios that did not complete, with why
	// Profiled is the scenario whose pgactive-go run Options.CPUProfile
	// profiles; "" when none.
	Profiled string
}

func (r *Report) add(f Figure) { r.Figures = append(r.Figures, f) }

func (r *Report) notef(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case math.Abs(v) >= 1000:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func formatRatio(r float64) string {
	switch {
	case r >= 100:
		return fmt.Sprintf("%.0f×", r)
	case r >= 10:
		return fmt.Sprintf("%.1f×", r)
	case r >= 0.1:
		return fmt.Sprintf("%.2f×", r)
	}
	return fmt.Sprintf("%.3f×", r)
}

func trimFloat(v float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

func (f Figure) cells() []string {
	ratio := "–"
	if r := f.Ratio(); !math.IsNaN(r) {
		ratio = formatRatio(r)
	}
	goal, verdict := f.Goal.String(), ""
	if met, ok := f.Met(); ok {
		verdict = "no"
		if met {
			verdict = "yes"
		}
	} else if f.Goal.Kind != NoGoal {
		verdict = "n/a"
	}
	return []string{f.Scenario, f.Metric + " (" + f.Unit + ")", formatValue(f.Ours), formatValue(f.Native), ratio, goal, verdict}
}

var tableHeader = []string{"scenario", "metric", "pgactive-go", "native", "ratio", "goal", "met"}

// WriteText prints the figures as an aligned table, then notes and failures.
func (r *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "\npgactive-go versus native logical replication (scale %s)\n%s\n\n", r.Scale, r.Machine.Line())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(tableHeader, "\t"))
	for _, f := range r.Figures {
		fmt.Fprintln(tw, strings.Join(f.cells(), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range r.Notes {
			fmt.Fprintln(w, "- "+n)
		}
	}
	for _, f := range r.Failures {
		fmt.Fprintln(w, "FAILED: "+f)
	}
	_, err := fmt.Fprintln(w)
	return err
}

// WriteMarkdown writes the machine, the command, the table and the notes
// as a Markdown fragment.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s\n\n", r.Machine.Markdown())
	fmt.Fprintf(&b, "Command: `%s`\n\n", r.Command)
	fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(tableHeader, " | "), strings.Repeat("---|", len(tableHeader)))
	for _, f := range r.Figures {
		cells := f.cells()
		for i, c := range cells {
			cells[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "\n**Failed:** %s\n", f)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
