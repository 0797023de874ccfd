package azure_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/azure"
	azuresim "github.com/egressd/egressd/test/cloudsim/azure"
)

// Tests against the simulator's strict ARM behaviours (docs/testbed.md, "Azure").

const pool2 = "/subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/Microsoft.Network/loadBalancers/kubernetes-internal/backendAddressPools/kubernetes"

// pools returns the backend pools of the NIC's primary ipConfiguration.
func pools(e *env, vm string) []string {
	var out []string
	for _, c := range e.sim.IPConfigurations(e.sim.NICID(rg, vm+"-nic")) {
		p := c["properties"].(map[string]any)
		if prim, _ := p["primary"].(bool); !prim {
			continue
		}
		ps, _ := p["loadBalancerBackendAddressPools"].([]any)
		for _, x := range ps {
			out = append(out, x.(map[string]any)["id"].(string))
		}
	}
	return out
}

func hasPool(e *env, vm, pool string) bool {
	for _, p := range pools(e, vm) {
		if strings.EqualFold(p, pool) {
			return true
		}
	}
	return false
}

// TestConcurrentNICChangeIsKept: cloud-provider-azure adds the node to a second pool between
// the provider's NIC read and its PUT. The provider's If-Match fails with 412; it re-reads,
// re-applies its change, and both changes are on the NIC. Without If-Match the PUT of the NIC
// as first read would drop the pool.
func TestConcurrentNICChangeIsKept(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		vm    string // whose NIC is changed concurrently
		skip  int    // NIC PUTs let through before the change
		setup func(e *env) *providers.Assignment
		run   func(e *env, a *providers.Assignment) error
		check func(e *env) bool
	}{
		{name: "ensure", vm: "vm-a",
			run: func(e *env, _ *providers.Assignment) error {
				_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.30.1")})
				return err
			},
			check: func(e *env) bool { return strings.HasPrefix(e.sim.Snapshot().PrivateIPs["10.240.30.1"], "vm-a-nic/") }},
		{name: "release", vm: "vm-a",
			setup: func(e *env) *providers.Assignment {
				a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.30.2")})
				if err != nil {
					t.Fatal(err)
				}
				return a
			},
			run: func(e *env, a *providers.Assignment) error {
				return e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *a})
			},
			check: func(e *env) bool { return e.sim.Snapshot().PrivateIPs["10.240.30.2"] == "" }},
		{name: "move, target changed after the provider read it", vm: "vm-b", skip: 1,
			setup: func(e *env) *providers.Assignment {
				a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.30.3"), Public: true})
				if err != nil {
					t.Fatal(err)
				}
				return a
			},
			run: func(e *env, a *providers.Assignment) error {
				m, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *a, To: nodeB})
				if err == nil && (m.Node != "vm-b" || m.PublicIP != a.PublicIP) {
					err = errors.New("moved to the wrong place")
				}
				return err
			},
			check: func(e *env) bool {
				st := e.sim.Snapshot()
				return strings.HasPrefix(st.PrivateIPs["10.240.30.3"], "vm-b-nic/") && st.PublicIPs[firstPublic(st)] == "10.240.30.3"
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 3)
			var a *providers.Assignment
			if tc.setup != nil {
				a = tc.setup(e)
			}
			for range tc.skip {
				e.sim.BeforeNext(azuresim.MNICPut, func() {})
			}
			var changeErr error
			e.sim.BeforeNext(azuresim.MNICPut, func() { changeErr = e.sim.AddBackendPool(e.sim.NICID(rg, tc.vm+"-nic"), pool2) })
			e.sim.ResetCalls()
			if err := tc.run(e, a); err != nil {
				t.Fatal(err)
			}
			if changeErr != nil {
				t.Fatal(changeErr)
			}
			c := e.sim.CallCounts()
			t.Logf("calls with one concurrent change: %s", summary(c))
			if !hasPool(e, tc.vm, pool2) || !hasPool(e, tc.vm, poolID) {
				t.Fatalf("the concurrent change was overwritten: pools %v", pools(e, tc.vm))
			}
			if !tc.check(e) {
				t.Fatalf("the provider's own change is missing: %+v", e.sim.Snapshot())
			}
			if tc.vm != "vm-a" {
				preserved(t, e, "vm-a") // it has one pool; the changed NIC has two, checked above
			}
		})
	}
}

func firstPublic(st azuresim.State) string {
	for p := range st.PublicIPs {
		return p
	}
	return ""
}

// TestAnotherOperationInProgressIsWaitedOut: another writer's operation on the NIC runs when
// the provider PUTs (409 AnotherOperationInProgress). The provider waits, re-reads and writes
// on top of the other change.
func TestAnotherOperationInProgressIsWaitedOut(t *testing.T) {
	e := newEnv(t, 3)
	e.sim.SetOperationDelay(100 * time.Millisecond)
	ctx := context.Background()
	var changeErr error
	e.sim.BeforeNext(azuresim.MNICPut, func() { changeErr = e.sim.AddBackendPool(e.sim.NICID(rg, "vm-a-nic"), pool2) })
	e.sim.ResetCalls()
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.31.1")}); err != nil {
		t.Fatal(err)
	}
	if changeErr != nil {
		t.Fatal(changeErr)
	}
	t.Logf("calls: %s", summary(e.sim.CallCounts()))
	if !hasPool(e, "vm-a", pool2) || !strings.HasPrefix(e.sim.Snapshot().PrivateIPs["10.240.31.1"], "vm-a-nic/") {
		t.Fatalf("pools %v, state %+v", pools(e, "vm-a"), e.sim.Snapshot())
	}
	if st := e.sim.ProvisioningState(e.sim.NICID(rg, "vm-a-nic")); st != "Succeeded" {
		t.Fatalf("returned with the NIC %s", st)
	}
}

// TestUpdatingIsNotDone: the NIC shows the cluster's ipConfiguration while an operation that
// will fail is still Updating it (an earlier write whose wait was cut short). The provider must
// not report the address held until the NIC is Succeeded; here the operation fails, the NIC
// goes back to its previous content, and the provider writes the ipConfiguration again.
func TestUpdatingIsNotDone(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	addr := ip("10.240.32.1")
	// The cluster's ipConfiguration name, from an ensure on another NIC (names do not depend
	// on the NIC).
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: addr})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *a}); err != nil {
		t.Fatal(err)
	}
	nic := e.sim.NICID(rg, "vm-a-nic")
	e.sim.SetOperationDelay(300 * time.Millisecond)
	e.sim.FailNextOperation(azuresim.MNICPut, azuresim.OpFailure{Code: "InternalServerError", Message: "An error occurred."})
	if err := e.sim.ChangeNIC(nic, func(n map[string]any) {
		p := n["properties"].(map[string]any)
		prim := p["ipConfigurations"].([]any)[0].(map[string]any)
		p["ipConfigurations"] = append(p["ipConfigurations"].([]any), map[string]any{"name": a.Attachment, "properties": map[string]any{
			"primary": false, "privateIPAddress": addr.String(), "privateIPAllocationMethod": "Static",
			"subnet": prim["properties"].(map[string]any)["subnet"]}})
	}); err != nil {
		t.Fatal(err)
	}
	got, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: addr})
	if err != nil {
		t.Fatal(err)
	}
	if st := e.sim.ProvisioningState(nic); st != "Succeeded" {
		t.Fatalf("EnsureIP returned %+v while the NIC is %s", got, st)
	}
	if h := e.sim.Snapshot().PrivateIPs[addr.String()]; !strings.HasPrefix(h, "vm-a-nic/") {
		t.Fatalf("after the failed operation the address is on %q, not on vm-a", h)
	}
}

// TestErrorsClassifiedByCode: ARM's 404 codes come through as NotFound with the code, whatever
// the message says.
func TestErrorsClassifiedByCode(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	var pe *providers.Error
	_, err := e.p.DiscoverNode(ctx, providers.NodeRef{Name: "x", ProviderID: "azure:///subscriptions/" + sub + "/resourceGroups/gone/providers/Microsoft.Compute/virtualMachines/x"})
	if !providers.IsNotFound(err) || !errors.As(err, &pe) || pe.Code != "ResourceGroupNotFound" {
		t.Fatalf("node in an unknown resource group: %v", err)
	}
	clients, err := azure.NewClients(sub, staticToken{}, azure.ClientOptions(e.srv.URL, e.srv.Client(), false, 0))
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := azure.New(ctx, azure.Type, azure.Config{ClusterName: owner.Cluster, SubscriptionID: sub, ResourceGroup: "gone"}, azure.WithClients(clients))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.ListOwned(ctx, ""); !providers.IsNotFound(err) || !errors.As(err, &pe) || pe.Code != "ResourceGroupNotFound" {
		t.Fatalf("listing an unknown resource group: %v", err)
	}
}

// TestListsFollowNextLink: with one item per page every list the provider calls (NICs for
// discovery, holder lookup and GC; public IPs for GC) spans several pages.
func TestListsFollowNextLink(t *testing.T) {
	e := newEnv(t, 3)
	e.sim.SetPageSize(1)
	ctx := context.Background()
	e.sim.ResetCalls()
	info, err := e.p.DiscoverNode(ctx, nodeS) // the last of three NICs
	if err != nil {
		t.Fatal(err)
	}
	if info.Interfaces[0].PrimaryIP != ip("10.240.0.6") {
		t.Fatalf("discovered %+v", info.Interfaces[0])
	}
	if n := e.sim.Calls(azuresim.MNICList); n != 3 {
		t.Fatalf("NIC list pages read for discovery: %d, want 3", n)
	}
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.33.1"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: ip("10.240.33.2"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	e.sim.ResetCalls()
	owned, err := e.p.ListOwned(ctx, owner.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[providers.ResourceKind]int{}
	for _, r := range owned {
		kinds[r.Kind]++
	}
	if kinds[providers.ResourcePrivateIP] != 2 || kinds[providers.ResourcePublicIP] != 2 {
		t.Fatalf("owned %+v", owned)
	}
	if c := e.sim.CallCounts(); c[azuresim.MNICList] != 3 || c[azuresim.MPIPList] != 2 {
		t.Fatalf("GC list pages: %s, want 3 NIC pages and 2 public IP pages", summary(c))
	}
	// A release that does not know the holder lists NICs until it finds it (the second page).
	cur := *b
	cur.InterfaceID = ""
	if err := e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: cur}); err != nil {
		t.Fatal(err)
	}
	st := e.sim.Snapshot()
	if st.PrivateIPs["10.240.33.2"] != "" || st.PrivateIPs["10.240.33.1"] == "" || len(st.PublicIPs) != 1 || st.PublicIPs[a.PublicIP.String()] != "10.240.33.1" {
		t.Fatalf("after release: %+v", st)
	}
}

// TestPublicIPUpdatingIsWaitedFor: an ensure whose wait for the public IP's creation was cut
// short leaves it Updating; the next ensure must not associate it until it is Succeeded (ARM
// answers RetryableError; the SDK's own retries are off here so the provider has to wait).
func TestPublicIPUpdatingIsWaitedFor(t *testing.T) {
	e := newEnv(t, -1)
	e.sim.SetOperationDelay(300 * time.Millisecond)
	req := providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.34.1"), Public: true}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := e.p.EnsureIP(short, req)
	cancel()
	if err == nil {
		t.Fatal("ensure finished within 50 ms of 300 ms operations")
	}
	a, err := e.p.EnsureIP(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	st := e.sim.Snapshot()
	if !a.PublicIP.IsValid() || st.PublicIPs[a.PublicIP.String()] != "10.240.34.1" || len(st.PublicIPs) != 1 {
		t.Fatalf("assignment %+v, state %+v", a, st)
	}
	if ps := e.sim.ProvisioningState(a.PublicAllocation); ps != "Succeeded" {
		t.Fatalf("public IP %s", ps)
	}
}

// TestOperationFailedAnotherOperationInProgressIsRetried: ARM can also accept the PUT and fail
// its operation with AnotherOperationInProgress (a dependent resource was busy). The NIC keeps
// its previous content, and the provider writes again after a wait.
func TestOperationFailedAnotherOperationInProgressIsRetried(t *testing.T) {
	e := newEnv(t, 3)
	e.sim.SetOperationDelay(20 * time.Millisecond)
	e.sim.FailNextOperation(azuresim.MNICPut, azuresim.OpFailure{Code: "AnotherOperationInProgress", Message: "Another operation on this or dependent resource is in progress."})
	e.sim.ResetCalls()
	if _, err := e.p.EnsureIP(context.Background(), providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.35.1")}); err != nil {
		t.Fatal(err)
	}
	if e.sim.Calls(azuresim.MNICPut) != 2 || !strings.HasPrefix(e.sim.Snapshot().PrivateIPs["10.240.35.1"], "vm-a-nic/") {
		t.Fatalf("calls %s, state %+v", summary(e.sim.CallCounts()), e.sim.Snapshot())
	}
}

// TestFailedIsWrittenAgain: an operation that failed but left the NIC (and the public IP)
// showing the write's content, provisioningState Failed. The address is not held until a write
// succeeds, so the next ensure writes both again instead of reporting them held.
func TestFailedIsWrittenAgain(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	req := providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.36.1"), Public: true}
	keep := azuresim.OpFailure{Code: "InternalServerError", Message: "An error occurred.", KeepContent: true}
	e.sim.FailNextOperation(azuresim.MPIPPut, keep)
	if _, err := e.p.EnsureIP(ctx, req); err == nil {
		t.Fatal("the public IP's operation failed, the ensure did not")
	}
	e.sim.FailNextOperation(azuresim.MNICPut, keep)
	if _, err := e.p.EnsureIP(ctx, req); err == nil {
		t.Fatal("the NIC's operation failed, the ensure did not")
	}
	nic := e.sim.NICID(rg, "vm-a-nic")
	if st := e.sim.ProvisioningState(nic); st != "Failed" {
		t.Fatalf("NIC %s after the failed operation", st)
	}
	a, err := e.p.EnsureIP(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if st, pst := e.sim.ProvisioningState(nic), e.sim.ProvisioningState(a.PublicAllocation); st != "Succeeded" || pst != "Succeeded" {
		t.Fatalf("ensure returned with the NIC %s and the public IP %s", st, pst)
	}
}

// TestReleaseWaitsForThePublicIPsOperation: a release right after an ensure whose wait was cut
// short finds the public IP still Updating; a DELETE then would answer 409.
func TestReleaseWaitsForThePublicIPsOperation(t *testing.T) {
	e := newEnv(t, 3)
	e.sim.SetOperationDelay(300 * time.Millisecond)
	req := providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.37.1"), Public: true}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := e.p.EnsureIP(short, req)
	cancel()
	if err == nil {
		t.Fatal("ensure finished within 50 ms of 300 ms operations")
	}
	if err := e.p.ReleaseIP(context.Background(), providers.ReleaseRequest{Owner: owner, Current: providers.Assignment{IP: req.IP, Node: nodeA.Name}}); err != nil {
		t.Fatal(err)
	}
	if st := e.sim.Snapshot(); len(st.PublicIPs) != 0 || len(st.PrivateIPs) != 0 {
		t.Fatalf("left behind: %+v", st)
	}
}
