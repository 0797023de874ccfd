// Package terraform checks the example terraform of docs/terraform against the Helm chart and
// docs/iam: the gateway node pools carry the label and taint the chart selects and tolerates,
// the identity wiring names the chart's service account, and the IAM permissions are exactly
// those of docs/iam.
package terraform

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/providers/aws"
)

// What the chart deploys with release name "egressd" in namespace egressd-system (the install
// guides' command): the controller's service account is <release>-controller.
const (
	chartNamespace      = "egressd-system"
	chartServiceAccount = "egressd-controller"
)

type chartGateway struct {
	NodeLabel string `json:"nodeLabel"`
	Taint     struct {
		Key    string `json:"key"`
		Value  string `json:"value"`
		Effect string `json:"effect"`
	} `json:"taint"`
}

func chartValues(t *testing.T) chartGateway {
	t.Helper()
	b, err := os.ReadFile("../../charts/egressd/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Gateway chartGateway `json:"gateway"`
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v.Gateway
}

func parse(t *testing.T, dir string) *hclsyntax.Body {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no terraform in %s", dir)
	}
	p := hclparse.NewParser()
	merged := &hclsyntax.Body{Attributes: hclsyntax.Attributes{}}
	for _, f := range files {
		file, diags := p.ParseHCLFile(f)
		if diags.HasErrors() {
			t.Fatalf("%s: %v", f, diags)
		}
		body := file.Body.(*hclsyntax.Body)
		merged.Blocks = append(merged.Blocks, body.Blocks...)
	}
	return merged
}

func block(t *testing.T, body *hclsyntax.Body, typ string, labels ...string) *hclsyntax.Block {
	t.Helper()
	for _, b := range body.Blocks {
		if b.Type == typ && slices.Equal(b.Labels, labels) {
			return b
		}
	}
	t.Fatalf("no %s %v block", typ, labels)
	return nil
}

func children(b *hclsyntax.Block, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, c := range b.Body.Blocks {
		if c.Type == typ {
			out = append(out, c)
		}
	}
	return out
}

// literal evaluates an attribute that holds only literals (strings, lists of strings).
func literal(t *testing.T, b *hclsyntax.Block, name string) any {
	t.Helper()
	attr, ok := b.Body.Attributes[name]
	if !ok {
		t.Fatalf("%s %v has no attribute %s", b.Type, b.Labels, name)
	}
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		t.Fatalf("%s %v: %s is not a literal: %v", b.Type, b.Labels, name, diags)
	}
	if v.Type().IsTupleType() || v.Type().IsListType() {
		var out []string
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			out = append(out, e.AsString())
		}
		return out
	}
	return v.AsString()
}

func strs(t *testing.T, b *hclsyntax.Block, name string) []string {
	t.Helper()
	v, ok := literal(t, b, name).([]string)
	if !ok {
		t.Fatalf("%s %v: %s is not a list", b.Type, b.Labels, name)
	}
	return v
}

// traversal renders an expression that is a plain reference, such as var.gateway_group.
func traversal(expr hclsyntax.Expression) string {
	tr, diags := hcl.AbsTraversalForExpr(expr)
	if diags.HasErrors() {
		return ""
	}
	var parts []string
	for _, step := range tr {
		switch s := step.(type) {
		case hcl.TraverseRoot:
			parts = append(parts, s.Name)
		case hcl.TraverseAttr:
			parts = append(parts, s.Name)
		}
	}
	return strings.Join(parts, ".")
}

// mapAttr returns an object attribute as key -> literal value or reference.
func mapAttr(t *testing.T, b *hclsyntax.Block, name string) map[string]string {
	t.Helper()
	attr, ok := b.Body.Attributes[name]
	if !ok {
		t.Fatalf("%s %v has no attribute %s", b.Type, b.Labels, name)
	}
	obj, ok := attr.Expr.(*hclsyntax.ObjectConsExpr)
	if !ok {
		t.Fatalf("%s %v: %s is not an object", b.Type, b.Labels, name)
	}
	out := map[string]string{}
	for _, item := range obj.Items {
		k, diags := item.KeyExpr.Value(nil)
		if diags.HasErrors() {
			t.Fatalf("%s: key is not a literal", name)
		}
		if ref := traversal(item.ValueExpr); ref != "" {
			out[k.AsString()] = ref
			continue
		}
		v, diags := item.ValueExpr.Value(nil)
		if diags.HasErrors() {
			t.Fatalf("%s[%s] is neither a literal nor a reference", name, k.AsString())
		}
		out[k.AsString()] = v.AsString()
	}
	return out
}

// checkVariables checks the defaults that must match the chart.
func checkVariables(t *testing.T, body *hclsyntax.Body) {
	t.Helper()
	for name, want := range map[string]string{"namespace": chartNamespace, "service_account": chartServiceAccount} {
		if got := literal(t, block(t, body, "variable", name), "default"); got != want {
			t.Errorf("variable %s defaults to %q; the chart uses %q", name, got, want)
		}
	}
}

func checkLabels(t *testing.T, labels map[string]string, gw chartGateway) {
	t.Helper()
	if got := labels[gw.NodeLabel]; got != "var.gateway_group" {
		t.Errorf("gateway nodes label %s=%q, want var.gateway_group (labels %v)", gw.NodeLabel, got, labels)
	}
}

// effects maps the clouds' taint effects to Kubernetes'.
var effects = map[string]string{"NO_SCHEDULE": "NoSchedule", "PREFER_NO_SCHEDULE": "PreferNoSchedule", "NO_EXECUTE": "NoExecute"}

func checkTaintBlock(t *testing.T, pool *hclsyntax.Block, gw chartGateway) {
	t.Helper()
	taints := children(pool, "taint")
	if len(taints) != 1 {
		t.Fatalf("%v: %d taints, want 1", pool.Labels, len(taints))
	}
	tb := taints[0]
	if literal(t, tb, "key") != gw.Taint.Key || literal(t, tb, "value") != gw.Taint.Value || effects[literal(t, tb, "effect").(string)] != gw.Taint.Effect {
		t.Errorf("%v: taint %v=%v:%v, want the chart's %+v", pool.Labels, literal(t, tb, "key"), literal(t, tb, "value"), literal(t, tb, "effect"), gw.Taint)
	}
}

func checkPerZone(t *testing.T, pool *hclsyntax.Block, zonesVar string) {
	t.Helper()
	attr, ok := pool.Body.Attributes["for_each"]
	if !ok || !strings.Contains(exprText(attr.Expr), zonesVar) {
		t.Errorf("%v is not one pool per zone (for_each over %s)", pool.Labels, zonesVar)
	}
}

func exprText(e hclsyntax.Expression) string {
	var refs []string
	for _, tr := range e.Variables() {
		var parts []string
		for _, step := range tr {
			switch s := step.(type) {
			case hcl.TraverseRoot:
				parts = append(parts, s.Name)
			case hcl.TraverseAttr:
				parts = append(parts, s.Name)
			}
		}
		refs = append(refs, strings.Join(parts, "."))
	}
	return strings.Join(refs, " ")
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

func TestEKS(t *testing.T) {
	gw := chartValues(t)
	body := parse(t, "eks")
	checkVariables(t, body)
	pool := block(t, body, "resource", "aws_eks_node_group", "gateway")
	checkPerZone(t, pool, "var.gateway_subnets")
	checkLabels(t, mapAttr(t, pool, "labels"), gw)
	checkTaintBlock(t, pool, gw)

	// The launch template tags the gateway nodes' interfaces with the tag the policy admits.
	lt := block(t, body, "resource", "aws_launch_template", "gateway")
	var tagged bool
	for _, ts := range children(lt, "tag_specifications") {
		if literal(t, ts, "resource_type") == "network-interface" && mapAttr(t, ts, "tags")["egressd.io/gateway-node"] == "var.cluster_name" {
			tagged = true
		}
	}
	if !tagged {
		t.Error("the gateway launch template does not tag network interfaces egressd.io/gateway-node=<cluster>")
	}

	// IRSA trusts exactly the chart's service account.
	assume := block(t, body, "data", "aws_iam_policy_document", "assume")
	var subject bool
	for _, st := range children(assume, "statement") {
		for _, c := range children(st, "condition") {
			if strings.Contains(traversalOrTemplate(c.Body.Attributes["values"].Expr), "system:serviceaccount:${var.namespace}:${var.service_account}") {
				subject = true
			}
		}
	}
	if !subject {
		t.Error("the IRSA trust policy does not name system:serviceaccount:<namespace>:<service_account>")
	}

	// The policy: statement by statement the same as docs/iam/aws-policy.json.
	type statement struct {
		Actions, Resources []string
		Conditions         []string // test variable
	}
	got := map[string]statement{}
	for _, st := range children(block(t, body, "data", "aws_iam_policy_document", "controller"), "statement") {
		s := statement{Actions: sorted(strs(t, st, "actions")), Resources: sorted(strs(t, st, "resources"))}
		for _, c := range children(st, "condition") {
			s.Conditions = append(s.Conditions, literal(t, c, "test").(string)+" "+literal(t, c, "variable").(string))
		}
		s.Conditions = sorted(s.Conditions)
		got[literal(t, st, "sid").(string)] = s
	}
	b, err := os.ReadFile("../iam/aws-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Statement []struct {
			Sid       string
			Effect    string
			Action    []string
			Resource  any
			Condition map[string]map[string]any
		}
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]statement{}
	var allActions []string
	for _, st := range doc.Statement {
		if st.Effect != "Allow" {
			t.Errorf("statement %s: effect %s", st.Sid, st.Effect)
		}
		s := statement{Actions: sorted(st.Action)}
		switch r := st.Resource.(type) {
		case string:
			s.Resources = []string{r}
		case []any:
			for _, e := range r {
				s.Resources = append(s.Resources, e.(string))
			}
		}
		s.Resources = sorted(s.Resources)
		for test, vars := range st.Condition {
			for v := range vars {
				s.Conditions = append(s.Conditions, test+" "+v)
			}
		}
		s.Conditions = sorted(s.Conditions)
		want[st.Sid] = s
		allActions = append(allActions, st.Action...)
	}
	if len(got) != len(want) {
		t.Errorf("terraform has %d statements, docs/iam/aws-policy.json %d", len(got), len(want))
	}
	for sid, w := range want {
		if g, ok := got[sid]; !ok || !equalStatement(g.Actions, w.Actions, g.Resources, w.Resources, g.Conditions, w.Conditions) {
			t.Errorf("statement %s:\nterraform %+v\ndocs/iam  %+v", sid, got[sid], w)
		}
	}
	// Exactly the EC2 calls of providers/aws's EC2API (sdk.go).
	var wantActions []string
	api := reflect.TypeFor[aws.EC2API]()
	for i := range api.NumMethod() {
		wantActions = append(wantActions, "ec2:"+api.Method(i).Name)
	}
	if g, w := uniq(allActions), uniq(wantActions); !slices.Equal(g, w) {
		t.Errorf("aws-policy.json allows %v, the provider calls %v", g, w)
	}
	// Every mutating action except the tag-on-create one is scoped by a tag condition, or on
	// instance/subnet/security-group resources that only a scoped resource can be used with.
	for _, st := range doc.Statement {
		for _, a := range st.Action {
			if !strings.HasPrefix(a, "ec2:Describe") && st.Resource == "*" {
				t.Errorf("statement %s allows %s on every resource", st.Sid, a)
			}
		}
	}
}

func equalStatement(pairs ...[]string) bool {
	for i := 0; i < len(pairs); i += 2 {
		if !slices.Equal(pairs[i], pairs[i+1]) {
			return false
		}
	}
	return true
}

func uniq(s []string) []string {
	s = sorted(s)
	return slices.Compact(s)
}

// traversalOrTemplate renders template and list expressions with their references as ${...}.
func traversalOrTemplate(e hclsyntax.Expression) string {
	switch e := e.(type) {
	case *hclsyntax.TupleConsExpr:
		var parts []string
		for _, x := range e.Exprs {
			parts = append(parts, traversalOrTemplate(x))
		}
		return strings.Join(parts, ",")
	case *hclsyntax.TemplateExpr:
		var b strings.Builder
		for _, p := range e.Parts {
			if lit, ok := p.(*hclsyntax.LiteralValueExpr); ok {
				b.WriteString(lit.Val.AsString())
				continue
			}
			b.WriteString("${" + traversal(p) + "}")
		}
		return b.String()
	case *hclsyntax.TemplateWrapExpr:
		return "${" + traversal(e.Wrapped) + "}"
	}
	if ref := traversal(e); ref != "" {
		return ref
	}
	return ""
}

func TestGKE(t *testing.T) {
	gw := chartValues(t)
	body := parse(t, "gke")
	checkVariables(t, body)
	pool := block(t, body, "resource", "google_container_node_pool", "gateway")
	checkPerZone(t, pool, "var.gateway_zones")
	cfgs := children(pool, "node_config")
	if len(cfgs) != 1 {
		t.Fatal("no node_config")
	}
	checkLabels(t, mapAttr(t, cfgs[0], "labels"), gw)
	checkTaintBlock(t, cfgs[0], gw)
	wm := children(cfgs[0], "workload_metadata_config")
	if len(wm) != 1 || literal(t, wm[0], "mode") != "GKE_METADATA" {
		t.Error("gateway node pool without the GKE metadata server: Workload Identity would not work there")
	}

	wi := block(t, body, "resource", "google_service_account_iam_member", "workload_identity")
	if got := traversalOrTemplate(wi.Body.Attributes["member"].Expr); got != "serviceAccount:${var.project}.svc.id.goog[${var.namespace}/${var.service_account}]" {
		t.Errorf("Workload Identity member %q", got)
	}
	if literal(t, wi, "role") != "roles/iam.workloadIdentityUser" {
		t.Error("Workload Identity binding has the wrong role")
	}

	b, err := os.ReadFile("../iam/gcp-role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var role struct {
		IncludedPermissions []string `json:"includedPermissions"`
	}
	if err := yaml.Unmarshal(b, &role); err != nil {
		t.Fatal(err)
	}
	got := strs(t, block(t, body, "resource", "google_project_iam_custom_role", "controller"), "permissions")
	if !slices.Equal(sorted(got), sorted(role.IncludedPermissions)) || len(got) == 0 {
		t.Errorf("terraform role %v\ndocs/iam %v", sorted(got), sorted(role.IncludedPermissions))
	}
	for _, p := range got {
		if !strings.HasPrefix(p, "compute.") {
			t.Errorf("permission %s outside compute", p)
		}
	}
}

func TestAKS(t *testing.T) {
	gw := chartValues(t)
	body := parse(t, "aks")
	checkVariables(t, body)
	pool := block(t, body, "resource", "azurerm_kubernetes_cluster_node_pool", "gateway")
	checkPerZone(t, pool, "var.gateway_zones")
	checkLabels(t, mapAttr(t, pool, "node_labels"), gw)
	if got, want := strs(t, pool, "node_taints"), []string{gw.Taint.Key + "=" + gw.Taint.Value + ":" + gw.Taint.Effect}; !slices.Equal(got, want) {
		t.Errorf("node_taints %v, want %v", got, want)
	}

	fed := block(t, body, "resource", "azurerm_federated_identity_credential", "controller")
	if got := traversalOrTemplate(fed.Body.Attributes["subject"].Expr); got != "system:serviceaccount:${var.namespace}:${var.service_account}" {
		t.Errorf("federated credential subject %q", got)
	}
	if got := strs(t, fed, "audience"); !slices.Equal(got, []string{"api://AzureADTokenExchange"}) {
		t.Errorf("federated credential audience %v", got)
	}

	b, err := os.ReadFile("../iam/azure-role.json")
	if err != nil {
		t.Fatal(err)
	}
	var role struct {
		Actions, NotActions, DataActions []string
	}
	if err := json.Unmarshal(b, &role); err != nil {
		t.Fatal(err)
	}
	perms := children(block(t, body, "resource", "azurerm_role_definition", "controller"), "permissions")
	if len(perms) != 1 {
		t.Fatal("role definition without one permissions block")
	}
	got := strs(t, perms[0], "actions")
	if !slices.Equal(sorted(got), sorted(role.Actions)) || len(got) == 0 {
		t.Errorf("terraform actions %v\ndocs/iam %v", sorted(got), sorted(role.Actions))
	}
	if len(role.DataActions) != 0 {
		t.Errorf("data actions %v: egressd reads no data plane", role.DataActions)
	}
	for _, a := range got {
		if strings.Contains(a, "*") || strings.HasSuffix(strings.ToLower(a), "roleassignments/write") {
			t.Errorf("action %s is broader than egressd needs", a)
		}
	}
}
