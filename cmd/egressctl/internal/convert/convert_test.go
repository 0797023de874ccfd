package convert

import (
	"bytes"
	"net/netip"
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

type issueKey struct {
	sev   Severity
	field string
}

func TestConvert(t *testing.T) {
	cases := []struct {
		name   string
		in     string
		opts   Options
		out    string
		issues []issueKey
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
			issues: []issueKey{{Info, "spec.egressGateway"}},
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
			issues: []issueKey{{Warning, "spec.destinationCIDRs[1]"}, {Info, "spec.egressGateway"}, {Info, "spec.selectors"}},
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
			name: "source node selector",
			in:   sourceNodeSelector,
			out: `---
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata:
  labels:
    egressd.io/converted-from: from-some-nodes
  name: from-some-nodes
spec:
  addresses:
    nodeInterface:
      family: IPv4
      interface: eth0
  mode: ActiveActive
  nodeSelector:
    matchLabels:
      egress: "true"
`,
			issues: []issueKey{{Error, "spec.selectors[0].nodeSelector"}, {Info, "spec.egressGateway"}},
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
			issues: []issueKey{{Error, ""}, {Info, "spec.egressGateway"}, {Info, "spec.egressGateway"}},
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
			if out.String() != tc.out {
				t.Errorf("output:\n%s\nwant:\n%s", out.String(), tc.out)
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
