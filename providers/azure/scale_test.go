package azure_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/azure"
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
	ctx := context.Background()
	for _, mode := range []struct {
		name     string
		discover func(p *azure.Provider) error
	}{
		{"batches-of-25", func(p *azure.Provider) error {
			for chunk := range slices.Chunk(refs, scaleBatch) {
				if _, errs := providers.DiscoverNodes(ctx, p, chunk); errors.Join(errs...) != nil {
					return errors.Join(errs...)
				}
			}
			return nil
		}},
		{"one-at-a-time", func(p *azure.Provider) error {
			for _, r := range refs {
				if _, err := p.DiscoverNode(ctx, r); err != nil {
					return err
				}
			}
			return nil
		}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			var calls map[string]int
			var took time.Duration
			for b.Loop() {
				p := newProvider()
				sim.ResetCalls()
				start := time.Now()
				if err := mode.discover(p); err != nil {
					b.Fatal(err)
				}
				took = time.Since(start)
				calls = sim.CallCounts()
			}
			b.ReportMetric(float64(total(calls)), "calls/1000-nodes")
			for m, n := range calls {
				b.ReportMetric(float64(n), m+"-calls")
			}
			b.Logf("FIGURE azure DiscoverNodes of %d VMs (%s, cold provider, NIC list pages of %d): %d ARM calls (%s), %v",
				scaleVMs, mode.name, scalePage, total(calls), summary(calls), took.Round(time.Millisecond))
		})
	}
}
