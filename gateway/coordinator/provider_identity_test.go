package coordinator

import (
	"context"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/static"
)

// TestProvidersOfOneTypeKeepTheirNames: two providers of one type, configured under two names,
// are two identities: the node cache entries of the same node stay apart (they were keyed by
// the type, so the second provider read the first one's view). Their metric series are
// tested with the decorators (providers.TestMetricsPerConfiguredName).
func TestProvidersOfOneTypeKeepTheirNames(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
clusterName: c1
providers:
  dc-east:
    type: static
    pools: [{zone: z, addresses: ["192.0.2.16/28"], interface: eth0}]
  dc-west:
    type: static
    pools: [{zone: z, addresses: ["198.51.100.16/29"], interface: eth1}]
`))
	if err != nil {
		t.Fatal(err)
	}
	provs, err := BuildProviders(context.Background(), cfg, providers.Registry{static.Type: static.Constructor}, prometheus.NewPedanticRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c := New(Options{Config: cfg, Providers: provs})
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{corev1.LabelTopologyZone: "z"}}}
	want := map[string]netip.Prefix{"dc-east": netip.MustParsePrefix("192.0.2.16/28"), "dc-west": netip.MustParsePrefix("198.51.100.16/29")}
	for name := range want {
		if got := provs[name].Name(); got != name {
			t.Fatalf("provider %s: Name() = %q", name, got)
		}
		if _, err := c.discover(context.Background(), provs[name], node); err != nil {
			t.Fatal(err)
		}
	}
	for name, cidr := range want {
		info := c.nodes.get(name+"/n1", c.clock.Now(), cfg.CapacityTTL.Duration)
		if info == nil || len(info.Subnets) != 1 || info.Subnets[0].CIDR != cidr {
			t.Errorf("cache entry of %s/n1 = %+v, want the subnet %s", name, info, cidr)
		}
	}
}
