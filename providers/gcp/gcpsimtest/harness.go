// Package gcpsimtest binds the GCP provider to the Compute simulator for the provider
// conformance suite (and for other packages' tests that need a GCP-backed provider).
package gcpsimtest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/providers/gcp"
	gcpsim "github.com/egressd/egressd/test/cloudsim/gcp"
)

const project = "conformance-proj"

// zoneOf maps the suite's zone names to GCE zones of one region (one regional subnet).
func zoneOf(z string) string { return "us-central1-" + strings.TrimPrefix(z, "zone-") }

// Harness implements conformance.Harness. Describe lag is not a feature: instances.get is
// strongly consistent on GCE (fingerprint concurrency depends on it), so the suite's hour
// of lag would turn every update into a 412; the GCP tests cover address lag. Wrap, when set,
// wraps the provider under test (the plugin suite puts the plugin protocol in between).
type Harness struct {
	Wrap func(t *testing.T, p providers.Provider) providers.Provider
}

// Features implements conformance.Harness.
func (Harness) Features() []conformance.Feature {
	return []conformance.Feature{conformance.FeaturePublicIP, conformance.FeatureThrottling, conformance.FeatureFailAfterApply, conformance.FeatureForeign}
}

// Setup implements conformance.Harness.
func (h Harness) Setup(t *testing.T, topo conformance.Topology) conformance.World {
	sim := gcpsim.New()
	seed := gcpsim.ProjectSeed{ID: project, Subnets: []gcpsim.SubnetSeed{{Name: "nodes", Region: "us-central1", CIDR: "10.0.0.0/20"}}}
	w := &world{SimWorld: conformance.NewSimWorld(sim, mutating, netip.MustParseAddr("10.0.1.0")), sim: sim}
	host := 2
	for _, z := range topo.Zones {
		for i := range topo.NodesPerZone {
			name := fmt.Sprintf("node-%s-%d", strings.TrimPrefix(z, "zone-"), i)
			seed.Instances = append(seed.Instances, gcpsim.InstanceSeed{Name: name, Zone: zoneOf(z), MaxAliasRanges: topo.IPsPerNode,
				NICs: []gcpsim.NICSeed{{Subnet: "nodes", NetworkIP: fmt.Sprintf("10.0.0.%d", host)}}})
			host++
			w.AddNode(providers.NodeRef{Name: name, Zone: z, ProviderID: "gce://" + project + "/" + zoneOf(z) + "/" + name})
		}
	}
	if err := sim.Seed(seed); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	p, err := gcp.New(context.Background(), gcp.Type, gcp.Config{ClusterName: w.Cluster(), Project: project, Endpoint: srv.URL,
		WithoutAuthentication: true, MaxAliasRangesPerInterface: topo.IPsPerNode, RetryBudget: providers.Duration(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	w.SetProvider(t, p, h.Wrap)
	return w
}

type world struct {
	*conformance.SimWorld
	sim *gcpsim.Sim
}

func (w *world) SetDescribeLag(d time.Duration) { w.sim.SetDescribeLag(d) }
func (w *world) ClearFaults()                   { w.sim.ClearFaults() }
func (w *world) Throttle(n int)                 { w.sim.ThrottleAll(n) }
func (w *world) PublicIPs() int                 { return w.sim.AddressCount("EXTERNAL") }

var mutating = []string{gcpsim.MUpdateNetworkIface, gcpsim.MAddAccessConfig, gcpsim.MDeleteAccessConfig, gcpsim.MAddressesInsert, gcpsim.MAddressesDelete,
	gcpsim.MAddressesSetLabels}

func (w *world) FailMutationsAfterApply() {
	w.FailEachMutation(w.sim.FailNext, http.StatusServiceUnavailable)
}

func instName(key string) string { return key[strings.LastIndex(key, "/")+1:] }

func (w *world) Holder(ip netip.Addr) (string, netip.Addr, bool) {
	st := w.sim.Snapshot()
	h, ok := st.Aliases[ip.String()]
	if !ok {
		return "", netip.Addr{}, false
	}
	var pub netip.Addr
	for nat, inst := range st.External {
		if inst == h {
			pub, _ = netip.ParseAddr(nat)
		}
	}
	return instName(h), pub, true
}

// NATSource implements conformance.NATWorld: the primary internal address of the interface
// whose access config carries public (GCE translates no other).
func (w *world) NATSource(public netip.Addr) (netip.Addr, bool) {
	src, ok := w.sim.Snapshot().NAT[public.String()]
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(src)
	return a, err == nil
}

var _ conformance.NATWorld = (*world)(nil)

func (w *world) Addresses(node string) []netip.Addr {
	var out []netip.Addr
	for a, inst := range w.sim.Snapshot().Aliases {
		if instName(inst) == node {
			out = append(out, netip.MustParseAddr(a))
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// AddForeign gives the node an alias of no cluster and one reserved by another cluster. No
// foreign access config: a NIC takes only one, and the suite then asks for ours on it.
func (w *world) AddForeign(node providers.NodeRef) []netip.Addr {
	zone := zoneOf(node.Zone)
	a, b := w.FreeAddress(node.Zone), w.FreeAddress(node.Zone)
	w.sim.PutAlias(project, zone, node.Name, a.String()+"/32")
	w.sim.PutAlias(project, zone, node.Name, b.String()+"/32")
	w.sim.PutAddress(project, "us-central1", "other-"+strings.ReplaceAll(b.String(), ".", "-"), b.String(), "INTERNAL",
		map[string]string{gcp.LabelCluster: "other-cluster", gcp.LabelOwner: "gw1"})
	return []netip.Addr{a, b}
}
