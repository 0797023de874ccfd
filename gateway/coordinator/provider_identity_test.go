package coordinator

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws"
	"github.com/egressd/egressd/providers/aws/awssimtest"
	"github.com/egressd/egressd/providers/conformance"
)

// TestProvidersOfOneTypeKeepTheirNames: two providers of one type (two AWS accounts),
// configured under two names, are two identities: BuildProviders names each by its key and
// the node cache holds one entry per provider for the same node (it was keyed by the type, so
// the second account read the first one's view of the node). Their metric series are tested
// with the decorators (providers.TestMetricsPerConfiguredName).
func TestProvidersOfOneTypeKeepTheirNames(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
clusterName: c1
providers:
  aws-prod: {type: aws}
  aws-staging: {type: aws}
`))
	if err != nil {
		t.Fatal(err)
	}
	// Both accounts are the one simulated VPC here; what differs is the configured name.
	w := awssimtest.Harness{}.Setup(t, conformance.Topology{Zones: []string{"a"}, NodesPerZone: 1, IPsPerNode: 2}).(*awssimtest.World)
	reg := providers.Registry{aws.Type: func(_ context.Context, name string, _ json.RawMessage) (providers.Provider, error) {
		return w.NewProvider(name, nil)
	}}
	provs, err := BuildProviders(context.Background(), cfg, reg, prometheus.NewPedanticRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c := New(Options{Config: cfg, Providers: provs})
	ref := w.Nodes("a")[0]
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Labels: map[string]string{corev1.LabelTopologyZone: ref.Zone}},
		Spec: corev1.NodeSpec{ProviderID: ref.ProviderID}}
	for _, name := range []string{"aws-prod", "aws-staging"} {
		if got := provs[name].Name(); got != name {
			t.Fatalf("provider %s: Name() = %q", name, got)
		}
		w.ResetCalls()
		if _, err := c.discover(context.Background(), provs[name], node); err != nil {
			t.Fatal(err)
		}
		if w.Calls()["DescribeInstances"] != 1 {
			t.Errorf("%s: %d DescribeInstances, want 1 (a cache hit on the other provider's entry?)", name, w.Calls()["DescribeInstances"])
		}
		if c.nodes.get(name+"/"+ref.Name, c.clock.Now(), cfg.CapacityTTL.Duration) == nil {
			t.Errorf("no cache entry %s/%s", name, ref.Name)
		}
	}
}
