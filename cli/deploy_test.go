package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/metrics"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

const (
	dashboardFile = "../deploy/grafana/serverlessd-dashboard.json"
	alertsFile    = "../deploy/prometheus/serverlessd-alerts.yaml"
)

// exportedMetrics lists what serve's registry can export, built with the
// calls serve makes and everything on (per-project labels, backups). Only
// descriptors are read, so the subsystems the scrape-time gauges read
// from need not exist.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	met := metrics.New(true)
	registerMetrics(met, nil, nil, nil)
	met.Register(backup.NewMetrics().Collectors()...)
	names := map[string]bool{}
	for _, n := range met.Names() {
		names[n] = true
	}
	for _, n := range []string{"serverlessd_store_up", "serverlessd_computes", "serverlessd_wake_duration_seconds",
		"serverlessd_backup_behind_computes", "process_cpu_seconds_total", "go_goroutines"} {
		if !names[n] {
			t.Fatalf("the daemon's registry lacks %s; it lists %v", n, met.Names())
		}
	}
	return names
}

// unknownMetrics returns the names an expression uses that the daemon
// does not export. A histogram's series are its name with _bucket, _sum
// or _count.
func unknownMetrics(expr string, exported map[string]bool) []string {
	var out []string
	for _, n := range promqlMetrics(expr) {
		base := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, suffix); ok && exported[b] {
				base = b
			}
		}
		if !exported[base] {
			out = append(out, n)
		}
	}
	return out
}

var (
	promqlStrings  = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	grafanaVars    = regexp.MustCompile(`\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*|\[\[[^\]]*\]\]`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promqlRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlTokens   = regexp.MustCompile(`[0-9][0-9a-zA-Z_.]*|[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
		"group_left", "group_right", "inf", "nan"}
)

// promqlMetrics returns the metric names a PromQL expression selects:
// what is left once strings, label matchers, ranges, grouping labels,
// Grafana variables, numbers, durations, keywords and the names called
// as functions or aggregations are taken out.
func promqlMetrics(expr string) []string {
	s := promqlStrings.ReplaceAllString(expr, " ")
	s = grafanaVars.ReplaceAllString(s, " ")
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlRanges.ReplaceAllString(s, " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range promqlTokens.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		called := strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(")
		if tok[0] >= '0' && tok[0] <= '9' || called || slices.Contains(promqlKeywords, strings.ToLower(tok)) {
			continue
		}
		if !slices.Contains(names, tok) {
			names = append(names, tok)
		}
	}
	return names
}

func TestPromQLMetrics(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (le, kind) (rate(a_bucket{kind="cold", instance=~"$instance"}[$__rate_interval])))`: {"a_bucket"},
		`sum(rate(a_total[5m])) by (instance) / on (instance) group_left b > 0.5 and c offset 1h`:                            {"a_total", "b", "c"},
		`label_replace(up_x{job="x"}, "dst", "$1", "src", "(.*)") or vector(0)`:                                              {"up_x"},
		`max_over_time(a[1h:5m]) unless ignoring(state) b{state!~"x|y"} * 1e3`:                                               {"a", "b"},
		`rate(process_cpu_seconds_total{instance=~"${instance}"}[$__rate_interval])`:                                         {"process_cpu_seconds_total"},
	} {
		if got := promqlMetrics(expr); !slices.Equal(got, want) {
			t.Errorf("promqlMetrics(%q) = %v, want %v", expr, got, want)
		}
	}
}

// TestDashboardMetricsExist checks that every query of the Grafana
// dashboard names only metrics the daemon exports, and that every panel
// and query takes its data source from the dashboard's variable.
func TestDashboardMetricsExist(t *testing.T) {
	exported := exportedMetrics(t)
	var dash map[string]any
	readJSON(t, dashboardFile, &dash)
	if v, _ := dash["schemaVersion"].(float64); v < 36 {
		t.Errorf("schemaVersion %v: want a current dashboard (36 or later)", dash["schemaVersion"])
	}
	exprs, sources := dashboardQueries(dash)
	if len(exprs) < 20 {
		t.Fatalf("found %d queries in %s; the walk misses them", len(exprs), dashboardFile)
	}
	for _, e := range exprs {
		if unknown := unknownMetrics(e, exported); len(unknown) > 0 {
			t.Errorf("%s: query %q uses %v, which the daemon does not export", dashboardFile, e, unknown)
		}
	}
	for _, uid := range sources {
		if uid != "${datasource}" {
			t.Errorf("%s: data source uid %q: use the ${datasource} variable, not a Grafana's own uid", dashboardFile, uid)
		}
	}
}

// dashboardQueries walks a dashboard for its PromQL expressions (panel
// targets, and query variables, whose label_values(metric, label) is
// Grafana's) and the uids of every data source it names.
func dashboardQueries(v any) (exprs, uids []string) {
	switch v := v.(type) {
	case map[string]any:
		if e, ok := v["expr"].(string); ok {
			exprs = append(exprs, e)
		}
		if v["type"] == "query" {
			q, _ := v["query"].(string)
			if m, ok := v["query"].(map[string]any); ok {
				q, _ = m["query"].(string)
			}
			if sm := labelValues.FindStringSubmatch(q); sm != nil {
				q = sm[1]
			}
			exprs = append(exprs, q)
		}
		if ds, ok := v["datasource"].(map[string]any); ok {
			uid, _ := ds["uid"].(string)
			uids = append(uids, uid)
		}
		for _, child := range v {
			e, u := dashboardQueries(child)
			exprs, uids = append(exprs, e...), append(uids, u...)
		}
	case []any:
		for _, child := range v {
			e, u := dashboardQueries(child)
			exprs, uids = append(exprs, e...), append(uids, u...)
		}
	}
	return exprs, uids
}

var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)

// alertRules is the Prometheus rule file format.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRules checks the shape of every alerting rule and that its
// expression names only metrics the daemon exports.
func TestAlertRules(t *testing.T) {
	exported := exportedMetrics(t)
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	seen := map[string]bool{}
	for _, g := range rules.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("%s: a group needs a name and rules: %q has %d", alertsFile, g.Name, len(g.Rules))
		}
		for _, r := range g.Rules {
			where := alertsFile + ": " + g.Name + "/" + r.Alert
			switch {
			case r.Alert == "" || r.Record != "":
				t.Errorf("%s: every rule must be an alert", where)
			case seen[r.Alert]:
				t.Errorf("%s: alert named twice", where)
			case r.Expr == "":
				t.Errorf("%s: no expr", where)
			case r.Labels["severity"] == "":
				t.Errorf("%s: no labels.severity", where)
			case r.Annotations["summary"] == "" || r.Annotations["description"] == "":
				t.Errorf("%s: annotations need a summary and a description", where)
			}
			seen[r.Alert] = true
			if d, err := model.ParseDuration(r.For); err != nil || d == 0 {
				t.Errorf("%s: for: %q must be a duration above zero (%v)", where, r.For, err)
			}
			if unknown := unknownMetrics(r.Expr, exported); len(unknown) > 0 {
				t.Errorf("%s: expr %q uses %v, which the daemon does not export", where, r.Expr, unknown)
			}
		}
	}
	for _, want := range []string{"serverlessd_store_up", "serverlessd_backup_behind_computes",
		"serverlessd_backup_upload_failures_total", "serverlessd_wake_duration_seconds_bucket",
		"serverlessd_operation_failures_total", "serverlessd_computes"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("%s: no rule watches %s", alertsFile, want)
		}
	}
}

// TestStoreUp reads 1 from a store that answers and 0 from one that
// does not.
func TestStoreUp(t *testing.T) {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	if got := storeUp(st); got != 1 {
		t.Errorf("store_up of an open store = %v, want 1", got)
	}
	st.Close()
	if got := storeUp(st); got != 0 {
		t.Errorf("store_up of a closed store = %v, want 0", got)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
