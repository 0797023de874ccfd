package v1alpha1_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/test/envtest"
)

var server *envtest.Server

func TestMain(m *testing.M) {
	ctx := context.Background()
	s, err := envtest.StartServer(ctx)
	if err != nil {
		// The API server is part of the test: without it these tests cannot say anything.
		println("envtest:", err.Error())
		os.Exit(1)
	}
	server = s
	code := m.Run()
	if err := s.Stop(); err != nil {
		println("envtest stop:", err.Error())
	}
	os.Exit(code)
}

// validationCase is one schema rule: valid must be accepted, invalid rejected with an error
// that contains want (the field's name, as the user wrote it).
type validationCase struct {
	rule    string
	valid   string
	invalid string
	want    string
}

const gatewayHead = `
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata:
  generateName: gw-
spec:
  nodeSelector:
    matchLabels: {egressd.io/gateway: egress}
`

const policyHead = `
apiVersion: egressd.io/v1alpha1
kind: EgressPolicy
metadata:
  generateName: pol-
  namespace: default
spec:
`

const clusterPolicyHead = `
apiVersion: egressd.io/v1alpha1
kind: ClusterEgressPolicy
metadata:
  generateName: cpol-
spec:
`

const egressIPHead = `
apiVersion: egressd.io/v1alpha1
kind: EgressIP
metadata:
  generateName: eip-
spec:
`

const cloudAWS = `
  addresses:
    cloud: {provider: aws}
`

var cases = []validationCase{
	// EgressGateway: address sources.
	{"addresses: exactly one source (none)", gatewayHead + cloudAWS, gatewayHead + "  addresses: {}\n", "addresses: set exactly one of cloud, static or nodeInterface"},
	{"addresses: exactly one source (two)", gatewayHead + cloudAWS,
		gatewayHead + "  addresses:\n    cloud: {provider: aws}\n    nodeInterface: {interface: eth1}\n", "addresses: set exactly one of cloud, static or nodeInterface"},
	{"addresses required", gatewayHead + cloudAWS, gatewayHead, "spec.addresses: Required value"},
	{"nodeSelector required", gatewayHead + cloudAWS, strings.Replace(gatewayHead, "  nodeSelector:\n    matchLabels: {egressd.io/gateway: egress}\n", "", 1) + cloudAWS, "spec.nodeSelector: Required value"},
	{"cloud.provider name", gatewayHead + cloudAWS, gatewayHead + "  addresses:\n    cloud: {provider: AWS_1}\n", "cloud.provider must be a lowercase name"},
	{"cloud.ipsPerZone bounds", gatewayHead + "  addresses:\n    cloud: {provider: aws, ipsPerZone: 64}\n",
		gatewayHead + "  addresses:\n    cloud: {provider: aws, ipsPerZone: 0}\n", "spec.addresses.cloud.ipsPerZone"},
	{"cloud.public needs IPv4", gatewayHead + "  addresses:\n    cloud: {provider: aws, public: true}\n",
		gatewayHead + "  addresses:\n    cloud: {provider: aws, public: true, family: IPv6}\n", "cloud.public requires cloud.family IPv4"},
	{"cloud.privateCIDRs are IPv4 CIDRs", gatewayHead + "  addresses:\n    cloud: {provider: gcp, public: true, privateCIDRs: [10.0.0.0/8, 35.191.0.0/16]}\n",
		gatewayHead + "  addresses:\n    cloud: {provider: gcp, public: true, privateCIDRs: [10.0.0.0/8, \"fd00::/8\"]}\n", "privateCIDRs: every entry must be an IPv4 CIDR"},
	{"cloud.privateCIDRs parse", gatewayHead + "  addresses:\n    cloud: {provider: gcp, public: true, privateCIDRs: [10.0.0.0/8]}\n",
		gatewayHead + "  addresses:\n    cloud: {provider: gcp, public: true, privateCIDRs: [10.0.0.0]}\n", "privateCIDRs: every entry must be an IPv4 CIDR"},
	{"cloud.privateCIDRs without host bits", gatewayHead + "  addresses:\n    cloud: {provider: gcp, public: true, privateCIDRs: [10.0.0.0/8]}\n",
		gatewayHead + "  addresses:\n    cloud: {provider: gcp, public: true, privateCIDRs: [10.1.2.3/8]}\n", "privateCIDRs: entries must have no host bits set"},
	{"cloud.family enum", gatewayHead + "  addresses:\n    cloud: {provider: aws, family: IPv6}\n",
		gatewayHead + "  addresses:\n    cloud: {provider: aws, family: ipv4}\n", "spec.addresses.cloud.family: Unsupported value"},
	{"cloud.interface enum", gatewayHead + "  addresses:\n    cloud: {provider: aws, interface: Dedicated}\n",
		gatewayHead + "  addresses:\n    cloud: {provider: aws, interface: Secondary}\n", "spec.addresses.cloud.interface: Unsupported value"},
	{"cloud.subnetSelector ids or tags", gatewayHead + "  addresses:\n    cloud: {provider: aws, subnetSelector: {tags: {egress: \"true\"}}}\n",
		gatewayHead + "  addresses:\n    cloud: {provider: aws, subnetSelector: {}}\n", "subnetSelector: set ids or tags"},
	{"static pool subnet is a CIDR", gatewayHead + staticPool("10.0.1.0/24", "10.0.1.10"),
		gatewayHead + staticPool("10.0.1.0/33", "10.0.1.10"), "static.pools[].subnet must be a CIDR"},
	{"static pool ips are IPs", gatewayHead + staticPool("2001:db8::/64", "2001:db8::10"),
		gatewayHead + staticPool("2001:db8::/64", "2001:db8::zz"), "static.pools[].ips must be IP addresses"},
	{"static pool ips inside the subnet", gatewayHead + staticPool("10.0.1.0/24", "10.0.1.10"),
		gatewayHead + staticPool("10.0.1.0/24", "10.0.2.10"), "static.pools[].ips must lie inside the pool's subnet"},
	{"static pool ips family matches the subnet", gatewayHead + staticPool("10.0.1.0/24", "10.0.1.11"),
		gatewayHead + staticPool("10.0.1.0/24", "2001:db8::10"), "static.pools[].ips must lie inside the pool's subnet"},
	{"static pools non-empty", gatewayHead + staticPool("10.0.1.0/24", "10.0.1.10"),
		gatewayHead + "  addresses:\n    static: {pools: []}\n", "spec.addresses.static.pools"},
	{"nodeInterface.interface name", gatewayHead + "  addresses:\n    nodeInterface: {interface: eth1.100}\n",
		gatewayHead + "  addresses:\n    nodeInterface: {interface: \"eth 1\"}\n", "nodeInterface.interface must be a Linux interface name"},
	// EgressGateway: enums, bounds, durations.
	{"mode enum", gatewayHead + cloudAWS + "  mode: ActiveStandby\n", gatewayHead + cloudAWS + "  mode: Primary\n", "spec.mode: Unsupported value"},
	{"ActiveStandby needs a standby", gatewayHead + cloudAWS + "  mode: ActiveStandby\n  zones: {maxGatewaysPerZone: 2}\n",
		gatewayHead + cloudAWS + "  mode: ActiveStandby\n  zones: {maxGatewaysPerZone: 1}\n", "zones.maxGatewaysPerZone must be at least 2 in ActiveStandby mode"},
	{"zones.affinity enum", gatewayHead + cloudAWS + "  zones: {affinity: LocalOnly}\n", gatewayHead + cloudAWS + "  zones: {affinity: Nearest}\n", "spec.zones.affinity: Unsupported value"},
	{"zones.maxGatewaysPerZone bounds", gatewayHead + cloudAWS + "  zones: {maxGatewaysPerZone: 64}\n", gatewayHead + cloudAWS + "  zones: {maxGatewaysPerZone: 65}\n", "spec.zones.maxGatewaysPerZone"},
	{"health.interval format", gatewayHead + cloudAWS + "  health: {interval: 250ms}\n", gatewayHead + cloudAWS + "  health: {interval: fast}\n", "spec.health.interval"},
	{"health.interval lower bound", gatewayHead + cloudAWS + "  health: {interval: 10ms}\n", gatewayHead + cloudAWS + "  health: {interval: 5ms}\n", "health.interval must be between 10ms and 10s"},
	{"health.interval upper bound", gatewayHead + cloudAWS + "  health: {interval: 10s}\n", gatewayHead + cloudAWS + "  health: {interval: 1m}\n", "health.interval must be between 10ms and 10s"},
	{"health.timeout within interval", gatewayHead + cloudAWS + "  health: {interval: 200ms, timeout: 150ms}\n",
		gatewayHead + cloudAWS + "  health: {interval: 200ms, timeout: 300ms}\n", "health.timeout must not exceed health.interval"},
	{"health.failureThreshold bounds", gatewayHead + cloudAWS + "  health: {failureThreshold: 20}\n", gatewayHead + cloudAWS + "  health: {failureThreshold: 0}\n", "spec.health.failureThreshold"},
	{"failback enum", gatewayHead + cloudAWS + "  failback: Immediate\n", gatewayHead + cloudAWS + "  failback: Later\n", "spec.failback: Unsupported value"},
	{"drainGracePeriod format", gatewayHead + cloudAWS + "  drainGracePeriod: 2m30s\n", gatewayHead + cloudAWS + "  drainGracePeriod: 2 minutes\n", "spec.drainGracePeriod"},
	{"drainGracePeriod bound", gatewayHead + cloudAWS + "  drainGracePeriod: 1h\n", gatewayHead + cloudAWS + "  drainGracePeriod: 2h\n", "drainGracePeriod must be at most 1h"},
	{"allowedNamespaces names or selector", gatewayHead + cloudAWS + "  allowedNamespaces: {names: [team-a]}\n",
		gatewayHead + cloudAWS + "  allowedNamespaces: {names: []}\n", "allowedNamespaces: set names or selector"},

	// EgressPolicy.
	{"destinationCIDRs are CIDRs (v4)", policyHead + policyBody("[203.0.113.0/24]", ""), policyHead + policyBody("[203.0.113.0/40]", ""), "destinationCIDRs: every entry must be a CIDR"},
	{"destinationCIDRs are CIDRs (v6)", policyHead + policyBody("[\"2001:db8::/32\"]", ""), policyHead + policyBody("[\"2001:db8::g/32\"]", ""), "destinationCIDRs: every entry must be a CIDR"},
	{"destinationCIDRs without host bits", policyHead + policyBody("[10.0.0.0/8]", ""), policyHead + policyBody("[10.1.2.3/8]", ""), "destinationCIDRs: entries must have no host bits set"},
	{"destinationCIDRs non-empty", policyHead + policyBody("[10.0.0.0/8]", ""), policyHead + policyBody("[]", ""), "spec.destinationCIDRs"},
	{"excludedCIDRs are CIDRs", policyHead + policyBody("[10.0.0.0/8]", "[10.1.0.0/16]"), policyHead + policyBody("[10.0.0.0/8]", "[10.1.0.0]"), "excludedCIDRs: every entry must be a CIDR"},
	{"excludedCIDRs inside a destination (v4)", policyHead + policyBody("[10.0.0.0/8, 192.0.2.0/24]", "[192.0.2.128/25]"),
		policyHead + policyBody("[10.0.0.0/8]", "[192.0.2.128/25]"), "excludedCIDRs: every entry must lie inside one of destinationCIDRs"},
	{"excludedCIDRs inside a destination (v6, no family mix)", policyHead + policyBody("[\"2001:db8::/32\"]", "[\"2001:db8:1::/48\"]"),
		policyHead + policyBody("[0.0.0.0/0]", "[\"2001:db8:1::/48\"]"), "excludedCIDRs: every entry must lie inside one of destinationCIDRs"},
	{"gateway is a name", policyHead + policyBody("[10.0.0.0/8]", ""), strings.Replace(policyHead+policyBody("[10.0.0.0/8]", ""), "gateway: egress", "gateway: Egress_GW", 1), "gateway must be the name of an EgressGateway"},
	{"gateway required", policyHead + policyBody("[10.0.0.0/8]", ""), strings.Replace(policyHead+policyBody("[10.0.0.0/8]", ""), "  gateway: egress\n", "", 1), "spec.gateway: Required value"},
	{"podSelector required", policyHead + policyBody("[10.0.0.0/8]", ""), strings.Replace(policyHead+policyBody("[10.0.0.0/8]", ""), "  podSelector: {matchLabels: {app: billing}}\n", "", 1), "spec.podSelector: Required value"},
	{"priority bounds", policyHead + policyBody("[10.0.0.0/8]", "") + "  priority: -1000\n", policyHead + policyBody("[10.0.0.0/8]", "") + "  priority: 5000\n", "spec.priority"},

	// ClusterEgressPolicy.
	{"cluster policy namespaceSelector required", clusterPolicyHead + "  namespaceSelector: {}\n" + policyBody("[10.0.0.0/8]", ""),
		clusterPolicyHead + policyBody("[10.0.0.0/8]", ""), "spec.namespaceSelector: Required value"},
	{"cluster policy excludedCIDRs inside a destination", clusterPolicyHead + "  namespaceSelector: {}\n" + policyBody("[10.0.0.0/8]", "[10.9.0.0/16]"),
		clusterPolicyHead + "  namespaceSelector: {}\n" + policyBody("[10.0.0.0/8]", "[172.16.0.0/12]"), "excludedCIDRs: every entry must lie inside one of destinationCIDRs"},
	{"cluster policy destinationCIDRs are CIDRs", clusterPolicyHead + "  namespaceSelector: {}\n" + policyBody("[0.0.0.0/0]", ""),
		clusterPolicyHead + "  namespaceSelector: {}\n" + policyBody("[everything]", ""), "destinationCIDRs: every entry must be a CIDR"},

	// EgressIP.
	{"egress ip is an IP", egressIPHead + egressIPBody("10.0.1.20"), egressIPHead + egressIPBody("10.0.1.300"), "ip must be an IP address"},
}

func staticPool(subnet, ip string) string {
	return "  addresses:\n    static:\n      pools:\n      - {zone: zone-a, subnet: \"" + subnet + "\", ips: [\"" + ip + "\"]}\n"
}

func policyBody(dst, excluded string) string {
	s := "  podSelector: {matchLabels: {app: billing}}\n  gateway: egress\n  destinationCIDRs: " + dst + "\n"
	if excluded != "" {
		s += "  excludedCIDRs: " + excluded + "\n"
	}
	return s
}

func egressIPBody(ip string) string {
	return "  ip: \"" + ip + "\"\n  gateway: egress\n  zone: zone-a\n  provider: aws\n"
}

func object(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatalf("test manifest does not parse: %v\n%s", err, manifest)
	}
	return u
}

func TestSchemaValidation(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.rule, func(t *testing.T) {
			ctx := context.Background()
			valid := object(t, tc.valid)
			if err := server.Client.Create(ctx, valid); err != nil {
				t.Fatalf("valid object rejected: %v", err)
			}
			t.Cleanup(func() { _ = server.Client.Delete(ctx, valid) })

			err := server.Client.Create(ctx, object(t, tc.invalid))
			if err == nil {
				t.Fatalf("invalid object accepted:\n%s", tc.invalid)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("rejection does not name the field\nwant substring: %s\ngot: %v", tc.want, err)
			}
		})
	}
}

func TestEgressIPImmutableFields(t *testing.T) {
	ctx := context.Background()
	eip := object(t, egressIPHead+egressIPBody("10.0.1.21"))
	if err := server.Client.Create(ctx, eip); err != nil {
		t.Fatalf("creating: %v", err)
	}
	t.Cleanup(func() { _ = server.Client.Delete(ctx, eip) })

	for _, tc := range []struct{ field, value, want string }{
		{"ip", "10.0.1.22", "ip is immutable"},
		{"gateway", "other", "gateway is immutable"},
	} {
		changed := eip.DeepCopy()
		if err := unstructured.SetNestedField(changed.Object, tc.value, "spec", tc.field); err != nil {
			t.Fatal(err)
		}
		err := server.Client.Update(ctx, changed)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("changing spec.%s: want an error containing %q, got %v", tc.field, tc.want, err)
		}
	}
	// A mutable field still updates.
	moved := eip.DeepCopy()
	if err := unstructured.SetNestedField(moved.Object, "node-b", "spec", "node"); err != nil {
		t.Fatal(err)
	}
	if err := server.Client.Update(ctx, moved); err != nil {
		t.Errorf("changing spec.node: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	ctx := context.Background()
	gw := object(t, gatewayHead+cloudAWS)
	if err := server.Client.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Client.Delete(ctx, gw) })
	for path, want := range map[string]any{
		"spec.mode":                       "ActiveActive",
		"spec.failback":                   "Never",
		"spec.drainGracePeriod":           "30s",
		"spec.addresses.cloud.family":     "IPv4",
		"spec.addresses.cloud.interface":  "Primary",
		"spec.addresses.cloud.ipsPerZone": int64(1),
	} {
		got, _, _ := unstructured.NestedFieldNoCopy(gw.Object, strings.Split(path, ".")...)
		if got != want {
			t.Errorf("%s defaulted to %v, want %v", path, got, want)
		}
	}
}

var _ client.Object = (*unstructured.Unstructured)(nil)
