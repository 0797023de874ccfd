package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestMetricsDocMatchesList checks that docs/metrics.md documents exactly Metrics.
func TestMetricsDocMatchesList(t *testing.T) {
	b, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(egressd_[a-z0-9_]+)` \\| (\\w+) \\| ([^|]+) \\| (\\w+) \\|")
	var documented []Metric
	for _, line := range strings.Split(string(b), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var labels []string
		for _, l := range strings.Split(m[3], ",") {
			labels = append(labels, strings.Trim(strings.TrimSpace(l), "`"))
		}
		documented = append(documented, Metric{Name: m[1], Type: MetricType(m[2]), Labels: labels, Component: Component(m[4])})
	}
	if len(documented) != len(Metrics) {
		t.Errorf("docs/metrics.md documents %d metrics, metrics.go lists %d", len(documented), len(Metrics))
	}
	for i := range min(len(documented), len(Metrics)) {
		want := Metrics[i]
		want.Help = ""
		if fmt.Sprint(documented[i]) != fmt.Sprint(want) {
			t.Errorf("docs/metrics.md row %d is %v, metrics.go has %v", i+1, documented[i], want)
		}
	}
	for _, m := range Metrics {
		if strings.HasSuffix(m.Name, "_total") != (m.Type == Counter) {
			t.Errorf("%s: counters and only counters end in _total", m.Name)
		}
	}
}

// TestDashboardUsesKnownMetrics checks every query of the Grafana dashboard.
func TestDashboardUsesKnownMetrics(t *testing.T) {
	b, err := os.ReadFile("files/dashboards/egressd.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.UID == "" {
		t.Error("the dashboard has no uid; re-imports would duplicate it")
	}
	used := map[string]bool{}
	queries := 0
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			queries++
			for _, name := range checkPromQL(t, "panel "+p.Title, target.Expr) {
				used[name] = true
			}
		}
	}
	labelValues := regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
	for _, v := range dash.Templating.List {
		for _, m := range labelValues.FindAllStringSubmatch(string(v.Query), -1) {
			metric, ok := Lookup(m[1])
			if !ok {
				t.Errorf("variable %s: unknown metric %s", v.Name, m[1])
			} else if !slices.Contains(metric.Labels, m[2]) {
				t.Errorf("variable %s: %s has no label %s", v.Name, m[1], m[2])
			}
		}
	}
	if queries == 0 {
		t.Fatal("the dashboard has no queries")
	}
	// The issue asks for these views; each needs its metric on the dashboard.
	for _, name := range []string{
		"egressd_gateways", "egressd_failovers_total", "egressd_cloud_calls_total",
		"egressd_cloud_errors_total", "egressd_datapath_drops_total", "egressd_datapath_packets_total",
	} {
		if !used[name] {
			t.Errorf("the dashboard does not show %s", name)
		}
	}
}

// TestAlertsUseKnownMetrics renders the PrometheusRule and checks every expression.
func TestAlertsUseKnownMetrics(t *testing.T) {
	r := mustRender(t, with(profiles["aws"], "monitoring.prometheusRule.enabled", true))
	rules := r.ofKind("PrometheusRule")
	if len(rules) != 1 {
		t.Fatalf("%d PrometheusRules, want 1", len(rules))
	}
	groups, _, err := unstructured.NestedSlice(rules[0].Object, "spec", "groups")
	if err != nil {
		t.Fatal(err)
	}
	alerts := map[string]bool{}
	for _, g := range groups {
		rs, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, ru := range rs {
			rule := ru.(map[string]any)
			name, _ := rule["alert"].(string)
			expr, _ := rule["expr"].(string)
			if name == "" || expr == "" {
				t.Errorf("rule %v lacks an alert name or expression", rule)
				continue
			}
			alerts[name] = true
			checkPromQL(t, "alert "+name, expr)
			ann, _, _ := unstructured.NestedStringMap(rule, "annotations")
			if ann["summary"] == "" || !strings.Contains(ann["runbook_url"], "#"+strings.ToLower(name)) {
				t.Errorf("alert %s: summary %q, runbook_url %q", name, ann["summary"], ann["runbook_url"])
			}
			if !strings.Contains(ann["summary"], "{{ $labels.") {
				t.Errorf("alert %s: the summary names no label; Helm may have eaten the Prometheus template", name)
			}
			sev, _, _ := unstructured.NestedString(rule, "labels", "severity")
			if sev != "warning" && sev != "critical" {
				t.Errorf("alert %s: severity %q", name, sev)
			}
		}
	}
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range alerts {
		if !strings.Contains(string(doc), "### "+name+"\n") {
			t.Errorf("alert %s has no section in docs/metrics.md (its runbook)", name)
		}
	}
	// The four alerts.
	for _, name := range []string{"EgressdGatewayGroupDegraded", "EgressdEgressIPNotAssigned", "EgressdCloudThrottling", "EgressdDatapathDrops"} {
		if !alerts[name] {
			t.Errorf("no alert %s", name)
		}
	}
}

// TestPromQLChecker makes sure the checker catches what it is for.
func TestPromQLChecker(t *testing.T) {
	good := `histogram_quantile(0.99, sum by (provider, operation, le) (rate(egressd_cloud_call_duration_seconds_bucket[5m]))) > 1
		and on (provider) sum without (operation) (egressd_cloud_calls_total{provider="aws"} offset 1h) unless count(egressd_gateways{state=~"A|B"} == 0)`
	refs, grouping, err := parsePromQL(good)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range refs {
		names = append(names, r.metric)
	}
	if want := []string{"egressd_cloud_call_duration_seconds_bucket", "egressd_cloud_calls_total", "egressd_gateways"}; !slices.Equal(names, want) {
		t.Errorf("metrics %v, want %v", names, want)
	}
	if want := []string{"provider", "operation", "le", "provider", "operation"}; !slices.Equal(grouping, want) {
		t.Errorf("grouping %v, want %v", grouping, want)
	}
	for _, bad := range []string{
		`sum(egresd_gateways)`,                               // misspelt metric
		`sum(egressd_gateways{stat="Active"})`,               // misspelt label
		`sum by (zones) (egressd_gateways)`,                  // unknown grouping label
		`rat(egressd_failovers_total[5m])`,                   // unknown function
		`sum(egressd_cloud_calls_total{kind="x"})`,           // label of another metric
		`egressd_datapath_drops_total{group="a"`,             // unterminated
		`{__name__="egressd_gateways"}`,                      // anonymous selector
		`sum(rate(egressd_cloud_call_duration_seconds[5m]))`, // histogram without suffix
	} {
		ft := &fakeT{}
		checkPromQL(ft, "case", bad)
		if !ft.failed {
			t.Errorf("checker accepted %q", bad)
		}
	}
}

type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper()               {}
func (f *fakeT) Errorf(string, ...any) { f.failed = true }

// checkPromQL reports every metric an expression uses that Metrics lacks, every label matcher
// or grouping label the metrics do not have, and unknown functions. It returns the metric
// names (histogram suffixes removed).
func checkPromQL(t testing.TB, where, expr string) []string {
	t.Helper()
	refs, grouping, err := parsePromQL(expr)
	if err != nil {
		t.Errorf("%s: %v in %q", where, err, expr)
		return nil
	}
	var names []string
	known := map[string]bool{}
	for _, r := range refs {
		m, ok := Lookup(r.metric)
		if !ok || (m.Type == Histogram && r.metric == m.Name) {
			t.Errorf("%s: unknown metric %s (docs/metrics.md)", where, r.metric)
			continue
		}
		names = append(names, m.Name)
		labels := slices.Clone(m.Labels)
		if r.metric == m.Name+"_bucket" {
			labels = append(labels, "le")
		}
		for _, l := range labels {
			known[l] = true
		}
		for _, l := range r.labels {
			if !slices.Contains(labels, l) {
				t.Errorf("%s: %s has no label %q", where, r.metric, l)
			}
		}
	}
	for _, l := range grouping {
		if !known[l] {
			t.Errorf("%s: grouping by %q, which none of its metrics has", where, l)
		}
	}
	return names
}

type promRef struct {
	metric string
	labels []string
}

var (
	promFunctions = wordSet(`sum min max avg count group stddev stdvar topk bottomk quantile
		count_values rate irate increase delta idelta deriv predict_linear resets changes
		histogram_quantile abs absent absent_over_time ceil floor round clamp clamp_min clamp_max
		label_replace label_join vector scalar sort sort_desc time timestamp exp ln log2 log10 sqrt
		avg_over_time min_over_time max_over_time sum_over_time count_over_time last_over_time
		quantile_over_time stddev_over_time present_over_time`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true}
	// promLabelLists are followed by a parenthesised list of label names.
	promLabelLists = map[string]bool{
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	}
)

func wordSet(words string) map[string]bool {
	out := map[string]bool{}
	for _, w := range strings.Fields(words) {
		out[w] = true
	}
	return out
}

// parsePromQL is a small lexer for the PromQL the chart writes: it finds metric selectors with
// their label matchers, and the labels of by/without/on/ignoring/group_* lists. It does not
// evaluate or fully validate; it catches names that do not exist.
func parsePromQL(expr string) (refs []promRef, grouping []string, err error) {
	s := expr
	i := 0
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func() {
		for i < len(s) && strings.IndexByte(" \t\r\n", s[i]) >= 0 {
			i++
		}
	}
	readIdent := func() string {
		start := i
		for i < len(s) && isIdent(s[i]) {
			i++
		}
		return s[start:i]
	}
	skipString := func() error {
		q := s[i]
		i++
		for i < len(s) && s[i] != q {
			if s[i] == '\\' {
				i++
			}
			i++
		}
		if i >= len(s) {
			return fmt.Errorf("unterminated string")
		}
		i++
		return nil
	}
	lastMetric := -1 // index in refs of a selector a '{' may attach to
	for i < len(s) {
		c := s[i]
		switch {
		case strings.IndexByte(" \t\r\n", c) >= 0:
			i++
			continue
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return nil, nil, err
			}
		case c == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, nil, fmt.Errorf("unterminated range")
			}
			i += end + 1
			continue // a range keeps the selector before it current for offset etc.
		case c == '{':
			if lastMetric < 0 {
				return nil, nil, fmt.Errorf("label matchers without a metric name at %d", i)
			}
			i++
			for {
				skipSpace()
				if i >= len(s) {
					return nil, nil, fmt.Errorf("unterminated label matchers")
				}
				if s[i] == '}' {
					i++
					break
				}
				if s[i] == ',' {
					i++
					continue
				}
				if !isIdentStart(s[i]) {
					return nil, nil, fmt.Errorf("bad label matcher at %d", i)
				}
				refs[lastMetric].labels = append(refs[lastMetric].labels, readIdent())
				skipSpace()
				for i < len(s) && strings.IndexByte("=!~", s[i]) >= 0 {
					i++
				}
				skipSpace()
				if i >= len(s) || strings.IndexByte("\"'`", s[i]) < 0 {
					return nil, nil, fmt.Errorf("label matcher without a string value at %d", i)
				}
				if err := skipString(); err != nil {
					return nil, nil, err
				}
			}
			lastMetric = -1
			continue
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			word := readIdent()
			switch {
			case promLabelLists[word]:
				skipSpace()
				if i < len(s) && s[i] == '(' {
					end := strings.IndexByte(s[i:], ')')
					if end < 0 {
						return nil, nil, fmt.Errorf("unterminated label list after %s", word)
					}
					for _, l := range strings.Split(s[i+1:i+end], ",") {
						if l = strings.TrimSpace(l); l != "" {
							grouping = append(grouping, l)
						}
					}
					i += end + 1
				}
			case promKeywords[word]:
			case promFunctions[word]:
				skipSpace()
				if i < len(s) && s[i] != '(' && !promLabelLists[peekIdent(s[i:])] {
					return nil, nil, fmt.Errorf("function %s without arguments", word)
				}
			default:
				skipSpace()
				if i < len(s) && s[i] == '(' {
					return nil, nil, fmt.Errorf("unknown function %s", word)
				}
				refs = append(refs, promRef{metric: word})
				lastMetric = len(refs) - 1
				continue
			}
		default:
			i++ // operators, parentheses, commas
		}
		lastMetric = -1
	}
	return refs, grouping, nil
}

func peekIdent(s string) string {
	end := 0
	for end < len(s) && (s[end] == '_' || s[end] >= 'a' && s[end] <= 'z') {
		end++
	}
	return s[:end]
}
