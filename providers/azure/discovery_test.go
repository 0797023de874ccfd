package azure_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/azure"
	azuresim "github.com/egressd/egressd/test/cloudsim/azure"
)

// addVMs adds n VMs vm-00.. to the environment's subnet, primaries from 10.240.1.10 up.
func addVMs(e *env, n int) []providers.NodeRef {
	subnet := e.sim.SubnetID(rg, "aks-vnet", "nodes")
	var refs []providers.NodeRef
	for i := range n {
		name := fmt.Sprintf("vm-%02d", i)
		e.sim.AddVM(azuresim.VMSeed{ResourceGroup: rg, Name: name, Subnet: subnet, PrimaryIP: fmt.Sprintf("10.240.1.%d", 10+i)})
		refs = append(refs, node(name))
	}
	return refs
}

// TestDiscoverNodesBatched: discovering many nodes of one resource group costs one list of its
// NICs, every page of it (here 15 NICs in pages of 4: 4 pages), and one subnets.get, not a
// NIC GET and a subnet GET per node; the list answers again for nicListTTL at no cost; a NIC
// the provider wrote since is read alone with one GET (it shows the new address); and a
// missing VM and a malformed providerID fail only themselves, a Uniform scale-set instance
// among them is described from its scale-set NIC read.
func TestDiscoverNodesBatched(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	refs := addVMs(e, 12)
	e.sim.SetPageSize(4)
	missing := node("vm-gone")
	bad := providers.NodeRef{Name: "bad", ProviderID: "aws:///us-east-1a/i-0123"}
	all := append(append([]providers.NodeRef{}, refs...), missing, bad, instance("0"))
	e.sim.AddScaleSet(azuresim.ScaleSetSeed{ResourceGroup: rg, Name: scaleSet, Subnet: e.sim.SubnetID(rg, "aks-vnet", "nodes"),
		Instances: []azuresim.ScaleSetInstanceSeed{{ID: "0", PrimaryIP: "10.240.0.10"}}})

	e.sim.ResetCalls()
	infos, errs := providers.DiscoverNodes(ctx, e.p, all)
	for i, r := range refs {
		if errs[i] != nil {
			t.Fatalf("%s: %v", r.Name, errs[i])
		}
		itf := infos[i].Interfaces[0]
		if want := ip(fmt.Sprintf("10.240.1.%d", 10+i)); itf.PrimaryIP != want || len(itf.SecondaryIPs) != 0 {
			t.Errorf("%s: primary %v, secondaries %v; want %v and none", r.Name, itf.PrimaryIP, itf.SecondaryIPs, want)
		}
		if len(infos[i].Subnets) != 1 || infos[i].Subnets[0].CIDR.String() != "10.240.0.0/16" || infos[i].Capacity.FreeIPSlots != 255 {
			t.Errorf("%s: subnets %+v, capacity %+v", r.Name, infos[i].Subnets, infos[i].Capacity)
		}
	}
	n := len(refs)
	if !providers.IsNotFound(errs[n]) || !providers.IsNotFound(errs[n+1]) || errs[n+2] != nil || infos[n+2].Interfaces[0].PrimaryIP != ip("10.240.0.10") {
		t.Fatalf("missing VM: %v; malformed providerID: %v; Uniform instance: %v", errs[n], errs[n+1], errs[n+2])
	}
	// 15 NICs (vm-a, vm-b, vm-small and vm-00..vm-11) in pages of 4.
	c := e.sim.CallCounts()
	if c[azuresim.MNICList] != 4 || c[azuresim.MSubnetGet] != 1 || c[azuresim.MNICGet] != 0 || c[azuresim.MScaleSetNICList] != 1 || total(c) != 6 {
		t.Fatalf("calls %s, want 4 networkInterfaces.list pages, 1 subnets.get, 1 scale-set NIC list and no NIC get", summary(c))
	}

	e.sim.ResetCalls()
	if _, errs := providers.DiscoverNodes(ctx, e.p, refs); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
	if c := e.sim.CallCounts(); total(c) != 0 {
		t.Fatalf("discovery again within the list's lifetime: calls %s, want none", summary(c))
	}

	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: refs[3], IP: ip("10.240.9.1")}); err != nil {
		t.Fatal(err)
	}
	e.sim.ResetCalls()
	infos, errs = providers.DiscoverNodes(ctx, e.p, refs)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := infos[3].Interfaces[0].SecondaryIPs; len(got) != 1 || got[0] != ip("10.240.9.1") || infos[3].Capacity.FreeIPSlots != 254 {
		t.Fatalf("%s after the ensure: secondaries %v, capacity %+v; want 10.240.9.1 and 254 free", refs[3].Name, got, infos[3].Capacity)
	}
	if c := e.sim.CallCounts(); c[azuresim.MNICGet] != 1 || total(c) != 1 {
		t.Fatalf("discovery after one NIC was written: calls %s, want that NIC's GET only", summary(c))
	}
}

// TestDiscoverNodesListFails: a list refused (429 past the SDK's retries) fails the nodes of
// its resource group with Throttled and the Retry-After ARM sent; the next discovery lists
// again. A subnet read refused fails its nodes after one read.
func TestDiscoverNodesListFails(t *testing.T) {
	e := newEnv(t, -1) // no SDK retries
	ctx := context.Background()
	refs := addVMs(e, 3)
	e.sim.Throttle(azuresim.MNICList, 1, "7")
	_, errs := providers.DiscoverNodes(ctx, e.p, refs)
	for i, err := range errs {
		var pe *providers.Error
		if !providers.IsThrottled(err) || !errors.As(err, &pe) || pe.RetryAfter != 7*time.Second {
			t.Fatalf("%s: %v, want Throttled with RetryAfter 7s", refs[i].Name, err)
		}
	}
	// A subnet that cannot be read fails the nodes in it after one subnets.get, not one each.
	e.sim.Throttle(azuresim.MSubnetGet, 1, "3")
	e.sim.ResetCalls()
	_, errs = providers.DiscoverNodes(ctx, e.p, refs)
	for i, err := range errs {
		if !providers.IsThrottled(err) {
			t.Fatalf("%s with its subnet throttled: %v, want Throttled", refs[i].Name, err)
		}
	}
	if c := e.sim.CallCounts(); c[azuresim.MNICList] != 1 || c[azuresim.MSubnetGet] != 1 {
		t.Fatalf("calls %s, want one new list and one subnets.get", summary(c))
	}
	e.sim.ResetCalls()
	if _, errs := providers.DiscoverNodes(ctx, e.p, refs); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
	if c := e.sim.CallCounts(); c[azuresim.MNICList] != 0 || c[azuresim.MSubnetGet] != 1 {
		t.Fatalf("calls %s, want the list reused and the subnet read", summary(c))
	}
}

// TestCallLimits: with callLimits below ARM's own throttling (the simulator's token buckets per
// request class), no request is refused and none is retried; without them the same sequence
// draws 429s and the SDK's retries (each honouring Retry-After). Reads and mutating requests
// have a bucket each, and a caller's deadline that the wait would pass is Throttled at once,
// without a retry.
func TestCallLimits(t *testing.T) {
	ctx := context.Background()
	withLimits := func(e *env, l *providers.RateLimits) *azure.Provider {
		o := azure.ClientOptions(e.srv.URL, e.srv.Client(), false, 3)
		if l != nil {
			o.PerRetryPolicies = append(o.PerRetryPolicies, azure.CallLimitPolicy(*l))
		}
		clients, err := azure.NewClients(sub, staticToken{}, o)
		if err != nil {
			t.Fatal(err)
		}
		p, err := azure.New(ctx, azure.Type, azure.Config{ClusterName: owner.Cluster, SubscriptionID: sub, ResourceGroup: rg,
			PollFrequency: providers.Duration(10 * time.Millisecond)}, azure.WithClients(clients))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Reads: three ListOwned are six lists (NICs, public IPs) against a bucket of 2 refilled
	// at 2/s; at 1.5/s, burst 1, the bucket never empties.
	reads := func(l *providers.RateLimits) int {
		e := newEnv(t, 3)
		p := withLimits(e, l)
		if err := e.sim.SetRateLimit(azuresim.RateReads, 2, 2); err != nil {
			t.Fatal(err)
		}
		e.sim.ResetCalls()
		for range 3 {
			if _, err := p.ListOwned(ctx, owner.Cluster); err != nil {
				t.Fatal(err)
			}
		}
		c := e.sim.CallCounts()
		return c[azuresim.MNICList] + c[azuresim.MPIPList]
	}
	if n := reads(&providers.RateLimits{ReadQPS: 1.5, ReadBurst: 1}); n != 6 {
		t.Errorf("with call limits: %d list calls, want 6 (none refused)", n)
	}
	if n := reads(nil); n == 6 {
		t.Errorf("without call limits: %d list calls; the simulator's limit refused none, so this test proves nothing", n)
	}
	// Writes: three ensures are three NIC PUTs against a bucket of 1 refilled at 2/s; reads
	// are not limited on either side.
	writes := func(l *providers.RateLimits) int {
		e := newEnv(t, 3)
		p := withLimits(e, l)
		if err := e.sim.SetRateLimit(azuresim.RateWrites, 1, 2); err != nil {
			t.Fatal(err)
		}
		e.sim.ResetCalls()
		for i := range 3 {
			if _, err := p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip(fmt.Sprintf("10.240.8.%d", i+1))}); err != nil {
				t.Fatal(err)
			}
		}
		return e.sim.Calls(azuresim.MNICPut)
	}
	if n := writes(&providers.RateLimits{MutatingQPS: 1.5, MutatingBurst: 1}); n != 3 {
		t.Errorf("with call limits: %d NIC PUTs, want 3 (none refused)", n)
	}
	if n := writes(nil); n == 3 {
		t.Errorf("without call limits: %d NIC PUTs; the simulator's limit refused none, so this test proves nothing", n)
	}

	e := newEnv(t, 3)
	p := withLimits(e, &providers.RateLimits{ReadQPS: 0.001, ReadBurst: 1})
	e.sim.ResetCalls()
	// The NIC list takes the only token; subnets.get would wait past the deadline.
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var pe *providers.Error
	_, err := p.DiscoverNode(short, nodeA)
	if !providers.IsThrottled(err) || !errors.As(err, &pe) || pe.Code != "ClientRateLimit" {
		t.Fatalf("want Throttled ClientRateLimit when the call limit's wait passes the deadline, got %v", err)
	}
	if c := e.sim.CallCounts(); c[azuresim.MNICList] != 1 || total(c) != 1 {
		t.Fatalf("calls %s, want the NIC list only: the refused wait reached the simulator, or was retried", summary(c))
	}
}

// TestListDuringWriteIsNotKept: a list whose first page showed a NIC before the provider
// wrote it, and whose later pages came after, is not kept for discovery: the NIC's next
// discovery reads it (and shows the address written), instead of the list's stale copy.
func TestListDuringWriteIsNotKept(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	refs := addVMs(e, 6) // vm-00..vm-05: with vm-a, vm-b, vm-small, 9 NICs, 3 pages of 4
	e.sim.SetPageSize(4)
	if _, errs := providers.DiscoverNodes(ctx, e.p, refs); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
	e.sim.AddVM(azuresim.VMSeed{ResourceGroup: rg, Name: "vm-new", Subnet: e.sim.SubnetID(rg, "aks-vnet", "nodes"), PrimaryIP: "10.240.2.10"})
	// A VM the provider has not seen makes the next discovery list again; between its first
	// page (vm-00-nic as it was) and its second, vm-00's NIC gets an egress IP.
	e.sim.BeforeNext(azuresim.MNICList, func() {
		e.sim.BeforeNext(azuresim.MNICList, func() {
			if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: refs[0], IP: ip("10.240.9.9")}); err != nil {
				t.Error(err)
			}
		})
	})
	if _, err := e.p.DiscoverNode(ctx, node("vm-new")); err != nil {
		t.Fatal(err)
	}
	if e.sim.Calls(azuresim.MNICPut) != 1 {
		t.Fatalf("the ensure did not run during the list: calls %s", summary(e.sim.CallCounts()))
	}
	info, err := e.p.DiscoverNode(ctx, refs[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Interfaces[0].SecondaryIPs; len(got) != 1 || got[0] != ip("10.240.9.9") {
		t.Fatalf("%s after the ensure: secondaries %v, want 10.240.9.9 (the list's copy from before the write was served)", refs[0].Name, got)
	}
}

// TestNetworkRPWindow: the network resource provider's own limit (writes per window, after
// ARM's buckets; Azure's default is 1,000 per 5 minutes, scaled here to 2 per 3 s). Ensures
// past the window's writes come back Throttled with a Retry-After hint that reaches the end of
// the window, change nothing, and succeed once the
// window is over; reads are not limited, so discovery goes on meanwhile. (With SDK retries, the
// SDK waits the Retry-After itself: the 429 is seen only past its retries.)
func TestNetworkRPWindow(t *testing.T) {
	e := newEnv(t, -1) // no SDK retries: the provider's answer itself
	ctx := context.Background()
	const window = 3 * time.Second
	if err := e.sim.SetNetworkRPLimit(0, 2, window); err != nil {
		t.Fatal(err)
	}
	ips := []netip.Addr{ip("10.240.9.1"), ip("10.240.9.2"), ip("10.240.9.3")}
	for _, a := range ips[:2] {
		if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: a}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ips[2]})
	var pe *providers.Error
	if !providers.IsThrottled(err) || !errors.As(err, &pe) || pe.RetryAfter <= 0 || pe.RetryAfter > window {
		t.Fatalf("third write in the window: want Throttled with a Retry-After within %s, got %v", window, err)
	}
	if e.sim.Snapshot().PrivateIPs[ips[2].String()] != "" {
		t.Fatalf("%s placed although its write was refused", ips[2])
	}
	if _, err := e.p.DiscoverNode(ctx, nodeB); err != nil {
		t.Fatalf("reads are not limited: %v", err)
	}
	time.Sleep(pe.RetryAfter)
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ips[2]}); err != nil {
		t.Fatalf("after the Retry-After of %s: %v", pe.RetryAfter, err)
	}
	for _, a := range ips {
		if e.sim.Snapshot().PrivateIPs[a.String()] == "" {
			t.Errorf("%s not placed", a)
		}
	}
}
