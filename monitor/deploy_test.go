package monitor

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// metricName finds the exporter's metric names in PromQL.
var metricName = regexp.MustCompile(`\bpgactive_[a-z_]+\b`)

// exposed returns the names of the metrics GET /metrics really serves.
func exposed(t *testing.T) map[string]bool {
	t.Helper()
	ms := exampleGroup(t)
	fams := scrapeHandler(t, NewHandler(HandlerConfig{Monitors: func() []*Monitor { return ms }}))
	names := map[string]bool{}
	for name := range fams {
		names[name] = true
	}
	d := newDescs()
	if got, want := len(names), len(d.all()); got != want {
		t.Fatalf("the example exposes %d metrics, the exporter describes %d: make the example cover every metric", got, want)
	}
	return names
}

// checkNames fails the test for every name in expr the exporter does not serve.
func checkNames(t *testing.T, where, expr string, names map[string]bool) []string {
	t.Helper()
	found := metricName.FindAllString(expr, -1)
	if len(found) == 0 {
		t.Errorf("%s: expression %q uses no pgactive metric", where, expr)
	}
	for i, n := range found {
		// A histogram's series: name_bucket, name_sum, name_count.
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && names[base] {
				found[i], n = base, base
			}
		}
		if !names[n] {
			t.Errorf("%s: %s is not a metric GET /metrics serves (expression %q)", where, n, expr)
		}
	}
	return found
}

type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestDeployAlertRules(t *testing.T) {
	names := exposed(t)
	b, err := os.ReadFile("../deploy/prometheus/pgactive-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("parse alert rules: %v", err)
	}
	exprs := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			where := g.Name + "/" + r.Alert
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("%s: a rule without alert name or expression", where)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", where, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: summary and description annotations are required", where)
			}
			checkNames(t, where, r.Expr, names)
			exprs[r.Alert] = r.Expr
		}
	}
	// The quick start's three alerts, plus lag seconds.
	for alert, want := range map[string][]string{
		"PgactivePathNotActive":             {"pgactive_lag_active", "== 0"},
		"PgactivePendingWALDecodingGrowing": {"deriv(pgactive_lag_pending_wal_decoding_bytes[10m])"},
		"PgactivePendingWALToApplyGrowing":  {"deriv(pgactive_lag_pending_wal_to_apply_bytes[10m])"},
		"PgactiveLagHigh":                   {"pgactive_lag_seconds"},
	} {
		expr, ok := exprs[alert]
		if !ok {
			t.Errorf("no alert %s", alert)
			continue
		}
		for _, w := range want {
			if !strings.Contains(expr, w) {
				t.Errorf("%s: expression %q does not use %s", alert, expr, w)
			}
		}
	}
}

// dashboardExprs collects the expr of every target of every panel, rows'
// nested panels included.
func dashboardExprs(v any, out map[string]string, title string) {
	switch x := v.(type) {
	case map[string]any:
		if s, ok := x["title"].(string); ok {
			title = s
		}
		if e, ok := x["expr"].(string); ok {
			out[e] = title
		}
		for _, c := range x {
			dashboardExprs(c, out, title)
		}
	case []any:
		for _, c := range x {
			dashboardExprs(c, out, title)
		}
	}
}

func TestDeployGrafanaDashboard(t *testing.T) {
	names := exposed(t)
	b, err := os.ReadFile("../deploy/grafana/pgactive.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("parse dashboard: %v", err)
	}
	panels, _ := dash["panels"].([]any)
	if dash["title"] == "" || dash["uid"] == "" || len(panels) == 0 {
		t.Fatalf("dashboard without title, uid or panels")
	}
	exprs := map[string]string{}
	dashboardExprs(panels, exprs, "")
	used := map[string]bool{}
	for expr, title := range exprs {
		for _, n := range checkNames(t, "panel "+title, expr, names) {
			used[n] = true
		}
	}
	var missing []string
	for n := range names {
		if !used[n] && n != "pgactive_apply_last_commit_timestamp_seconds" {
			missing = append(missing, n)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("no panel shows %v", missing)
	}
}
