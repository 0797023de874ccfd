package azure_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/azure"
	"github.com/egressd/egressd/providers/conformance"
	azuresim "github.com/egressd/egressd/test/cloudsim/azure"
)

// scaleVMs and scalePage shape BenchmarkDiscoverNodes: AKS's node resource group with 1,000
// VMs, its NIC list served in pages of 100 (Azure's page size is not documented; the list's
// cost is one call per page).
const (
	scaleVMs   = 1000
	scalePage  = 100
	scaleBatch = 25 // nodes per DiscoverNodes: one gateway's nodes, as the coordinator asks
)

// BenchmarkDiscoverNodes discovers 1,000 VMs of one resource group with a cold provider, in
// batches of 25 (the coordinator asks per gateway) and one at a time, and reports the ARM
// calls per 1,000 nodes, by method, with a FIGURE line.
//
//	go test -run '^$' -bench DiscoverNodes -benchtime 3x ./providers/azure/
func BenchmarkDiscoverNodes(b *testing.B) {
	sim := azuresim.New(sub, "westeurope")
	if err := sim.AddSubnet(azuresim.SubnetSeed{ResourceGroup: rg, VNet: "aks-vnet", Name: "nodes", CIDR: "10.224.0.0/12"}); err != nil {
		b.Fatal(err)
	}
	subnet := sim.SubnetID(rg, "aks-vnet", "nodes")
	var refs []providers.NodeRef
	for i := range scaleVMs {
		name := fmt.Sprintf("aks-gw-%04d", i)
		sim.AddVM(azuresim.VMSeed{ResourceGroup: rg, Name: name, Subnet: subnet, PrimaryIP: fmt.Sprintf("10.224.%d.%d", 1+i/200, 4+i%200)})
		refs = append(refs, node(name))
	}
	sim.SetPageSize(scalePage)
	srv := httptest.NewTLSServer(sim.Handler())
	b.Cleanup(srv.Close)
	newProvider := func() *azure.Provider {
		clients, err := azure.NewClients(sub, staticToken{}, azure.ClientOptions(srv.URL, srv.Client(), false, 2))
		if err != nil {
			b.Fatal(err)
		}
		p, err := azure.New(context.Background(), azure.Type, azure.Config{ClusterName: owner.Cluster, SubscriptionID: sub, ResourceGroup: rg},
			azure.WithClients(clients))
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	conformance.BenchDiscoverNodes(b, refs, scaleBatch, sim, func() providers.Provider { return newProvider() }, total,
		func(mode string, calls map[string]int, took time.Duration) string {
			return fmt.Sprintf("FIGURE azure DiscoverNodes of %d VMs (%s, cold provider, NIC list pages of %d): %d ARM calls (%s), %v",
				scaleVMs, mode, scalePage, total(calls), summary(calls), took.Round(time.Millisecond))
		})
}
