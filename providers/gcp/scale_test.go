package gcp_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/providers/gcp"
	gcpsim "github.com/egressd/egressd/test/cloudsim/gcp"
)

const (
	scaleInstances = 1000
	scaleBatch     = 25 // nodes per DiscoverNodes: one gateway's nodes, as the coordinator asks
)

// BenchmarkDiscoverNodes discovers 1,000 instances over 4 zones of one regional subnetwork
// with a cold provider, in batches of 25 (the coordinator asks per gateway) and one at a time,
// and reports the Compute calls per 1,000 nodes, by method, with a FIGURE line.
//
//	go test -run '^$' -bench DiscoverNodes -benchtime 3x ./providers/gcp/
func BenchmarkDiscoverNodes(b *testing.B) {
	sim := gcpsim.New()
	seed := gcpsim.ProjectSeed{ID: proj, Subnets: []gcpsim.SubnetSeed{{Name: "nodes", Region: "us-central1", CIDR: "10.0.0.0/20"}}}
	var refs []providers.NodeRef
	for i := range scaleInstances {
		zone := fmt.Sprintf("us-central1-%c", 'a'+i%4)
		name := fmt.Sprintf("gke-gw-%04d", i)
		seed.Instances = append(seed.Instances, gcpsim.InstanceSeed{Name: name, Zone: zone,
			NICs: []gcpsim.NICSeed{{Subnet: "nodes", NetworkIP: fmt.Sprintf("10.0.%d.%d", i/250, 2+i%250)}}})
		refs = append(refs, node(name, zone))
	}
	if err := sim.Seed(seed); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	b.Cleanup(srv.Close)
	ctx := context.Background()
	newProvider := func() *gcp.Provider {
		p, err := gcp.New(ctx, gcp.Type, gcp.Config{ClusterName: owner.Cluster, Project: proj, Endpoint: srv.URL, WithoutAuthentication: true})
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	conformance.BenchDiscoverNodes(b, refs, scaleBatch, sim, func() providers.Provider { return newProvider() }, total,
		func(mode string, calls map[string]int, took time.Duration) string {
			return fmt.Sprintf("FIGURE gcp DiscoverNodes of %d instances over 4 zones (%s, cold provider): %d Compute calls (%s), %v",
				scaleInstances, mode, total(calls), summary(calls), took.Round(time.Millisecond))
		})
}
