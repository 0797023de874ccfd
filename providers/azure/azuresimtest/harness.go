// Package azuresimtest binds the Azure provider to the ARM simulator for the provider
// conformance suite (and other packages' tests that need an Azure-backed provider).
package azuresimtest

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

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/azure"
	"github.com/egressd/egressd/providers/conformance"
	azuresim "github.com/egressd/egressd/test/cloudsim/azure"
)

const (
	sub = "00000000-0000-0000-0000-0000000000c0"
	rg  = "MC_conformance"
)

// StaticToken is a fake azcore.TokenCredential returning a fixed token.
type StaticToken struct{}

// GetToken implements azcore.TokenCredential.
func (StaticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "conformance-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// Harness implements conformance.Harness. No describe lag: ARM reads of a resource follow
// its completed long-running operation, and the simulator does not model lag. Wrap, when set,
// wraps the provider under test (the plugin suite puts the plugin protocol in between).
//
// Uniform puts the nodes on a Uniform scale set (AKS's default pools): public egress only,
// public IPs drawn from the gateway's prefix (conformance.FeaturePublicOnly), no foreign
// resources (the simulator has no other writer of instance models).
type Harness struct {
	Wrap    func(t *testing.T, p providers.Provider) providers.Provider
	Uniform bool
}

// Features implements conformance.Harness.
func (h Harness) Features() []conformance.Feature {
	if h.Uniform {
		return []conformance.Feature{conformance.FeaturePublicIP, conformance.FeaturePublicOnly, conformance.FeatureThrottling, conformance.FeatureFailAfterApply}
	}
	return []conformance.Feature{conformance.FeaturePublicIP, conformance.FeatureThrottling, conformance.FeatureFailAfterApply, conformance.FeatureForeign}
}

// Setup implements conformance.Harness.
func (h Harness) Setup(t *testing.T, topo conformance.Topology) conformance.World {
	sim := azuresim.New(sub, "westeurope")
	subnet := sim.SubnetID(rg, "vnet", "nodes")
	if err := sim.AddSubnet(azuresim.SubnetSeed{ResourceGroup: rg, VNet: "vnet", Name: "nodes", CIDR: "10.240.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	// Two items per list page, so every list the suite drives crosses pages (nextLink), and
	// operations that run a little while, so resources go through Updating and a write
	// retried by the SDK after a 5xx-after-apply meets AnotherOperationInProgress.
	sim.SetPageSize(2)
	sim.SetOperationDelay(5 * time.Millisecond)
	if h.Uniform {
		return h.setupUniform(t, topo, sim, subnet)
	}
	w := &world{SimWorld: conformance.NewSimWorld(sim, mutating, netip.MustParseAddr("10.240.1.0")), sim: sim}
	host := 4
	for _, z := range topo.Zones {
		for i := range topo.NodesPerZone {
			name := fmt.Sprintf("vm-%s-%d", strings.TrimPrefix(z, "zone-"), i)
			sim.AddVM(azuresim.VMSeed{ResourceGroup: rg, Name: name, Subnet: subnet, PrimaryIP: fmt.Sprintf("10.240.0.%d", host), MaxIPConfigurations: topo.IPsPerNode + 1})
			host++
			w.AddNode(providers.NodeRef{Name: name, Zone: z,
				ProviderID: "azure:///subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/Microsoft.Compute/virtualMachines/" + name})
		}
	}
	w.SetProvider(t, newProvider(t, sim, w.Cluster(), topo), h.Wrap)
	return w
}

// newProvider serves sim over TLS and returns the provider bound to it.
func newProvider(t *testing.T, sim *azuresim.Sim, cluster string, topo conformance.Topology) providers.Provider {
	srv := httptest.NewTLSServer(sim.Handler())
	t.Cleanup(srv.Close)
	clients, err := azure.NewClients(sub, StaticToken{}, azure.ClientOptions(srv.URL, srv.Client(), false, 2))
	if err != nil {
		t.Fatal(err)
	}
	p, err := azure.New(context.Background(), azure.Type, azure.Config{ClusterName: cluster, SubscriptionID: sub, ResourceGroup: rg,
		MaxIPConfigurationsPerInterface: topo.IPsPerNode + 1, PollFrequency: providers.Duration(10 * time.Millisecond)}, azure.WithClients(clients))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const scaleSet = "aks-conformance-vmss"

// setupUniform seeds one Uniform scale set with the topology's nodes as instances.
func (h Harness) setupUniform(t *testing.T, topo conformance.Topology, sim *azuresim.Sim, subnet string) conformance.World {
	w := &uniformWorld{SimWorld: conformance.NewSimWorld(sim, uniformMutating, netip.MustParseAddr("10.240.1.0")), sim: sim, names: map[string]string{}}
	var seed []azuresim.ScaleSetInstanceSeed
	for _, z := range topo.Zones {
		for range topo.NodesPerZone {
			id := fmt.Sprint(len(seed))
			seed = append(seed, azuresim.ScaleSetInstanceSeed{ID: id, PrimaryIP: fmt.Sprintf("10.240.0.%d", 4+len(seed))})
			name := scaleSet + "00000" + id
			w.names[strings.ToLower(sim.ScaleSetVMID(rg, scaleSet, id))] = name
			w.AddNode(providers.NodeRef{Name: name, Zone: z, ProviderID: "azure://" + sim.ScaleSetVMID(rg, scaleSet, id)})
		}
	}
	sim.AddScaleSet(azuresim.ScaleSetSeed{ResourceGroup: rg, Name: scaleSet, Subnet: subnet, Instances: seed})
	w.SetProvider(t, newProvider(t, sim, w.Cluster(), topo), h.Wrap)
	return w
}

var uniformMutating = []string{azuresim.MInstancePut, azuresim.MPrefixPut, azuresim.MPrefixDelete}

// uniformWorld reads the cloud's state of Uniform instances: an egress IP is held where an
// ipConfiguration named for it (egressd-<hash>-<address>) is, with the public IP drawn for it.
type uniformWorld struct {
	*conformance.SimWorld
	sim   *azuresim.Sim
	names map[string]string // lower(instance resource ID) → node name
}

func (w *uniformWorld) SetDescribeLag(time.Duration) {}
func (w *uniformWorld) ClearFaults()                 { w.sim.ClearFaults() }
func (w *uniformWorld) Throttle(n int)               { w.sim.ThrottleAll(n, "1") }
func (w *uniformWorld) FailMutationsAfterApply() {
	w.FailEachMutation(w.sim.FailNext, http.StatusInternalServerError)
}

func (w *uniformWorld) PublicIPs() int {
	n := 0
	for _, c := range w.sim.ScaleSetIPConfigs() {
		if c.PublicIP != "" {
			n++
		}
	}
	return n
}

// egressIP is the address an ipConfiguration's name is for, as egressd names them.
func egressIP(name string) (netip.Addr, bool) {
	parts := strings.Split(name, "-") // egressd, hash, and the address's four bytes
	if !strings.HasPrefix(name, "egressd-") || len(parts) != 6 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.Join(parts[2:], "."))
	return a, err == nil
}

func (w *uniformWorld) Holder(ip netip.Addr) (string, netip.Addr, bool) {
	for _, c := range w.sim.ScaleSetIPConfigs() {
		if a, ok := egressIP(c.Name); ok && a == ip {
			pub, _ := netip.ParseAddr(c.PublicIP)
			return w.names[strings.ToLower(c.Instance)], pub, true
		}
	}
	return "", netip.Addr{}, false
}

func (w *uniformWorld) Addresses(node string) []netip.Addr {
	var out []netip.Addr
	for _, c := range w.sim.ScaleSetIPConfigs() {
		if a, ok := egressIP(c.Name); ok && w.names[strings.ToLower(c.Instance)] == node {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// NATSource implements conformance.NATWorld: the cloud translates an instance's public IP from
// its ipConfiguration's Dynamic address.
func (w *uniformWorld) NATSource(public netip.Addr) (netip.Addr, bool) {
	for _, c := range w.sim.ScaleSetIPConfigs() {
		if c.PublicIP == public.String() {
			a, err := netip.ParseAddr(c.PrivateIP)
			return a, err == nil
		}
	}
	return netip.Addr{}, false
}

func (w *uniformWorld) AddForeign(providers.NodeRef) []netip.Addr { return nil }

type world struct {
	*conformance.SimWorld
	sim *azuresim.Sim
}

func (w *world) SetDescribeLag(time.Duration) {}
func (w *world) ClearFaults()                 { w.sim.ClearFaults() }
func (w *world) PublicIPs() int               { return len(w.sim.Snapshot().PublicIPs) }

// Throttle answers 429 with Retry-After: 1 (the SDK waits it out between its retries).
func (w *world) Throttle(n int) { w.sim.ThrottleAll(n, "1") }

var mutating = []string{azuresim.MNICPut, azuresim.MPIPPut, azuresim.MPIPDelete}

func (w *world) FailMutationsAfterApply() {
	w.FailEachMutation(w.sim.FailNext, http.StatusInternalServerError)
}

func (w *world) Holder(ip netip.Addr) (string, netip.Addr, bool) {
	st := w.sim.Snapshot()
	h, ok := st.PrivateIPs[ip.String()]
	if !ok {
		return "", netip.Addr{}, false
	}
	var pub netip.Addr
	for p, priv := range st.PublicIPs {
		if priv == ip.String() {
			pub, _ = netip.ParseAddr(p)
		}
	}
	nic := h[:strings.Index(h, "/")]
	return strings.TrimSuffix(nic, "-nic"), pub, true
}

func (w *world) Addresses(node string) []netip.Addr {
	var out []netip.Addr
	for a, h := range w.sim.Snapshot().PrivateIPs {
		if strings.HasPrefix(h, node+"-nic/") {
			out = append(out, netip.MustParseAddr(a))
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// AddForeign gives the node's NIC an ipConfiguration of no cluster and one named for another
// cluster.
func (w *world) AddForeign(node providers.NodeRef) []netip.Addr {
	a, b := w.FreeAddress(node.Zone), w.FreeAddress(node.Zone)
	nic := w.sim.NICID(rg, node.Name+"-nic")
	w.sim.AddIPConfig(nic, "manual", a.String())
	w.sim.AddIPConfig(nic, "egressd-00000000-"+strings.ReplaceAll(b.String(), ".", "-"), b.String())
	return []netip.Addr{a, b}
}
