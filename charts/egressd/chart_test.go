package chart

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/bpf/marks"
	"github.com/egressd/egressd/gateway/agent"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/coordinator"
)

const (
	releaseName      = "egressd"
	releaseNamespace = contract.DefaultNamespace
)

// profiles are complete values for every cloud profile, as a user would write them.
var profiles = map[string]map[string]any{
	"aws": {
		"clusterName": "prod-eu",
		"provider":    "aws",
		"aws": map[string]any{
			"region":  "eu-west-1",
			"vpcID":   "vpc-0123456789abcdef0",
			"roleARN": "arn:aws:iam::123456789012:role/egressd-controller",
		},
	},
	"gcp": {
		"clusterName": "prod-eu",
		"provider":    "gcp",
		"gcp": map[string]any{
			"project":        "acme-prod",
			"serviceAccount": "egressd-controller@acme-prod.iam.gserviceaccount.com",
		},
	},
	"azure": {
		"clusterName": "prod-eu",
		"provider":    "azure",
		"azure": map[string]any{
			"subscriptionID": "00000000-0000-0000-0000-000000000001",
			"resourceGroup":  "MC_prod_prod-eu_westeurope",
			"clientID":       "00000000-0000-0000-0000-0000000000c1",
		},
	},
	"static": {
		"clusterName": "lab",
		"provider":    "static",
		"static": map[string]any{
			"pools": []any{map[string]any{
				"zone": "rack-a", "subnet": "192.0.2.0/24", "ips": []any{"192.0.2.10", "192.0.2.11"},
			}},
		},
	},
}

// cloudIdentityMarkers are strings that betray a cloud credential or identity. The agent's
// objects must contain none of them.
var cloudIdentityMarkers = []string{
	"eks.amazonaws.com", "AWS_", "iam.gke.io", "GOOGLE_", "azure.workload.identity",
	"AZURE_", "role-arn", "gserviceaccount", "secret",
}

// rendered is a rendered chart, its objects by kind and name.
type rendered struct {
	objects []*unstructured.Unstructured
	files   map[string]string
}

func (r rendered) get(t *testing.T, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range r.objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %q rendered", kind, name)
	return nil
}

func (r rendered) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objects {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// into converts an unstructured object into a typed one.
func into[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return out
}

func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(".")
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return ch
}

// render renders the chart the way `helm install` does, schema validation included.
func render(t testing.TB, values map[string]any) (rendered, error) {
	t.Helper()
	ch := loadChart(t)
	caps := chartutil.DefaultCapabilities.Copy()
	vals, err := chartutil.ToRenderValues(ch, values, chartutil.ReleaseOptions{
		Name: releaseName, Namespace: releaseNamespace, Revision: 1, IsInstall: true,
	}, caps)
	if err != nil {
		return rendered{}, err
	}
	files, err := engine.Engine{Strict: true}.Render(ch, vals)
	if err != nil {
		return rendered{}, err
	}
	r := rendered{files: files}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") || strings.HasPrefix(filepath.Base(name), "_") {
			continue
		}
		docs := releaseutil.SplitManifests(files[name])
		keys := make([]string, 0, len(docs))
		for k := range docs {
			keys = append(keys, k)
		}
		sort.Sort(releaseutil.BySplitManifestsOrder(keys))
		for _, k := range keys {
			doc := docs[k]
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var obj map[string]any
			if err := yaml.UnmarshalStrict([]byte(doc), &obj); err != nil {
				return rendered{}, fmt.Errorf("%s: %w\n%s", name, err, doc)
			}
			if obj == nil {
				continue
			}
			r.objects = append(r.objects, &unstructured.Unstructured{Object: obj})
		}
	}
	return r, nil
}

func mustRender(t testing.TB, values map[string]any) rendered {
	t.Helper()
	r, err := render(t, values)
	if err != nil {
		t.Fatalf("rendering: %v", err)
	}
	return r
}

// with returns a deep copy of base with the dotted keys set.
func with(base map[string]any, kv ...any) map[string]any {
	out := deepCopy(base).(map[string]any)
	for i := 0; i < len(kv); i += 2 {
		path := strings.Split(kv[i].(string), ".")
		m := out
		for _, p := range path[:len(path)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[path[len(path)-1]] = kv[i+1]
	}
	return out
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

const (
	controllerName = "egressd-controller"
	agentName      = "egressd-agent"
)

func TestRenderEveryProfile(t *testing.T) {
	for name, values := range profiles {
		t.Run(name, func(t *testing.T) {
			r := mustRender(t, values)
			counts := map[string]int{}
			for _, o := range r.objects {
				counts[o.GetKind()]++
				if ns := o.GetNamespace(); ns != "" && ns != releaseNamespace {
					t.Errorf("%s %s in namespace %q, want %q", o.GetKind(), o.GetName(), ns, releaseNamespace)
				}
			}
			want := map[string]int{
				"CustomResourceDefinition": 4, "ServiceAccount": 2, "ClusterRole": 2,
				"ClusterRoleBinding": 2, "Role": 2, "RoleBinding": 2, "ConfigMap": 1,
				"Deployment": 1, "PodDisruptionBudget": 1, "DaemonSet": 1,
				// The uninstall hook (uninstall.yaml): its own identity and Job.
				"Job": 1,
				// The agent's write policy (admission-agent.yaml).
				"ValidatingAdmissionPolicy": 1, "ValidatingAdmissionPolicyBinding": 1,
			}
			want["ServiceAccount"]++
			want["Role"]++
			want["RoleBinding"]++
			if !reflect.DeepEqual(counts, want) {
				t.Errorf("rendered kinds %v, want %v", counts, want)
			}
			checkController(t, r, name, values)
			checkAgent(t, r, name)
			checkIdentity(t, r, name, values)
		})
	}
}

func checkController(t *testing.T, r rendered, profile string, values map[string]any) {
	t.Helper()
	dep := into[appsv1.Deployment](t, r.get(t, "Deployment", controllerName))
	if got := *dep.Spec.Replicas; got != 2 {
		t.Errorf("controller replicas %d, want 2", got)
	}
	pod := dep.Spec.Template.Spec
	if pod.HostNetwork {
		t.Error("controller runs in the host network; it must not (Workload Identity needs a pod network)")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("controller has %d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	if want := "ghcr.io/egressd/egressd-controller:" + loadChart(t).Metadata.AppVersion; c.Image != want {
		t.Errorf("controller image %q, want %q", c.Image, want)
	}
	wantArgs := []string{
		"--config=/etc/egressd/config.yaml", "--leader-elect=true",
		"--metrics-bind-address=:8080", "--health-probe-bind-address=:8081",
	}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("controller args %q, want %q", c.Args, wantArgs)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("controller security context %+v: want read-only root, no escalation, all capabilities dropped", sc)
	}
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("controller pod must run as non-root")
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/etc/egressd" && m.Name == "config" {
			mounted = true
		}
	}
	if !mounted {
		t.Error("controller does not mount its config at /etc/egressd")
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Port.String() != "health" {
		t.Errorf("controller readiness probe %+v, want HTTP on the health port", c.ReadinessProbe)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if !reflect.DeepEqual(ports, map[string]int32{"metrics": 8080, "health": 8081}) {
		t.Errorf("controller ports %v", ports)
	}

	pdb := into[policyv1.PodDisruptionBudget](t, r.get(t, "PodDisruptionBudget", controllerName))
	if !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, dep.Spec.Selector.MatchLabels) {
		t.Errorf("PDB selects %v, the Deployment %v", pdb.Spec.Selector.MatchLabels, dep.Spec.Selector.MatchLabels)
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PDB maxUnavailable %v, want 1", pdb.Spec.MaxUnavailable)
	}

	// The configuration: the cluster name and exactly the profile's provider, each with the
	// provider's own object.
	cm := into[corev1.ConfigMap](t, r.get(t, "ConfigMap", controllerName))
	var cfg struct {
		ClusterName        string                    `json:"clusterName"`
		Providers          map[string]map[string]any `json:"providers"`
		PolicyPrefixBudget contract.PrefixBudget     `json:"policyPrefixBudget"`
		MarkMask           string                    `json:"markMask"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("controller config: %v\n%s", err, cm.Data["config.yaml"])
	}
	if want := fmt.Sprintf("%#08x", marks.DefaultMask); cfg.MarkMask != want {
		t.Errorf("config markMask %q, want the agents' default %s", cfg.MarkMask, want)
	}
	// The chart cannot import the Go defaults; this pins values.yaml to them.
	if want := (contract.PrefixBudget{Namespace: contract.DefaultNamespacePrefixBudget, Cluster: contract.DefaultClusterPrefixBudget}); cfg.PolicyPrefixBudget != want {
		t.Errorf("config policyPrefixBudget %+v, want the contract's defaults %+v", cfg.PolicyPrefixBudget, want)
	}
	if cfg.ClusterName != values["clusterName"] {
		t.Errorf("config clusterName %q, want %q", cfg.ClusterName, values["clusterName"])
	}
	wantProviders := map[string]map[string]any{
		"aws":    {"aws": map[string]any{"region": "eu-west-1", "vpcID": "vpc-0123456789abcdef0"}},
		"gcp":    {"gcp": map[string]any{"project": "acme-prod"}},
		"azure":  {"azure": map[string]any{"subscriptionID": "00000000-0000-0000-0000-000000000001", "resourceGroup": "MC_prod_prod-eu_westeurope"}},
		"static": {}, // static pools live in each EgressGateway's spec.addresses.static
	}[profile]
	if !reflect.DeepEqual(normalize(t, cfg.Providers), normalize(t, wantProviders)) {
		t.Errorf("config providers %v, want %v", cfg.Providers, wantProviders)
	}
	if dep.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("controller pods carry no config checksum: a config change would not roll them")
	}
}

// normalize round-trips v through JSON so that values from YAML and Go literals compare.
func normalize(t *testing.T, v any) any {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := yaml.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func checkAgent(t *testing.T, r rendered, profile string) {
	t.Helper()
	ds := into[appsv1.DaemonSet](t, r.get(t, "DaemonSet", agentName))
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("agent hostNetwork=%v dnsPolicy=%q, want host network with ClusterFirstWithHostNet", pod.HostNetwork, pod.DNSPolicy)
	}
	if pod.ServiceAccountName != agentName {
		t.Errorf("agent service account %q, want %q", pod.ServiceAccountName, agentName)
	}
	if len(pod.InitContainers) != 0 {
		t.Errorf("agent has init containers %v by default; bpffs mounting is opt-in", pod.InitContainers)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("agent has %d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	if want := "ghcr.io/egressd/egressd-agent:" + loadChart(t).Metadata.AppVersion; c.Image != want {
		t.Errorf("agent image %q, want %q", c.Image, want)
	}
	// The chart cannot import the Go defaults; this pins values.yaml to them. Azure's moves
	// are slower, and its connections wait longer (TestAgentHoldEstablished).
	hold := dataplane.DefaultHoldEstablished
	if profile == "azure" {
		hold = 5 * time.Minute
	}
	wantArgs := []string{
		"--node-name=$(NODE_NAME)", "--metrics-bind-address=:9090", "--health-probe-bind-address=:9091",
		fmt.Sprintf("--tunnel-port=%d", contract.DefaultTunnelPort), "--steering=" + agent.SteeringStack,
		fmt.Sprintf("--mark-mask=%#08x", marks.DefaultMask), "--hold-established=" + hold.String(),
		fmt.Sprintf("--namespace-prefix-budget=%d", contract.DefaultNamespacePrefixBudget),
		fmt.Sprintf("--cluster-prefix-budget=%d", contract.DefaultClusterPrefixBudget),
		"--pod-interface-patterns=" + strings.Join(dataplane.DefaultInterfacePatterns, ","), "--bpffs=/sys/fs/bpf", "--daemonset=egressd-agent",
	}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("agent args %q, want %q", c.Args, wantArgs)
	}
	var nodeName *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "NODE_NAME" {
			nodeName = &c.Env[i]
		}
	}
	if nodeName == nil || nodeName.ValueFrom == nil || nodeName.ValueFrom.FieldRef == nil || nodeName.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("agent NODE_NAME %+v, want the downward API's spec.nodeName", nodeName)
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("agent has no security context")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("agent is privileged")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("agent allows privilege escalation")
	}
	add := slices.Clone(sc.Capabilities.Add)
	slices.Sort(add)
	if want := []corev1.Capability{"BPF", "NET_ADMIN", "NET_RAW", "PERFMON"}; !slices.Equal(add, want) {
		t.Errorf("agent capabilities %v, want exactly %v", add, want)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("agent drops %v, want ALL", sc.Capabilities.Drop)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("agent root filesystem is writable")
	}
	var bpffs *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == "/sys/fs/bpf" {
			bpffs = &c.VolumeMounts[i]
		}
	}
	if bpffs == nil || bpffs.MountPropagation == nil || *bpffs.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("agent bpffs mount %+v, want /sys/fs/bpf with HostToContainer propagation", bpffs)
	}
	hostPaths := 0
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths++
			if v.HostPath.Path != "/sys/fs/bpf" {
				t.Errorf("agent mounts host path %s; only /sys/fs/bpf is needed", v.HostPath.Path)
			}
		}
		if v.Secret != nil || v.Projected != nil {
			t.Errorf("agent mounts volume %s with credentials", v.Name)
		}
	}
	if hostPaths != 1 {
		t.Errorf("agent mounts %d host paths, want 1", hostPaths)
	}
	// Gateway nodes carry the gateway taint; the agent must run there.
	tolerated := false
	for _, tol := range pod.Tolerations {
		if (tol.Key == "egressd.io/gateway" && tol.Operator == corev1.TolerationOpExists || tol.Key == "" && tol.Operator == corev1.TolerationOpExists) &&
			(tol.Effect == "" || tol.Effect == corev1.TaintEffectNoSchedule) {
			tolerated = true
		}
	}
	if !tolerated {
		t.Errorf("agent tolerations %v do not tolerate the gateway taint", pod.Tolerations)
	}
	ports := map[string]string{}
	for _, p := range c.Ports {
		ports[p.Name] = fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol)
	}
	if want := map[string]string{"metrics": "9090/TCP", "health": "9091/TCP", "tunnel": fmt.Sprintf("%d/UDP", contract.DefaultTunnelPort)}; !reflect.DeepEqual(ports, want) {
		t.Errorf("agent ports %v, want %v", ports, want)
	}
}

func checkIdentity(t *testing.T, r rendered, profile string, values map[string]any) {
	t.Helper()
	sa := into[corev1.ServiceAccount](t, r.get(t, "ServiceAccount", controllerName))
	wantAnnotations := map[string]map[string]string{
		"aws": {
			"eks.amazonaws.com/role-arn":               "arn:aws:iam::123456789012:role/egressd-controller",
			"eks.amazonaws.com/sts-regional-endpoints": "true",
		},
		"gcp":    {"iam.gke.io/gcp-service-account": "egressd-controller@acme-prod.iam.gserviceaccount.com"},
		"azure":  {"azure.workload.identity/client-id": "00000000-0000-0000-0000-0000000000c1"},
		"static": nil,
	}[profile]
	if len(sa.Annotations) != 0 || len(wantAnnotations) != 0 {
		if !reflect.DeepEqual(sa.Annotations, wantAnnotations) {
			t.Errorf("controller service account annotations %v, want %v", sa.Annotations, wantAnnotations)
		}
	}
	dep := into[appsv1.Deployment](t, r.get(t, "Deployment", controllerName))
	_, azureLabel := dep.Spec.Template.Labels["azure.workload.identity/use"]
	if azureLabel != (profile == "azure") {
		t.Errorf("controller pod label azure.workload.identity/use present=%v on profile %s", azureLabel, profile)
	}
	if profile == "azure" && dep.Spec.Template.Labels["azure.workload.identity/use"] != "true" {
		t.Error(`controller pod label azure.workload.identity/use must be "true"`)
	}

	// Nothing the agent runs with may carry a cloud identity.
	agentObjects := []*unstructured.Unstructured{
		r.get(t, "DaemonSet", agentName), r.get(t, "ServiceAccount", agentName),
		r.get(t, "ClusterRole", agentName), r.get(t, "Role", agentName),
	}
	for _, o := range agentObjects {
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		for _, marker := range cloudIdentityMarkers {
			if bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(marker))) {
				t.Errorf("agent %s %s contains %q", o.GetKind(), o.GetName(), marker)
			}
		}
	}
}

// TestRBACLeastPrivilege pins every rule of both binaries. A change here is a security review.
func TestRBACLeastPrivilege(t *testing.T) {
	r := mustRender(t, profiles["aws"])
	type rule struct{ groups, resources, verbs string }
	flatten := func(rules []rbacv1.PolicyRule) []rule {
		var out []rule
		for _, pr := range rules {
			// The only named resource: the agents' DaemonSet, which a stopping agent reads
			// and the uninstall hook deletes.
			named := len(pr.ResourceNames) == 1 && pr.ResourceNames[0] == agentName && slices.Equal(pr.Resources, []string{"daemonsets"})
			if (len(pr.ResourceNames) != 0 && !named) || len(pr.NonResourceURLs) != 0 {
				t.Errorf("unexpected rule %+v", pr)
			}
			for _, g := range pr.APIGroups {
				for _, res := range pr.Resources {
					verbs := slices.Clone(pr.Verbs)
					slices.Sort(verbs)
					out = append(out, rule{g, res, strings.Join(verbs, ",")})
				}
			}
		}
		slices.SortFunc(out, func(a, b rule) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		return out
	}
	const (
		read  = "get,list,watch"
		watch = "list,watch"
		all   = "create,delete,get,list,patch,update,watch"
	)
	want := map[string][]rule{
		"ClusterRole/" + controllerName: {
			{"", "events", "create,patch"},
			{"", "namespaces", read},
			{"", "nodes", read},
			{"", "pods", read},
			{"egressd.io", "clusteregresspolicies", all},
			{"egressd.io", "clusteregresspolicies/status", "get,patch,update"},
			{"egressd.io", "egressgateways", all},
			{"egressd.io", "egressgateways/status", "get,patch,update"},
			{"egressd.io", "egressips", all},
			{"egressd.io", "egressips/finalizers", "update"},
			{"egressd.io", "egressips/status", "get,patch,update"},
			{"egressd.io", "egresspolicies", all},
			{"egressd.io", "egresspolicies/status", "get,patch,update"},
			{"events.k8s.io", "events", "create,patch"},
		},
		"Role/" + controllerName: {
			{"coordination.k8s.io", "leases", all},
		},
		// The agent reads through its watches only; admission-agent.yaml narrows its Lease
		// writes to its own node's (identity_envtest_test.go).
		"ClusterRole/" + agentName: {
			{"", "namespaces", watch},
			{"", "nodes", watch},
			{"", "pods", watch},
			{"egressd.io", "clusteregresspolicies", watch},
			{"egressd.io", "egressgateways", watch},
			{"egressd.io", "egressips", watch},
			{"egressd.io", "egresspolicies", watch},
		},
		"Role/" + agentName: {
			{"apps", "daemonsets", "get"},
			{"coordination.k8s.io", "leases", "create,get,update"},
		},
		"Role/" + agentName + "-uninstall": {
			{"apps", "daemonsets", "delete,get"},
		},
	}
	got := map[string][]rule{}
	for _, o := range r.ofKind("ClusterRole") {
		got["ClusterRole/"+o.GetName()] = flatten(into[rbacv1.ClusterRole](t, o).Rules)
	}
	for _, o := range r.ofKind("Role") {
		got["Role/"+o.GetName()] = flatten(into[rbacv1.Role](t, o).Rules)
	}
	for k := range want {
		slices.SortFunc(want[k], func(a, b rule) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RBAC rules\n got %v\nwant %v", got, want)
	}

	// Each binding gives its role to its own binary's service account only.
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, o := range r.ofKind(kind) {
			b := into[rbacv1.RoleBinding](t, o)
			if len(b.Subjects) != 1 || b.Subjects[0].Name != b.RoleRef.Name || b.Subjects[0].Namespace != releaseNamespace {
				t.Errorf("%s %s binds %s to %+v", kind, o.GetName(), b.RoleRef.Name, b.Subjects)
			}
		}
	}
}

// TestCRDsAreTheGeneratedOnes checks that the chart's CRDs are files/crds byte for byte, except
// for the keep annotation.
func TestCRDsAreTheGeneratedOnes(t *testing.T) {
	r := mustRender(t, profiles["static"])
	out := r.files["egressd/templates/crds.yaml"]
	generated, err := filepath.Glob("files/crds/*.yaml")
	if err != nil || len(generated) == 0 {
		t.Fatalf("no generated CRDs in files/crds (%v)", err)
	}
	sort.Strings(generated)
	var want strings.Builder
	for _, path := range generated {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want.Write(b)
		if !bytes.HasSuffix(b, []byte("\n")) {
			want.WriteByte('\n')
		}
	}
	const keep = "    helm.sh/resource-policy: keep\n"
	if n := strings.Count(out, keep); n != len(generated) {
		t.Errorf("the keep annotation appears %d times, want once per CRD (%d)", n, len(generated))
	}
	got := strings.TrimSpace(strings.ReplaceAll(out, keep, ""))
	if got != strings.TrimSpace(want.String()) {
		t.Errorf("rendered CRDs differ from files/crds beyond the keep annotation:\n%s", firstDiff(got, strings.TrimSpace(want.String())))
	}
	crds := r.ofKind("CustomResourceDefinition")
	if len(crds) != len(generated) {
		t.Fatalf("rendered %d CRDs, want %d", len(crds), len(generated))
	}
	for _, crd := range crds {
		if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s lacks helm.sh/resource-policy: keep", crd.GetName())
		}
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n chart: %q\n files: %q", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("lengths differ: chart %d lines, files %d lines", len(al), len(bl))
}

// TestAgentMarkMask: agent.markMask reaches the agent's --mark-mask and the controller's
// markMask, and the masks values.yaml recommends for Calico and Cilium are layouts both accept.
func TestAgentMarkMask(t *testing.T) {
	for _, mask := range []string{"0x00003fff", "0xffff0000"} {
		r := mustRender(t, with(profiles["aws"], "agent.markMask", mask))
		ds := into[appsv1.DaemonSet](t, r.get(t, "DaemonSet", agentName))
		args := ds.Spec.Template.Spec.Containers[0].Args
		if !slices.Contains(args, "--mark-mask="+mask) {
			t.Errorf("agent.markMask %s: agent args %q lack --mark-mask=%s", mask, args, mask)
		}
		if _, err := marks.ParseMask(mask); err != nil {
			t.Errorf("values.yaml recommends %s, which the agent refuses: %v", mask, err)
		}
		cm := into[corev1.ConfigMap](t, r.get(t, "ConfigMap", controllerName))
		cfg, err := coordinator.ParseConfig([]byte(cm.Data["config.yaml"]))
		if err != nil || cfg.MarkMask != mask {
			t.Errorf("agent.markMask %s: controller config markMask %q (%v), want the agents' mask", mask, cfg.MarkMask, err)
		}
		if !strings.Contains(loadValuesYAML(t), `"`+mask+`"`) {
			t.Errorf("values.yaml no longer recommends %s; update this test with it", mask)
		}
	}
}

// TestAgentHoldEstablished checks the hold an established connection gets while its egress IP
// moves: the agent's default on clouds that move in seconds, longer on Azure, and what the
// values say when set.
func TestAgentHoldEstablished(t *testing.T) {
	for _, c := range []struct {
		profile, value, want string
	}{
		{"aws", "", dataplane.DefaultHoldEstablished.String()},
		{"gcp", "", dataplane.DefaultHoldEstablished.String()},
		{"static", "", dataplane.DefaultHoldEstablished.String()},
		{"azure", "", "5m0s"},
		{"azure", "90s", "90s"},
	} {
		vals := profiles[c.profile]
		if c.value != "" {
			vals = with(vals, "agent.holdEstablished", c.value)
		}
		r := mustRender(t, vals)
		ds := into[appsv1.DaemonSet](t, r.get(t, "DaemonSet", agentName))
		args := ds.Spec.Template.Spec.Containers[0].Args
		if !slices.Contains(args, "--hold-established="+c.want) {
			t.Errorf("%s with agent.holdEstablished %q: agent args %q lack --hold-established=%s", c.profile, c.value, args, c.want)
		}
	}
}

func loadValuesYAML(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestValuesSchemaRejects checks that values.schema.json refuses what would install a broken
// release.
func TestValuesSchemaRejects(t *testing.T) {
	cases := map[string]map[string]any{
		"no cluster name":             with(profiles["aws"], "clusterName", ""),
		"hold not a duration":         with(profiles["azure"], "agent.holdEstablished", "5 minutes"),
		"unknown provider":            with(profiles["aws"], "provider", "ovh"),
		"aws without region":          with(profiles["aws"], "aws.region", ""),
		"aws role that is not a role": with(profiles["aws"], "aws.roleARN", "arn:aws:iam::123456789012:user/bob"),
		"gcp without project":         with(profiles["gcp"], "gcp.project", ""),
		"azure without client ID":     with(profiles["azure"], "azure.clientID", ""),
		"azure without group":         with(profiles["azure"], "azure.resourceGroup", ""),
		"static without pools":        with(profiles["static"], "static.pools", []any{}),
		"tunnel on the VXLAN port":    with(profiles["aws"], "agent.ports.tunnel", 4789),
		"tunnel on Cilium's port":     with(profiles["aws"], "agent.ports.tunnel", 8472),
		"misspelt top-level key":      with(profiles["aws"], "clustername", "x"),
		"both monitor kinds": with(profiles["aws"],
			"monitoring.serviceMonitor.enabled", true, "monitoring.podMonitor.enabled", true),
		"bad taint effect":                          with(profiles["aws"], "gateway.taint.effect", "NoWay"),
		"zero prefix budget":                        with(profiles["aws"], "policyPrefixBudget.namespace", 0),
		"misspelt prefix budget":                    with(profiles["aws"], "policyPrefixBudget.clster", 5),
		"bpffs mounter image without tag or digest": with(profiles["static"], "agent.bpffs.mountImage.tag", ""),
		"mark mask that is not hexadecimal":         with(profiles["aws"], "agent.markMask", "65535"),
		"mark mask wider than 32 bits":              with(profiles["aws"], "agent.markMask", "0x1ffffffff"),
	}
	for name, values := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := render(t, values)
			if err == nil {
				t.Fatal("rendered; want a schema error")
			}
			if !strings.Contains(err.Error(), "schema") {
				t.Errorf("error %q is not a schema violation", err)
			}
			t.Log(err)
		})
	}
}

func TestOptionalParts(t *testing.T) {
	t.Run("ServiceMonitor", func(t *testing.T) {
		r := mustRender(t, with(profiles["aws"], "monitoring.serviceMonitor.enabled", true))
		if n := len(r.ofKind("ServiceMonitor")); n != 2 {
			t.Errorf("%d ServiceMonitors, want 2", n)
		}
		for _, name := range []string{controllerName, agentName} {
			svc := into[corev1.Service](t, r.get(t, "Service", name+"-metrics"))
			sm := r.get(t, "ServiceMonitor", name)
			sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
			for k, v := range sel {
				if svc.Labels[k] != v {
					t.Errorf("ServiceMonitor %s selects %s=%s; the Service has %q", name, k, v, svc.Labels[k])
				}
			}
			if len(sel) == 0 {
				t.Errorf("ServiceMonitor %s selects nothing", name)
			}
		}
	})
	t.Run("PodMonitor", func(t *testing.T) {
		r := mustRender(t, with(profiles["gcp"], "monitoring.podMonitor.enabled", true))
		if n := len(r.ofKind("PodMonitor")); n != 2 {
			t.Errorf("%d PodMonitors, want 2", n)
		}
		if n := len(r.ofKind("Service")); n != 0 {
			t.Errorf("%d Services with PodMonitors, want 0", n)
		}
	})
	t.Run("dashboard", func(t *testing.T) {
		r := mustRender(t, with(profiles["azure"], "monitoring.dashboard.enabled", true))
		cm := into[corev1.ConfigMap](t, r.get(t, "ConfigMap", "egressd-dashboard"))
		want, err := os.ReadFile("files/dashboards/egressd.json")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(cm.Data["egressd.json"]) != strings.TrimSpace(string(want)) {
			t.Error("the dashboard ConfigMap does not hold files/dashboards/egressd.json")
		}
		if cm.Labels["grafana_dashboard"] != "1" {
			t.Error("the dashboard ConfigMap lacks the Grafana sidecar label")
		}
	})
	t.Run("bpffs mount", func(t *testing.T) {
		r := mustRender(t, with(profiles["static"], "agent.bpffs.mount", true))
		ds := into[appsv1.DaemonSet](t, r.get(t, "DaemonSet", agentName))
		if n := len(ds.Spec.Template.Spec.InitContainers); n != 1 {
			t.Fatalf("%d init containers, want the bpffs mounter", n)
		}
		// The agent image has no shell: the mounter runs from an image that has one.
		if img := ds.Spec.Template.Spec.InitContainers[0].Image; img != "docker.io/library/busybox:1.37.0" {
			t.Errorf("bpffs mounter image %q, want agent.bpffs.mountImage", img)
		}
		// Only the opt-in mounter is privileged; the agent itself never is.
		if c := ds.Spec.Template.Spec.Containers[0]; c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
			t.Error("the agent became privileged")
		}
	})
	t.Run("off by default", func(t *testing.T) {
		r := mustRender(t, profiles["aws"])
		for _, kind := range []string{"ServiceMonitor", "PodMonitor", "PrometheusRule", "Service"} {
			if n := len(r.ofKind(kind)); n != 0 {
				t.Errorf("%d %s by default, want 0", n, kind)
			}
		}
	})
	t.Run("extra providers and image digest", func(t *testing.T) {
		r := mustRender(t, with(profiles["aws"],
			"extraProviders", map[string]any{"hetzner": map[string]any{"endpoint": "http://hetzner-plugin:8080"}},
			"controller.image.digest", "sha256:"+strings.Repeat("ab", 32)))
		cm := into[corev1.ConfigMap](t, r.get(t, "ConfigMap", controllerName))
		if !strings.Contains(cm.Data["config.yaml"], "hetzner:") || !strings.Contains(cm.Data["config.yaml"], "aws:") {
			t.Errorf("config lacks a provider:\n%s", cm.Data["config.yaml"])
		}
		dep := into[appsv1.Deployment](t, r.get(t, "Deployment", controllerName))
		if img := dep.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, "@sha256:"+strings.Repeat("ab", 32)) {
			t.Errorf("controller image %q does not use the digest", img)
		}
	})
}

// TestUninstallHook checks the pre-delete hook that makes `helm uninstall` remove every node's
// datapath: its Job runs the agent image unprivileged and as non-root, and switching the value
// off removes the hook and the agent's --daemonset flag.
func TestUninstallHook(t *testing.T) {
	r := mustRender(t, profiles["aws"])
	job := into[batchv1.Job](t, r.get(t, "Job", agentName+"-uninstall"))
	if got := job.Annotations["helm.sh/hook"]; got != "pre-delete" {
		t.Errorf("uninstall Job hook %q, want pre-delete", got)
	}
	pod := job.Spec.Template.Spec
	c := pod.Containers[0]
	if want := []string{"--namespace=" + releaseNamespace, "--daemonset=" + agentName, "uninstall"}; !slices.Equal(c.Args, want) {
		t.Errorf("uninstall args %q, want %q", c.Args, want)
	}
	if c.Image != into[appsv1.DaemonSet](t, r.get(t, "DaemonSet", agentName)).Spec.Template.Spec.Containers[0].Image {
		t.Errorf("uninstall image %s is not the agent's", c.Image)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("uninstall Job must run as non-root")
	}
	sc := c.SecurityContext
	if sc == nil || sc.Privileged != nil && *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("uninstall container security context %+v: want no privilege, all capabilities dropped", sc)
	}
	if pod.ServiceAccountName != agentName+"-uninstall" {
		t.Errorf("uninstall Job service account %q", pod.ServiceAccountName)
	}

	off := mustRender(t, with(profiles["aws"], "agent.removeDatapathOnUninstall", false))
	if n := len(off.ofKind("Job")); n != 0 {
		t.Errorf("%d Jobs with removeDatapathOnUninstall=false", n)
	}
	for _, a := range into[appsv1.DaemonSet](t, off.get(t, "DaemonSet", agentName)).Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--daemonset") {
			t.Errorf("agent arg %s with removeDatapathOnUninstall=false", a)
		}
	}
}

// TestControllerSpreadHonorsTaints: the default spread constraints ignore the nodes the
// controller cannot run on (the tainted gateway pool); counted as empty domains, they left the
// second replica Pending on the e2e cluster (two tainted gateways, one worker).
func TestControllerSpreadHonorsTaints(t *testing.T) {
	dep := into[appsv1.Deployment](t, mustRender(t, profiles["aws"]).get(t, "Deployment", controllerName))
	cs := dep.Spec.Template.Spec.TopologySpreadConstraints
	if len(cs) != 2 {
		t.Fatalf("%d default spread constraints, want 2 (hostname, zone)", len(cs))
	}
	for _, c := range cs {
		if c.NodeTaintsPolicy == nil || *c.NodeTaintsPolicy != corev1.NodeInclusionPolicyHonor {
			t.Errorf("spread constraint on %s: nodeTaintsPolicy %v, want Honor", c.TopologyKey, c.NodeTaintsPolicy)
		}
	}
}

// TestAgentWritePolicyFollowsTheServiceAccount checks that the agent's write policy matches the
// agent's service account, whatever its name, refuses (not only warns) and fails closed.
// TestAgentIdentity checks what it admits against the API server.
func TestAgentWritePolicyFollowsTheServiceAccount(t *testing.T) {
	for sa, values := range map[string]map[string]any{
		agentName:      profiles["aws"],
		"custom-agent": with(profiles["aws"], "agent.serviceAccount.name", "custom-agent"),
	} {
		r := mustRender(t, values)
		p := into[admissionregistrationv1.ValidatingAdmissionPolicy](t, r.get(t, "ValidatingAdmissionPolicy", agentName+"-writes"))
		b := into[admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, r.get(t, "ValidatingAdmissionPolicyBinding", agentName+"-writes"))
		want := "request.userInfo.username == 'system:serviceaccount:" + releaseNamespace + ":" + sa + "'"
		if len(p.Spec.MatchConditions) != 1 || p.Spec.MatchConditions[0].Expression != want {
			t.Errorf("service account %s: match conditions %+v, want one: %s", sa, p.Spec.MatchConditions, want)
		}
		if p.Spec.FailurePolicy == nil || *p.Spec.FailurePolicy != admissionregistrationv1.Fail {
			t.Errorf("service account %s: failurePolicy %v, want Fail", sa, p.Spec.FailurePolicy)
		}
		if b.Spec.PolicyName != p.Name || !slices.Equal(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) || b.Spec.MatchResources != nil {
			t.Errorf("service account %s: binding %+v, want policy %s, Deny, every resource", sa, b.Spec, p.Name)
		}
		var bound bool
		for _, o := range r.ofKind("ServiceAccount") {
			bound = bound || o.GetName() == sa
		}
		if !bound {
			t.Errorf("no ServiceAccount %s rendered", sa)
		}
	}
}

// TestPolicyPrefixBudgetReachesBoth: one value gives the controller and every agent the same
// budget, so that the policies the controller reports as over it are the ones the agents skip.
func TestPolicyPrefixBudgetReachesBoth(t *testing.T) {
	r, err := render(t, with(profiles["aws"], "policyPrefixBudget.namespace", 500, "policyPrefixBudget.cluster", 64))
	if err != nil {
		t.Fatal(err)
	}
	cm := into[corev1.ConfigMap](t, r.get(t, "ConfigMap", controllerName))
	cfg, err := coordinator.ParseConfig([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("the controller refuses its config: %v\n%s", err, cm.Data["config.yaml"])
	}
	if want := (contract.PrefixBudget{Namespace: 500, Cluster: 64}); cfg.PolicyPrefixBudget != want {
		t.Errorf("controller budget %+v, want %+v", cfg.PolicyPrefixBudget, want)
	}
	ds := into[appsv1.DaemonSet](t, r.get(t, "DaemonSet", agentName))
	args := ds.Spec.Template.Spec.Containers[0].Args
	for _, want := range []string{"--namespace-prefix-budget=500", "--cluster-prefix-budget=64"} {
		if !slices.Contains(args, want) {
			t.Errorf("agent args %q lack %s", args, want)
		}
	}
}
