package gcp_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/gcp"
	gcpsim "github.com/egressd/egressd/test/cloudsim/gcp"
)

func summary(c map[string]int) string {
	keys := make([]string, 0, len(c))
	for k, v := range c {
		if v > 0 && k != gcpsim.MMetadata {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, c[k])
	}
	return strings.Join(parts, " ")
}

// TestFiguresCallsPerOperation prints the Compute API calls each provider operation makes
// against the simulator (run with -v to quote them), and the move windows with 50 ms
// operations.
func TestFiguresCallsPerOperation(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	e.sim.SetOperationDelay(50 * time.Millisecond)
	ctx := context.Background()
	step := func(name string, f func() error) {
		t.Helper()
		e.sim.ResetCalls()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c := e.sim.CallCounts()
		t.Logf("%-28s total=%-2d mutating=%d  %s", name, total(c), mutating(c), summary(c))
	}
	var priv, pub *providers.Assignment
	step("ensure", func() (err error) {
		priv, err = e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.14.1")})
		return err
	})
	step("ensure+public", func() (err error) {
		pub, err = e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: ip("10.0.14.2"), Public: true})
		return err
	})
	step("resync ensure (held)", func() error {
		_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.14.1")})
		return err
	})
	step("resync ListOwned", func() error { _, err := e.p.ListOwned(ctx, owner.Cluster); return err })
	step("move", func() (err error) {
		priv, err = e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *priv, To: nodeC})
		return err
	})
	w1 := e.p.LastMoveWindow()
	step("move+public", func() (err error) {
		pub, err = e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *pub, To: nodeA})
		return err
	})
	w2 := e.p.LastMoveWindow()
	step("release", func() error { return e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *priv}) })
	step("release+public", func() error { return e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *pub}) })
	sp, _ := windows(e.sim.Events(), "10.0.14.1", "")
	sp2, spub := windows(e.sim.Events(), "10.0.14.2", pub.PublicIP.String())
	t.Logf("move window, 50 ms operations: private-only move %v (simulator) / %v (provider); move+public: alias %v, public IP %v (simulator) / %v, %v (provider)",
		sp.Round(time.Millisecond), w1.Private.Round(time.Millisecond), sp2.Round(time.Millisecond), spub.Round(time.Millisecond), w2.Private.Round(time.Millisecond), w2.Public.Round(time.Millisecond))
}

// TestFiguresDiscovery prints the Compute calls one batched discovery of n nodes makes (the
// coordinator's start-up and resync path, providers.DiscoverNodes), n over three zones, and
// checks every node was described.
func TestFiguresDiscovery(t *testing.T) {
	for _, n := range []int{1, 30, 300} {
		sim := gcpsim.New()
		seed := gcpsim.ProjectSeed{ID: proj, Subnets: []gcpsim.SubnetSeed{{Name: "nodes", Region: "us-central1", CIDR: "10.0.0.0/20"}}}
		var refs []providers.NodeRef
		for i := range n {
			zone := fmt.Sprintf("us-central1-%c", 'a'+i%3)
			name := fmt.Sprintf("gke-pool-%04d", i)
			seed.Instances = append(seed.Instances, gcpsim.InstanceSeed{Name: name, Zone: zone,
				NICs: []gcpsim.NICSeed{{Subnet: "nodes", NetworkIP: fmt.Sprintf("10.0.%d.%d", 1+i/250, 1+i%250)}}})
			refs = append(refs, node(name, zone))
		}
		// An instance of the zone that is no node of the batch: a filtered list leaves it out.
		seed.Instances = append(seed.Instances, gcpsim.InstanceSeed{Name: "other-vm", Zone: "us-central1-a",
			NICs: []gcpsim.NICSeed{{Subnet: "nodes", NetworkIP: "10.0.9.1"}}})
		if err := sim.Seed(seed); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(sim.Handler())
		p, err := gcp.New(context.Background(), gcp.Type, gcp.Config{ClusterName: owner.Cluster, Project: proj, Endpoint: srv.URL, WithoutAuthentication: true})
		if err != nil {
			t.Fatal(err)
		}
		infos, errs := providers.DiscoverNodes(context.Background(), p, refs)
		srv.Close()
		for i := range refs {
			if errs[i] != nil || infos[i] == nil || infos[i].Zone != refs[i].Zone || len(infos[i].Interfaces) != 1 || len(infos[i].Subnets) != 1 {
				t.Fatalf("node %s: %+v, %v", refs[i].Name, infos[i], errs[i])
			}
		}
		c := sim.CallCounts()
		t.Logf("discover %3d nodes in 3 zones: total=%-3d mutating=%d  %s", n, total(c), mutating(c), summary(c))
	}
}
