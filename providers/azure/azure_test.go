package azure_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/azure"
	azuresim "github.com/egressd/egressd/test/cloudsim/azure"
)

const (
	sub = "11111111-2222-3333-4444-555555555555"
	rg  = "MC_rg_aks_westeurope"
)

var owner = providers.Owner{Cluster: "prod-1", Gateway: "gw"}

// staticToken is a fake azcore.TokenCredential.
type staticToken struct{}

func (staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "test-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

type env struct {
	sim *azuresim.Sim
	srv *httptest.Server
	p   *azure.Provider
}

func node(vm string) providers.NodeRef {
	return providers.NodeRef{Name: vm, Zone: "westeurope-1", ProviderID: "azure:///subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/Microsoft.Compute/virtualMachines/" + vm}
}

var (
	nodeA = node("vm-a")
	nodeB = node("vm-b")
	nodeS = node("vm-small")
)

const (
	poolID = "/subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/Microsoft.Network/loadBalancers/kubernetes/backendAddressPools/kubernetes"
	asgID  = "/subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/Microsoft.Network/applicationSecurityGroups/gateways"
)

func newEnv(t *testing.T, maxRetries int32) *env {
	t.Helper()
	sim := azuresim.New(sub, "westeurope")
	subnet := sim.SubnetID(rg, "aks-vnet", "nodes")
	if err := sim.AddSubnet(azuresim.SubnetSeed{ResourceGroup: rg, VNet: "aks-vnet", Name: "nodes", CIDR: "10.240.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	sim.AddVM(azuresim.VMSeed{ResourceGroup: rg, Name: "vm-a", Subnet: subnet, PrimaryIP: "10.240.0.4", BackendPools: []string{poolID}, ASGs: []string{asgID}})
	sim.AddVM(azuresim.VMSeed{ResourceGroup: rg, Name: "vm-b", Subnet: subnet, PrimaryIP: "10.240.0.5", BackendPools: []string{poolID}, ASGs: []string{asgID}})
	sim.AddVM(azuresim.VMSeed{ResourceGroup: rg, Name: "vm-small", Subnet: subnet, PrimaryIP: "10.240.0.6", MaxIPConfigurations: 2})
	sim.SetIMDS(azuresim.IMDSSeed{SubscriptionID: sub, ResourceGroupName: rg, Location: "westeurope", Name: "controller"})
	srv := httptest.NewTLSServer(sim.Handler())
	t.Cleanup(srv.Close)
	clients, err := azure.NewClients(sub, staticToken{}, azure.ClientOptions(srv.URL, srv.Client(), false, maxRetries))
	if err != nil {
		t.Fatal(err)
	}
	p, err := azure.New(context.Background(), azure.Type, azure.Config{ClusterName: owner.Cluster, SubscriptionID: sub, ResourceGroup: rg,
		PollFrequency: providers.Duration(10 * time.Millisecond)}, azure.WithClients(clients))
	if err != nil {
		t.Fatal(err)
	}
	return &env{sim: sim, srv: srv, p: p}
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func mutating(c map[string]int) int {
	return c[azuresim.MNICPut] + c[azuresim.MPIPPut] + c[azuresim.MPIPDelete]
}

func total(c map[string]int) int {
	n := 0
	for k, v := range c {
		if k != azuresim.MIMDS {
			n += v
		}
	}
	return n
}

// preserved checks the primary ipConfiguration of the VM's NIC still has its pool and ASG,
// and that egressd's ipConfigurations carry the ASG but no pool.
func preserved(t *testing.T, e *env, vm string) {
	t.Helper()
	for _, c := range e.sim.IPConfigurations(e.sim.NICID(rg, vm+"-nic")) {
		p := c["properties"].(map[string]any)
		pools, _ := p["loadBalancerBackendAddressPools"].([]any)
		asgs, _ := p["applicationSecurityGroups"].([]any)
		if prim, _ := p["primary"].(bool); prim {
			if len(pools) != 1 || len(asgs) != 1 {
				t.Fatalf("%s primary ipConfiguration lost its pool or ASG: %v", vm, p)
			}
			continue
		}
		if len(pools) != 0 || len(asgs) != 1 {
			t.Fatalf("%s egress ipConfiguration %v: want the ASG and no pool", vm, p)
		}
	}
}

func TestEnsureIdempotent(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	req := providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.1.10")}
	a1, err := e.p.EnsureIP(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	e.sim.ResetCalls()
	a2, err := e.p.EnsureIP(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if *a1 != *a2 {
		t.Fatalf("%+v vs %+v", a1, a2)
	}
	if c := e.sim.CallCounts(); mutating(c) != 0 || total(c) != 1 {
		t.Fatalf("second ensure calls %v, want one NIC get", c)
	}
	if got := e.sim.Snapshot().PrivateIPs["10.240.1.10"]; !strings.HasPrefix(got, "vm-a-nic/egressd-") {
		t.Fatalf("holder %q", got)
	}
	if a1.InterfaceMAC == "" || a1.InstanceID == "" || a1.Subnet == "" {
		t.Fatalf("assignment %+v", a1)
	}
	preserved(t, e, "vm-a")
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: ip("10.240.1.10")}); !providers.IsConflict(err) {
		t.Fatalf("held elsewhere: want Conflict, got %v", err)
	}
}

func TestCapacityExhausted(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeS, IP: ip("10.240.2.1")}); err != nil {
		t.Fatal(err)
	}
	_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeS, IP: ip("10.240.2.2")})
	if !providers.IsCapacityExhausted(err) {
		t.Fatalf("want CapacityExhausted, got %v", err)
	}
}

func TestMoveKeepsIPPublicIPPoolsAndASGs(t *testing.T) {
	e := newEnv(t, 3)
	e.sim.SetOperationDelay(20 * time.Millisecond)
	ctx := context.Background()
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.3.1"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if !a.PublicIP.IsValid() {
		t.Fatalf("no public IP: %+v", a)
	}
	m, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *a, To: nodeB})
	if err != nil {
		t.Fatal(err)
	}
	if m.IP != a.IP || m.PublicIP != a.PublicIP || m.Node != "vm-b" {
		t.Fatalf("moved %+v from %+v", m, a)
	}
	st := e.sim.Snapshot()
	if !strings.HasPrefix(st.PrivateIPs["10.240.3.1"], "vm-b-nic/") || st.PublicIPs[a.PublicIP.String()] != "10.240.3.1" || len(st.PublicIPs) != 1 {
		t.Fatalf("state %+v", st)
	}
	preserved(t, e, "vm-a")
	preserved(t, e, "vm-b")
	e.sim.ResetCalls()
	if _, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *m, To: nodeB}); err != nil {
		t.Fatal(err)
	}
	if c := e.sim.CallCounts(); mutating(c) != 0 {
		t.Fatalf("idempotent move mutated: %v", c)
	}
	w := window(e.sim.Events(), "10.240.3.1")
	t.Logf("move window (simulator, 20ms operations): %v; provider-observed %v", w, e.p.LastMoveWindow().Window)
	if w <= 0 || w > time.Second {
		t.Fatalf("implausible window %v", w)
	}
}

func window(ev []azuresim.Event, ip string) time.Duration {
	var rm time.Time
	var w time.Duration
	for _, e := range ev {
		if e.IP == ip && e.Kind == "ip-" {
			rm = e.At
		}
		if e.IP == ip && e.Kind == "ip+" && !rm.IsZero() {
			w = e.At.Sub(rm)
		}
	}
	return w
}

func TestReleaseTwice(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.4.1"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *a}); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
	}
	st := e.sim.Snapshot()
	if len(st.PrivateIPs) != 0 || len(st.PublicIPs) != 0 {
		t.Fatalf("left behind: %+v", st)
	}
	preserved(t, e, "vm-a")
}

func TestListOwnedExcludesForeign(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.5.1"), Public: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: providers.Owner{Cluster: "prod-2", Gateway: "gw"}, Node: nodeB, IP: ip("10.240.5.2"), Public: true}); err != nil {
		t.Fatal(err)
	}
	e.sim.PutPublicIP(rg, "someone-elses", "20.99.0.1", nil)
	owned, err := e.p.ListOwned(ctx, owner.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range owned {
		got = append(got, fmt.Sprintf("%s %s %s", r.Kind, r.IP, r.InstanceID[strings.LastIndex(r.InstanceID, "/")+1:]))
	}
	sort.Strings(got)
	if len(got) != 2 || got[0] != "PrivateIP 10.240.5.1 vm-a" || !strings.HasPrefix(got[1], "PublicIP 20.") {
		t.Fatalf("owned %q", got)
	}
	for _, r := range owned {
		if err := e.p.ReleaseOwned(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := e.p.ReleaseOwned(ctx, r); err != nil {
			t.Fatalf("second ReleaseOwned: %v", err)
		}
	}
	st := e.sim.Snapshot()
	if len(st.PrivateIPs) != 1 || len(st.PublicIPs) != 2 || st.PublicIPs["20.99.0.1"] != "" {
		t.Fatalf("GC touched foreign resources: %+v", st)
	}
	err = e.p.ReleaseOwned(ctx, providers.OwnedResource{Kind: providers.ResourcePublicIP, ID: "/subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/Microsoft.Network/publicIPAddresses/someone-elses", Owner: owner})
	if !providers.IsPermission(err) {
		t.Fatalf("want Permission, got %v", err)
	}
}

func TestThrottlingRetryAfterHonouredThenTyped(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	e.sim.Throttle(azuresim.MNICGet, 1, "1")
	start := time.Now()
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.6.1")}); err != nil {
		t.Fatal(err)
	}
	waited := time.Since(start)
	t.Logf("ensure with one 429 Retry-After: 1 took %v", waited)
	if waited < time.Second {
		t.Fatalf("Retry-After not honoured: %v", waited)
	}
	e.sim.Throttle(azuresim.MNICGet, 10, "0")
	_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.6.2")})
	if !providers.IsThrottled(err) {
		t.Fatalf("want Throttled, got %v", err)
	}
}

func TestServerErrorAfterApplyNoDuplicate(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	e.sim.FailNext(azuresim.MPIPPut, 1, http.StatusInternalServerError, true)
	e.sim.FailNext(azuresim.MNICPut, 1, http.StatusServiceUnavailable, true)
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.7.1"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	st := e.sim.Snapshot()
	if len(st.PublicIPs) != 1 || st.PublicIPs[a.PublicIP.String()] != "10.240.7.1" || st.IPConfigCount["vm-a-nic"] != 2 {
		t.Fatalf("duplicates or missing: %+v", st)
	}
}

func TestLROFailureIsError(t *testing.T) {
	e := newEnv(t, 3)
	e.sim.SetOperationDelay(10 * time.Millisecond)
	ctx := context.Background()
	e.sim.FailNextOperation(azuresim.MNICPut, azuresim.OpFailure{Code: "InternalServerError", Message: "An error occurred."})
	_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.8.1")})
	if err == nil || !strings.Contains(err.Error(), "InternalServerError") {
		t.Fatalf("want the operation's error, got %v", err)
	}
	if e.sim.Snapshot().PrivateIPs["10.240.8.1"] != "" {
		t.Fatal("a failed operation applied")
	}
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.8.1")}); err != nil {
		t.Fatal(err)
	}
}

func TestDiscoverNodeAndIMDS(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	info, err := e.p.DiscoverNode(ctx, nodeA)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Interfaces) != 1 || info.Interfaces[0].PrimaryIP != ip("10.240.0.4") || info.Interfaces[0].MAC == "" ||
		info.Subnets[0].CIDR != netip.MustParsePrefix("10.240.0.0/16") || info.Capacity.FreeIPSlots != 255 {
		t.Fatalf("info %+v", info)
	}
	if _, err := e.p.DiscoverNode(ctx, node("vm-gone")); !providers.IsNotFound(err) {
		t.Fatalf("want NotFound, got %v", err)
	}
	vmss := providers.NodeRef{Name: "aks-np-0", ProviderID: "azure:///subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/Microsoft.Compute/virtualMachineScaleSets/aks-np/virtualMachines/0"}
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: vmss, IP: ip("10.240.9.1")}); !providers.IsCapacityExhausted(err) {
		t.Fatalf("VMSS: want CapacityExhausted, got %v", err)
	}
	c, err := azure.IMDS{Endpoint: e.srv.URL, Client: e.srv.Client()}.Compute(ctx)
	if err != nil || c.SubscriptionID != sub || c.ResourceGroupName != rg {
		t.Fatalf("IMDS %+v %v", c, err)
	}
}
