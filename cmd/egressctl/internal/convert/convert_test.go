package convert

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The inputs follow the shapes of Cilium's documentation and API (cilium.io/v2
// CiliumEgressGatewayPolicy) and of Isovalent's egressGroups.
const ciliumDocsExample = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: egress-sample
spec:
  selectors:
  - podSelector:
      matchLabels:
        org: empire
        class: mediabot
        io.kubernetes.pod.namespace: default
  destinationCIDRs:
  - "0.0.0.0/0"
  excludedCIDRs:
  - "192.168.1.0/24"
  egressGateway:
    nodeSelector:
      matchLabels:
        node.kubernetes.io/name: a-specific-node
    egressIP: 10.168.60.100
`

const interfaceOnly = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: vpn-egress
spec:
  selectors:
  - podSelector:
      matchLabels:
        vpn: proton
  egressGateway:
    nodeSelector:
      matchLabels:
        kubernetes.io/hostname: gw-1
    interface: team0.5
  destinationCIDRs:
  - 0.0.0.0/0
  excludedCIDRs:
  - 127.0.0.0/8
  - 10.0.0.0/8
  - 192.168.0.0/16
`

const namespaceSelectorPolicy = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: partners
spec:
  selectors:
  - namespaceSelector:
      matchLabels:
        team: payments
    podSelector:
      matchExpressions:
      - {key: app, operator: In, values: [api, worker]}
  - podSelector:
      matchLabels:
        io.kubernetes.pod.namespace: billing
        app: exporter
  - podSelector:
      matchLabels:
        io.cilium.k8s.namespace.labels.env: prod
        app: batch
  destinationCIDRs:
  - 203.0.113.0/24
  - 198.51.100.7/24
  egressGateway:
    nodeSelector:
      matchLabels:
        egress: "true"
    interface: eth1
`

const egressGroups = `
apiVersion: isovalent.com/v1
kind: IsovalentEgressGatewayPolicy
metadata:
  name: ha-egress
spec:
  azAffinity: localOnly
  selectors:
  - podSelector:
      matchLabels:
        io.kubernetes.pod.namespace: shop
  destinationCIDRs:
  - 0.0.0.0/0
  egressGroups:
  - nodeSelector:
      matchLabels:
        egress-group: a
    interface: eth1
    maxGatewayNodes: 2
  - nodeSelector:
      matchLabels:
        egress-group: b
    interface: eth1
    maxGatewayNodes: 1
`

const egressGroupsUnrelated = `
apiVersion: isovalent.com/v1
kind: IsovalentEgressGatewayPolicy
metadata:
  name: mixed
spec:
  selectors:
  - podSelector: {}
  destinationCIDRs: [0.0.0.0/0]
  egressGroups:
  - nodeSelector:
      matchLabels: {pool: a}
  - nodeSelector:
      matchLabels: {rack: b}
`

const sourceNodeSelector = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: from-some-nodes
spec:
  selectors:
  - podSelector: {matchLabels: {app: a}}
    nodeSelector: {matchLabels: {pool: workers}}
  destinationCIDRs: [0.0.0.0/0]
  egressGateway:
    nodeSelector: {matchLabels: {egress: "true"}}
    interface: eth0
`

const listOfTwoSharingAGateway = `
apiVersion: v1
kind: List
items:
- apiVersion: cilium.io/v2
  kind: CiliumEgressGatewayPolicy
  metadata: {name: first}
  spec:
    selectors: [{podSelector: {matchLabels: {app: a, io.kubernetes.pod.namespace: one}}}]
    destinationCIDRs: [10.10.0.0/16]
    egressGateway: {nodeSelector: {matchLabels: {egress: "true"}}, interface: eth1}
- apiVersion: cilium.io/v2
  kind: CiliumEgressGatewayPolicy
  metadata: {name: second}
  spec:
    selectors: [{podSelector: {matchLabels: {app: b, io.kubernetes.pod.namespace: two}}}]
    destinationCIDRs: [10.20.0.0/16]
    egressGateway: {nodeSelector: {matchLabels: {egress: "true"}}, interface: eth1}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
`

const unknownField = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: future}
spec:
  selectors: [{podSelector: {}}]
  destinationCIDRs: [0.0.0.0/0]
  egressGateway: {nodeSelector: {matchLabels: {egress: "true"}}, interface: eth1}
  somethingNew: true
`

// egressGatewaysNotRepeating lists gateways whose first entry is not egressGateway.
const egressGatewaysNotRepeating = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: spread}
spec:
  selectors: [{podSelector: {matchLabels: {app: api, io.kubernetes.pod.namespace: shop}}}]
  destinationCIDRs: [203.0.113.0/24]
  egressGateway: {nodeSelector: {matchLabels: {kubernetes.io/hostname: gw-1}}, egressIP: 192.0.2.11}
  egressGateways:
  - {nodeSelector: {matchLabels: {kubernetes.io/hostname: gw-2}}, egressIP: 192.0.2.12}
`

// egressGatewaysInterfaces: several gateways on node pools, egress with each node's eth1.
const egressGatewaysInterfaces = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: pools}
spec:
  selectors: [{podSelector: {}}]
  destinationCIDRs: [0.0.0.0/0]
  egressGateway: {nodeSelector: {matchLabels: {pool: a}}, interface: eth1}
  egressGateways:
  - {nodeSelector: {matchLabels: {pool: a}}, interface: eth1}
  - {nodeSelector: {matchLabels: {pool: b}}, interface: eth1}
`

// noSourceSelector has a selector with neither podSelector nor namespaceSelector.
const noSourceSelector = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: nobody}
spec:
  selectors: [{podSelector: {matchLabels: {app: a}}}, {}]
  destinationCIDRs: [0.0.0.0/0]
  egressGateway: {nodeSelector: {matchLabels: {kubernetes.io/hostname: gw-1}}, interface: eth1}
`

// pseudoLabels uses a label-source prefix (kept) and a service-account pseudo-label (which
// egressd cannot select on).
const pseudoLabels = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: labels}
spec:
  selectors:
  - podSelector: {matchLabels: {"k8s:app": web, "k8s:io.kubernetes.pod.namespace": shop}}
  - podSelector: {matchLabels: {io.cilium.k8s.policy.serviceaccount: deployer}}
  destinationCIDRs: [0.0.0.0/0]
  egressGateway: {nodeSelector: {matchLabels: {kubernetes.io/hostname: gw-1}}, interface: eth1}
`

// nameCollision: policy a's two selectors become a-0 and a-1; policy a-0 would be a-0 too.
const nameCollision = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: a}
spec:
  selectors: [{podSelector: {matchLabels: {io.kubernetes.pod.namespace: one}}}, {podSelector: {matchLabels: {io.kubernetes.pod.namespace: two}}}]
  destinationCIDRs: [10.0.0.0/8]
  egressGateway: {nodeSelector: {matchLabels: {kubernetes.io/hostname: gw-1}}, interface: eth1}
---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: a-0}
spec:
  selectors: [{podSelector: {matchLabels: {io.kubernetes.pod.namespace: one}}}]
  destinationCIDRs: [172.16.0.0/12]
  egressGateway: {nodeSelector: {matchLabels: {kubernetes.io/hostname: gw-1}}, interface: eth1}
`

// fixture reads a file of testdata, which the CLI tests read too.
func fixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type issueKey struct {
	sev   Severity
	field string
}

func TestConvert(t *testing.T) {
	cases := []struct {
		name string
		in   string
		opts Options
		out  string
		// has and lacks, when set, replace the comparison with out: the output contains
		// each of has and none of lacks.
		has, lacks []string
		issues     []issueKey
	}{
		{
			name:   "egressIP without a provider cannot be converted",
			in:     ciliumDocsExample,
			issues: []issueKey{{Error, "spec.egressGateway.egressIP"}},
		},
		{
			name: "egressIP kept in a static pool",
			in:   ciliumDocsExample,
			opts: Options{Provider: "static", Zone: "dc1", Subnet: netip.MustParsePrefix("10.168.60.0/24")},
			out: `---
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata:
  labels:
    egressd.io/converted-from: egress-sample
  name: egress-sample
spec:
  addresses:
    static:
      pools:
      - ips:
        - 10.168.60.100
        subnet: 10.168.60.0/24
        zone: dc1
  mode: ActiveActive
  nodeSelector:
    matchLabels:
      node.kubernetes.io/name: a-specific-node
---
apiVersion: egressd.io/v1alpha1
kind: EgressPolicy
metadata:
  labels:
    egressd.io/converted-from: egress-sample
  name: egress-sample
  namespace: default
spec:
  destinationCIDRs:
  - 0.0.0.0/0
  excludedCIDRs:
  - 192.168.1.0/24
  gateway: egress-sample
  podSelector:
    matchLabels:
      class: mediabot
      org: empire
`,
			issues: []issueKey{{Info, "spec.egressGateway"}},
		},
		{
			name:   "static egressIP outside the subnet",
			in:     ciliumDocsExample,
			opts:   Options{Provider: "static", Zone: "dc1", Subnet: netip.MustParsePrefix("10.0.0.0/24")},
			issues: []issueKey{{Error, "spec.egressGateway.egressIP"}},
		},
		{
			name: "egressIP replaced by cloud addresses",
			in:   ciliumDocsExample,
			opts: Options{Provider: "aws"},
			out: `---
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata:
  labels:
    egressd.io/converted-from: egress-sample
  name: egress-sample
spec:
  addresses:
    cloud:
      family: IPv4
      ipsPerZone: 1
      provider: aws
  mode: ActiveActive
  nodeSelector:
    matchLabels:
      node.kubernetes.io/name: a-specific-node
---
apiVersion: egressd.io/v1alpha1
kind: EgressPolicy
metadata:
  labels:
    egressd.io/converted-from: egress-sample
  name: egress-sample
  namespace: default
spec:
  destinationCIDRs:
  - 0.0.0.0/0
  excludedCIDRs:
  - 192.168.1.0/24
  gateway: egress-sample
  podSelector:
    matchLabels:
      class: mediabot
      org: empire
`,
			issues: []issueKey{{Warning, "spec.egressGateway.egressIP"}, {Info, "spec.egressGateway"}},
		},
		{
			name: "interface only, all namespaces",
			in:   interfaceOnly,
			out: `---
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata:
  labels:
    egressd.io/converted-from: vpn-egress
  name: vpn-egress
spec:
  addresses:
    nodeInterface:
      family: IPv4
      interface: team0.5
  mode: ActiveActive
  nodeSelector:
    matchLabels:
      kubernetes.io/hostname: gw-1
---
apiVersion: egressd.io/v1alpha1
kind: ClusterEgressPolicy
metadata:
  labels:
    egressd.io/converted-from: vpn-egress
  name: vpn-egress
spec:
  destinationCIDRs:
  - 0.0.0.0/0
  excludedCIDRs:
  - 127.0.0.0/8
  - 10.0.0.0/8
  - 192.168.0.0/16
  gateway: vpn-egress
  namespaceSelector: {}
  podSelector:
    matchLabels:
      vpn: proton
`,
			// One node by hostname: Cilium's first node and egressd's every node agree.
			issues: nil,
		},
		{
			name: "several selectors, namespace selectors and pseudo-labels",
			in:   namespaceSelectorPolicy,
			out: `---
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata:
  labels:
    egressd.io/converted-from: partners
  name: partners
spec:
  addresses:
    nodeInterface:
      family: IPv4
      interface: eth1
  mode: ActiveActive
  nodeSelector:
    matchLabels:
      egress: "true"
---
apiVersion: egressd.io/v1alpha1
kind: ClusterEgressPolicy
metadata:
  labels:
    egressd.io/converted-from: partners
  name: partners-0
spec:
  destinationCIDRs:
  - 203.0.113.0/24
  - 198.51.100.0/24
  gateway: partners
  namespaceSelector:
    matchLabels:
      team: payments
  podSelector:
    matchExpressions:
    - key: app
      operator: In
      values:
      - api
      - worker
---
apiVersion: egressd.io/v1alpha1
kind: ClusterEgressPolicy
metadata:
  labels:
    egressd.io/converted-from: partners
  name: partners-2
spec:
  destinationCIDRs:
  - 203.0.113.0/24
  - 198.51.100.0/24
  gateway: partners
  namespaceSelector:
    matchLabels:
      env: prod
  podSelector:
    matchLabels:
      app: batch
---
apiVersion: egressd.io/v1alpha1
kind: EgressPolicy
metadata:
  labels:
    egressd.io/converted-from: partners
  name: partners-1
  namespace: billing
spec:
  destinationCIDRs:
  - 203.0.113.0/24
  - 198.51.100.0/24
  gateway: partners
  podSelector:
    matchLabels:
      app: exporter
`,
			issues: []issueKey{{Info, "spec.destinationCIDRs[1]"}, {Warning, "spec.egressGateway"}, {Info, "spec.selectors"}},
		},
		{
			name: "Isovalent egressGroups",
			in:   egressGroups,
			out: `---
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata:
  labels:
    egressd.io/converted-from: ha-egress
  name: ha-egress
spec:
  addresses:
    nodeInterface:
      family: IPv4
      interface: eth1
  mode: ActiveActive
  nodeSelector:
    matchExpressions:
    - key: egress-group
      operator: In
      values:
      - a
      - b
  zones:
    affinity: LocalOnly
    maxGatewaysPerZone: 2
---
apiVersion: egressd.io/v1alpha1
kind: EgressPolicy
metadata:
  labels:
    egressd.io/converted-from: ha-egress
  name: ha-egress
  namespace: shop
spec:
  destinationCIDRs:
  - 0.0.0.0/0
  gateway: ha-egress
  podSelector: {}
`,
			issues: []issueKey{{Warning, "spec.egressGroups[].maxGatewayNodes"}},
		},
		{
			name:   "egress groups on unrelated labels",
			in:     egressGroupsUnrelated,
			issues: []issueKey{{Error, "spec.egressGroups"}},
		},
		{
			// No policy is left, so neither is the gateway: a cloud gateway would provision
			// addresses for nothing.
			name:   "source node selector",
			in:     sourceNodeSelector,
			out:    "",
			issues: []issueKey{{Error, "spec.selectors[0].nodeSelector"}, {Warning, "spec.egressGateway"}},
		},
		{
			name: "a list whose policies share a gateway, and a foreign object",
			in:   listOfTwoSharingAGateway,
			out: `---
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata:
  labels:
    egressd.io/converted-from: first
  name: first
spec:
  addresses:
    nodeInterface:
      family: IPv4
      interface: eth1
  mode: ActiveActive
  nodeSelector:
    matchLabels:
      egress: "true"
---
apiVersion: egressd.io/v1alpha1
kind: EgressPolicy
metadata:
  labels:
    egressd.io/converted-from: first
  name: first
  namespace: one
spec:
  destinationCIDRs:
  - 10.10.0.0/16
  gateway: first
  podSelector:
    matchLabels:
      app: a
---
apiVersion: egressd.io/v1alpha1
kind: EgressPolicy
metadata:
  labels:
    egressd.io/converted-from: second
  name: second
  namespace: two
spec:
  destinationCIDRs:
  - 10.20.0.0/16
  gateway: first
  podSelector:
    matchLabels:
      app: b
`,
			issues: []issueKey{{Error, ""}, {Warning, "spec.egressGateway"}, {Warning, "spec.egressGateway"}},
		},
		{
			name: "egressGateways: three gateways, the first repeating egressGateway",
			in:   fixture(t, "egress-gateways.yaml"),
			opts: Options{Provider: "static", Zone: "dc1", Subnet: netip.MustParsePrefix("192.0.2.0/24")},
			out: `---
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata:
  labels:
    egressd.io/converted-from: spread
  name: spread
spec:
  addresses:
    static:
      pools:
      - ips:
        - 192.0.2.11
        - 192.0.2.12
        - 192.0.2.13
        subnet: 192.0.2.0/24
        zone: dc1
  mode: ActiveActive
  nodeSelector:
    matchExpressions:
    - key: kubernetes.io/hostname
      operator: In
      values:
      - gw-1
      - gw-2
      - gw-3
---
apiVersion: egressd.io/v1alpha1
kind: EgressPolicy
metadata:
  labels:
    egressd.io/converted-from: spread
  name: spread
  namespace: shop
spec:
  destinationCIDRs:
  - 203.0.113.0/24
  gateway: spread
  podSelector:
    matchLabels:
      app: api
`,
			issues: []issueKey{{Info, "spec.egressGateways"}},
		},
		{
			name:   "egressGateways whose first entry is not egressGateway",
			in:     egressGatewaysNotRepeating,
			opts:   Options{Provider: "static", Zone: "dc1", Subnet: netip.MustParsePrefix("192.0.2.0/24")},
			has:    []string{"- 192.0.2.11\n        - 192.0.2.12\n", "      - gw-1\n      - gw-2\n", "gateway: spread"},
			issues: []issueKey{{Warning, "spec.egressGateways[0]"}, {Info, "spec.egressGateways"}},
		},
		{
			name:   "egressGateways of node pools with node addresses",
			in:     egressGatewaysInterfaces,
			has:    []string{"interface: eth1", "    - key: pool\n      operator: In\n      values:\n      - a\n      - b\n", "gateway: pools"},
			issues: []issueKey{{Warning, "spec.egressGateways"}, {Info, "spec.egressGateways"}},
		},
		{
			name:   "a selector without pod or namespace selector skips the policy",
			in:     noSourceSelector,
			out:    "",
			issues: []issueKey{{Error, "spec.selectors[1]"}},
		},
		{
			name: "label sources are stripped, Cilium pseudo-labels skip their selector",
			in:   pseudoLabels,
			out: `---
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata:
  labels:
    egressd.io/converted-from: labels
  name: labels
spec:
  addresses:
    nodeInterface:
      family: IPv4
      interface: eth1
  mode: ActiveActive
  nodeSelector:
    matchLabels:
      kubernetes.io/hostname: gw-1
---
apiVersion: egressd.io/v1alpha1
kind: EgressPolicy
metadata:
  labels:
    egressd.io/converted-from: labels
  name: labels-0
  namespace: shop
spec:
  destinationCIDRs:
  - 0.0.0.0/0
  gateway: labels
  podSelector:
    matchLabels:
      app: web
`,
			issues: []issueKey{{Info, "spec.selectors"}, {Error, "spec.selectors[1].podSelector"}},
		},
		{
			name:   "an exclusion that cannot be read is dropped, widening the policy",
			in:     fixture(t, "widened.yaml"),
			has:    []string{"  excludedCIDRs:\n  - 10.1.0.0/16\n  gateway: widened\n"},
			issues: []issueKey{{Error, "spec.excludedCIDRs[1]"}},
		},
		{
			name:   "a policy whose output name another policy already took",
			in:     nameCollision,
			has:    []string{"  name: a-0\n  namespace: one\nspec:\n  destinationCIDRs:\n  - 10.0.0.0/8\n", "  name: a-1\n"},
			lacks:  []string{"172.16.0.0/12"},
			issues: []issueKey{{Info, "spec.selectors"}, {Error, "spec.selectors[0]"}},
		},
		{
			name:   "unknown field",
			in:     unknownField,
			issues: []issueKey{{Error, ""}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Convert(strings.NewReader(tc.in), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := Write(&out, res); err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.has != nil || tc.lacks != nil:
				for _, h := range tc.has {
					if !strings.Contains(out.String(), h) {
						t.Errorf("output lacks %q:\n%s", h, out.String())
					}
				}
				for _, l := range tc.lacks {
					if strings.Contains(out.String(), l) {
						t.Errorf("output has %q:\n%s", l, out.String())
					}
				}
			case out.String() != tc.out:
				t.Errorf("output:\n%s\nwant:\n%s", out.String(), tc.out)
			}
			lossy := slices.ContainsFunc(tc.issues, func(k issueKey) bool { return k.sev != Info })
			if res.Lossy() != lossy {
				t.Errorf("Lossy() = %v, want %v", res.Lossy(), lossy)
			}
			var got []issueKey
			for _, i := range res.Issues {
				got = append(got, issueKey{i.Severity, i.Field})
				t.Log(i)
			}
			sortKeys := func(k []issueKey) {
				slices.SortFunc(k, func(a, b issueKey) int {
					return strings.Compare(string(a.sev)+a.field, string(b.sev)+b.field)
				})
			}
			sortKeys(got)
			sortKeys(tc.issues)
			if !slices.Equal(got, tc.issues) {
				t.Errorf("issues %v, want %v", got, tc.issues)
			}
		})
	}
}

func TestConvertRejectsBadYAML(t *testing.T) {
	if _, err := Convert(strings.NewReader("a: [unclosed"), Options{}); err == nil {
		t.Error("converted broken YAML")
	}
}

func TestConvertInputs(t *testing.T) {
	one := `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: p}
spec:
  selectors: [{podSelector: {matchLabels: {io.kubernetes.pod.namespace: a}}}]
  destinationCIDRs: [10.0.0.0/8]
  egressGateway: {nodeSelector: {matchLabels: {kubernetes.io/hostname: gw-1}}, interface: eth1}
`
	// The same name under Isovalent's kind is another object: its policy (in another
	// namespace) is written, and its gateway (another interface) gets a name of its own.
	isovalent := strings.NewReplacer("CiliumEgressGatewayPolicy", "IsovalentEgressGatewayPolicy", "eth1", "eth2", "namespace: a", "namespace: b").Replace(one)
	res, err := ConvertInputs([]Input{
		{Name: "a.yaml", Reader: strings.NewReader(one)},
		{Name: "b.yaml", Reader: strings.NewReader(one)},
		{Name: "c.yaml", Reader: strings.NewReader(isovalent)},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Issues) != 1 || res.Issues[0].Severity != Error || res.Issues[0].Source != "b.yaml: CiliumEgressGatewayPolicy/p" ||
		!strings.Contains(res.Issues[0].Message, "first in a.yaml") {
		t.Errorf("issues %v, want the second definition of p reported as an error", res.Issues)
	}
	if len(res.Policies) != 2 || res.Policies[1].Namespace != "b" || res.Policies[1].Spec.Gateway != "p-2" {
		t.Errorf("policies %+v, want a/p and b/p through gateway p-2", res.Policies)
	}
	for _, i := range res.Issues {
		t.Log(i)
	}
	var names []string
	for _, g := range res.Gateways {
		names = append(names, g.Name)
	}
	if !slices.Equal(names, []string{"p", "p-2"}) {
		t.Errorf("gateways %v, want [p p-2]", names)
	}
	if !res.Lossy() {
		t.Error("a skipped definition is not reported as a loss")
	}

	_, err = ConvertInputs([]Input{
		{Name: "good.yaml", Reader: strings.NewReader(one)},
		{Name: "broken.yaml", Reader: strings.NewReader("a: [unclosed")},
	}, Options{})
	if err == nil || !strings.Contains(err.Error(), "broken.yaml") {
		t.Errorf("broken input: err %v, want one naming broken.yaml", err)
	}
}
