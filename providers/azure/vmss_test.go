package azure_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/azure"
	azuresim "github.com/egressd/egressd/test/cloudsim/azure"
)

const scaleSet = "aks-nodepool1-12345678-vmss"

// instance is a node of AKS's default node pool: a Uniform scale-set instance.
func instance(id string) providers.NodeRef {
	return providers.NodeRef{Name: scaleSet + "00000" + id, Zone: "westeurope-1",
		ProviderID: "azure:///subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/Microsoft.Compute/virtualMachineScaleSets/" + scaleSet + "/virtualMachines/" + id}
}

func instanceID(id string) string { return strings.TrimPrefix(instance(id).ProviderID, "azure://") }

func code(err error) string {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// uniformEnv is newEnv with a Uniform scale set of n instances and the provider configured with
// prefixLength (0: the default).
func uniformEnv(t *testing.T, n, prefixLength int) *env {
	t.Helper()
	e := newEnv(t, 3)
	var seed []azuresim.ScaleSetInstanceSeed
	for i := range n {
		seed = append(seed, azuresim.ScaleSetInstanceSeed{ID: fmt.Sprint(i), PrimaryIP: fmt.Sprintf("10.240.0.%d", 10+i)})
	}
	e.sim.AddScaleSet(azuresim.ScaleSetSeed{ResourceGroup: rg, Name: scaleSet, Subnet: e.sim.SubnetID(rg, "aks-vnet", "nodes"), Instances: seed})
	if prefixLength != 0 {
		clients, err := azure.NewClients(sub, staticToken{}, azure.ClientOptions(e.srv.URL, e.srv.Client(), false, 3))
		if err != nil {
			t.Fatal(err)
		}
		if e.p, err = azure.New(context.Background(), azure.Type, azure.Config{ClusterName: owner.Cluster, SubscriptionID: sub, ResourceGroup: rg,
			PollFrequency: providers.Duration(10 * time.Millisecond), PublicIPPrefixLength: prefixLength}, azure.WithClients(clients)); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func uniformMutating(c map[string]int) int {
	return mutating(c) + c[azuresim.MInstancePut] + c[azuresim.MPrefixPut] + c[azuresim.MPrefixDelete]
}

// held is the cloud's view of the egress ipConfigurations of the scale set's instances.
func held(e *env) map[string]azuresim.ScaleSetIPConfig {
	out := map[string]azuresim.ScaleSetIPConfig{}
	for _, c := range e.sim.ScaleSetIPConfigs() {
		out[c.Name] = c
	}
	return out
}

// TestUniformPublicEgress: on Uniform scale-set instances (AKS's default pools), a public egress
// IP is an ipConfiguration of the instance's model whose public IP is drawn from the gateway's
// prefix for its zone, written with the compute API (instance PUT with If-Match, its
// operation polled) and read back through the network resource provider: the assignment
// reports the public IP, the Dynamic private address the cloud translates it from
// (PublicNATSource) and that the egress IP itself is not held. Ensure is idempotent (two reads,
// no write), a move is break before make (with a /31 prefix full, the moved address gets the
// freed public IP back), release removes the ipConfiguration and deletes the prefix with the
// gateway's last address in the zone, not before. Before Uniform support every call here
// answered CapacityExhausted UniformScaleSetInstance.
func TestUniformPublicEgress(t *testing.T) {
	e := uniformEnv(t, 3, 31)
	ctx := context.Background()
	e.sim.ResetCalls()
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: instance("0"), IP: ip("10.240.30.1"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	first := e.sim.CallCounts()
	t.Logf("Uniform EnsureIP (first, prefix created): %d mutating, %d calls: %s", uniformMutating(first), total(first), summary(first))
	if first[azuresim.MPrefixPut] != 1 || first[azuresim.MInstancePut] != 1 || uniformMutating(first) != 2 {
		t.Errorf("first ensure: want one prefix PUT and one instance PUT, got %s", summary(first))
	}
	h := held(e)[a.Attachment]
	if !a.PrivateAddressNotHeld || a.PublicNATSource.String() != h.PrivateIP || a.PublicIP.String() != h.PublicIP || a.IP != ip("10.240.30.1") {
		t.Fatalf("assignment %+v, cloud %+v", a, h)
	}
	pfx, ok := e.sim.Prefixes()[a.PublicAllocation]
	if !ok || !netip.MustParsePrefix(pfx).Contains(a.PublicIP) || h.Prefix != a.PublicAllocation {
		t.Fatalf("public IP %s not from the assignment's prefix %s (%q); cloud %+v", a.PublicIP, a.PublicAllocation, pfx, h)
	}
	if !strings.Contains(a.InterfaceID, "/virtualMachineScaleSets/"+scaleSet+"/virtualMachines/0/networkInterfaces/") || a.Node != instance("0").Name {
		t.Fatalf("assignment names %s on %s", a.InterfaceID, a.Node)
	}

	e.sim.ResetCalls()
	again, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: instance("0"), IP: ip("10.240.30.1"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	steady := e.sim.CallCounts()
	t.Logf("Uniform EnsureIP (held): %d mutating, %d calls: %s", uniformMutating(steady), total(steady), summary(steady))
	if *again != *a || uniformMutating(steady) != 0 || total(steady) != 2 {
		t.Fatalf("second ensure: %+v (was %+v), calls %s; want the same, two reads", again, a, summary(steady))
	}

	// A second address of the gateway and zone fills the /31.
	e.sim.ResetCalls()
	b, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: instance("1"), IP: ip("10.240.30.2"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	second := e.sim.CallCounts()
	t.Logf("Uniform EnsureIP (prefix exists): %d mutating, %d calls: %s", uniformMutating(second), total(second), summary(second))
	if b.PublicAllocation != a.PublicAllocation || b.PublicIP == a.PublicIP {
		t.Fatalf("second address %+v: want the same prefix, another public IP than %s", b, a.PublicIP)
	}
	e.sim.ResetCalls()
	moved, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *a, To: instance("2")})
	if err != nil {
		t.Fatal(err)
	}
	mv := e.sim.CallCounts()
	t.Logf("Uniform MoveIP: %d mutating, %d calls: %s; window %v", uniformMutating(mv), total(mv), summary(mv), e.p.LastMoveWindow().Window)
	if mv[azuresim.MInstancePut] != 2 || uniformMutating(mv) != 2 {
		t.Errorf("move: want two instance PUTs, got %s", summary(mv))
	}
	if moved.Node != instance("2").Name || moved.PublicIP != a.PublicIP || moved.IP != a.IP || moved.PublicNATSource == a.PublicNATSource && moved.InterfaceID == a.InterfaceID {
		t.Fatalf("moved %+v, was %+v: want instance 2 with the freed public IP", moved, a)
	}
	if c, ok := held(e)[a.Attachment]; !ok || c.Instance != instanceID("2") || c.PublicIP != a.PublicIP.String() {
		t.Fatalf("after the move the cloud shows %+v", c)
	}
	e.sim.ResetCalls()
	if _, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *moved, To: instance("2")}); err != nil || uniformMutating(e.sim.CallCounts()) != 0 {
		t.Fatalf("moving again where it is: %v, calls %s", err, summary(e.sim.CallCounts()))
	}

	e.sim.ResetCalls()
	if err := e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *moved}); err != nil {
		t.Fatal(err)
	}
	rel := e.sim.CallCounts()
	t.Logf("Uniform ReleaseIP (prefix kept): %d mutating, %d calls: %s", uniformMutating(rel), total(rel), summary(rel))
	if _, ok := held(e)[a.Attachment]; ok || len(e.sim.Prefixes()) != 1 {
		t.Fatalf("after releasing one of two: ipConfigurations %v, prefixes %v (want the prefix kept)", held(e), e.sim.Prefixes())
	}
	e.sim.ResetCalls()
	for range 2 {
		if err := e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *b}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("Uniform ReleaseIP of the last address, twice (prefix deleted): %s", summary(e.sim.CallCounts()))
	if len(held(e)) != 0 || len(e.sim.Prefixes()) != 0 {
		t.Fatalf("after releasing both: ipConfigurations %v, prefixes %v", held(e), e.sim.Prefixes())
	}
}

// TestUniformPrivateRefused: a private egress IP (no cloud.public) cannot be held by a Uniform
// instance; the ensure and a move there are refused before any call with what works instead,
// and the holder keeps the address. Discovery describes the instances (one read of their NICs)
// and answers NotFound for a missing instance or resource group.
func TestUniformPrivateRefused(t *testing.T) {
	e := uniformEnv(t, 2, 0)
	ctx := context.Background()
	e.sim.ResetCalls()
	info, err := e.p.DiscoverNode(ctx, instance("0"))
	if err != nil {
		t.Fatal(err)
	}
	if c := e.sim.CallCounts(); c[azuresim.MScaleSetNICList] != 1 || info.Interfaces[0].PrimaryIP != ip("10.240.0.10") || info.Capacity.FreeIPSlots < 1 || len(info.Subnets) != 1 {
		t.Fatalf("discovering a Uniform instance: %+v, calls %s", info, summary(c))
	}
	if _, err := e.p.DiscoverNode(ctx, instance("7")); !providers.IsNotFound(err) {
		t.Fatalf("discovering a missing instance: want NotFound, got %v", err)
	}
	gone := instance("0")
	gone.ProviderID = strings.Replace(gone.ProviderID, rg, "MC_gone", 1)
	if _, err := e.p.DiscoverNode(ctx, gone); !providers.IsNotFound(err) || code(err) != "ResourceGroupNotFound" {
		t.Fatalf("discovering an instance of a missing resource group: want NotFound ResourceGroupNotFound, got %v", err)
	}

	vmHeld, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.30.1")})
	if err != nil {
		t.Fatal(err)
	}
	e.sim.ResetCalls()
	_, err = e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: instance("1"), IP: ip("10.240.30.2")})
	if !providers.IsCapacityExhausted(err) || code(err) != "UniformScaleSetInstance" || !strings.Contains(err.Error(), "cloud.public") || !strings.Contains(err.Error(), "VirtualMachines") {
		t.Fatalf("private ensure on a Uniform instance: %v", err)
	}
	if _, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: providers.Assignment{IP: ip("10.240.30.9")}, To: instance("1")}); code(err) != "UniformScaleSetInstance" {
		t.Fatalf("private move to a Uniform instance: %v", err)
	}
	if _, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *vmHeld, To: instance("1")}); code(err) != "UniformScaleSetInstance" {
		t.Fatalf("move of a private VM address to a Uniform instance: %v", err)
	}
	if c := e.sim.CallCounts(); total(c) != 0 {
		t.Fatalf("refused ensure and moves made calls: %s", summary(c))
	}
	if h, ok := e.sim.Snapshot().PrivateIPs["10.240.30.1"]; !ok || h != "vm-a-nic/"+vmHeld.Attachment {
		t.Fatalf("after the refused move 10.240.30.1 is on %q", h)
	}
}

// TestUniformInstancesBatched: several instances of one Uniform scale set are discovered with
// one list of the scale set's NICs (every page: 5 instances in pages of 2), not one list per
// instance; an instance the list does not show is NotFound, the instances of a scale set that
// does not exist are NotFound ResourceNotFound.
func TestUniformInstancesBatched(t *testing.T) {
	e := uniformEnv(t, 5, 0)
	ctx := context.Background()
	var refs []providers.NodeRef
	for i := range 5 {
		refs = append(refs, instance(fmt.Sprint(i)))
	}
	e.sim.SetPageSize(2)
	other := func(id string) providers.NodeRef {
		n := instance(id)
		n.ProviderID = strings.Replace(n.ProviderID, scaleSet, "gone-vmss", 1)
		return n
	}
	asked := append(append([]providers.NodeRef{}, refs...), instance("9"), other("0"), other("1"))
	e.sim.ResetCalls()
	infos, errs := providers.DiscoverNodes(ctx, e.p, asked)
	for i := range refs {
		if errs[i] != nil || infos[i].Interfaces[0].PrimaryIP != ip(fmt.Sprintf("10.240.0.%d", 10+i)) {
			t.Errorf("%s: %+v, %v", asked[i].Name, infos[i], errs[i])
		}
	}
	if !providers.IsNotFound(errs[5]) {
		t.Errorf("instance 9, which the list does not show: %v, want NotFound", errs[5])
	}
	if !providers.IsNotFound(errs[6]) || !providers.IsNotFound(errs[7]) || code(errs[6]) != "ResourceNotFound" {
		t.Errorf("instances of a missing scale set: %v, %v; want NotFound ResourceNotFound", errs[6], errs[7])
	}
	if c := e.sim.CallCounts(); c[azuresim.MScaleSetNICListAll] != 4 || c[azuresim.MScaleSetNICList] != 0 || c[azuresim.MSubnetGet] != 1 || total(c) != 5 {
		t.Fatalf("calls %s, want 3 pages of the scale set's NIC list, 1 refused list of the missing one and one subnet read", summary(c))
	}
}

// TestUniformEnsureAfterTimeout: an ensure whose client gave up while the instance's operation
// ran (the coordinator's timeout), called again, waits for that operation (the instance is
// Updating), finds the ipConfiguration applied and writes nothing: one ipConfiguration, one
// public IP.
func TestUniformEnsureAfterTimeout(t *testing.T) {
	e := uniformEnv(t, 1, 0)
	e.sim.SetOperationDelay(300 * time.Millisecond)
	req := providers.EnsureRequest{Owner: owner, Node: instance("0"), IP: ip("10.240.30.1"), Public: true}
	ctx, cancel := context.WithTimeout(context.Background(), 450*time.Millisecond)
	_, err := e.p.EnsureIP(ctx, req) // the prefix's operation, then the instance's, outlast it
	cancel()
	if err == nil {
		t.Fatal("the first ensure did not time out")
	}
	e.sim.ResetCalls()
	a, err := e.p.EnsureIP(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	c := e.sim.CallCounts()
	t.Logf("ensure after a timeout: %s", summary(c))
	if c[azuresim.MInstancePut] != 0 || c[azuresim.MPrefixPut] != 0 {
		t.Errorf("the second ensure wrote again: %s", summary(c))
	}
	if h := held(e); len(h) != 1 || h[a.Attachment].PublicIP != a.PublicIP.String() {
		t.Fatalf("cloud %v, assignment %+v", h, a)
	}
}

// TestUniformStaleInstance: another writer changes the instance between egressd's read and its
// write (AKS, an operator): the PUT with If-Match answers 412, egressd reads the instance again
// and re-applies its change, keeping the other writer's.
func TestUniformStaleInstance(t *testing.T) {
	e := uniformEnv(t, 1, 0)
	ctx := context.Background()
	e.sim.BeforeNext(azuresim.MInstancePut, func() {
		e.sim.ChangeInstance(instanceID("0"), func(doc map[string]any) {
			doc["tags"] = map[string]any{"operator": "was-here"}
		})
	})
	e.sim.ResetCalls()
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: instance("0"), IP: ip("10.240.30.1"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if c := e.sim.CallCounts(); c[azuresim.MInstancePut] != 2 || c[azuresim.MInstanceGet] < 2 {
		t.Errorf("calls %s: want the refused PUT, a fresh read and a second PUT", summary(c))
	}
	if tags, _ := e.sim.InstanceModel(instanceID("0"))["tags"].(map[string]any); tags["operator"] != "was-here" {
		t.Errorf("the other writer's change was overwritten: tags %v", tags)
	}
	if _, ok := held(e)[a.Attachment]; !ok {
		t.Fatalf("ipConfiguration not applied: %v", held(e))
	}
}

// TestUniformUpgradeReensure: an AKS upgrade brings the instance to the scale set's model,
// dropping egressd's ipConfiguration and giving its public IP back to the prefix. Discovery
// then shows the instance without it, the steady-state ensure does not report it held from
// memory, and the ensure (or a move to the same node, what the coordinator calls for a placed
// address) adds it again from the same prefix.
func TestUniformUpgradeReensure(t *testing.T) {
	e := uniformEnv(t, 1, 0)
	ctx := context.Background()
	req := providers.EnsureRequest{Owner: owner, Node: instance("0"), IP: ip("10.240.30.1"), Public: true}
	a, err := e.p.EnsureIP(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := e.p.DiscoverNode(ctx, instance("0")); err != nil || len(info.Interfaces[0].SecondaryIPs) != 1 {
		t.Fatalf("before the upgrade: %+v, %v", info, err)
	}
	e.sim.ChangeScaleSetModel(rg, scaleSet)
	if err := e.sim.UpgradeInstance(instanceID("0")); err != nil {
		t.Fatal(err)
	}
	if latest, _ := e.sim.InstanceModel(instanceID("0"))["properties"].(map[string]any)["latestModelApplied"].(bool); !latest || len(held(e)) != 0 {
		t.Fatalf("the upgrade left latestModelApplied %v, ipConfigurations %v", latest, held(e))
	}
	if info, err := e.p.DiscoverNode(ctx, instance("0")); err != nil || len(info.Interfaces[0].SecondaryIPs) != 0 {
		t.Fatalf("after the upgrade discovery shows %+v, %v", info, err)
	}
	e.sim.ResetCalls()
	moved, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *a, To: instance("0")})
	if err != nil {
		t.Fatal(err)
	}
	c := e.sim.CallCounts()
	t.Logf("re-ensure after an upgrade (MoveIP to the holder): %d mutating, %d calls: %s", uniformMutating(c), total(c), summary(c))
	if c[azuresim.MInstancePut] != 1 || c[azuresim.MPrefixPut] != 0 {
		t.Errorf("re-ensure: want one instance PUT and the prefix reused, got %s", summary(c))
	}
	if moved.PublicAllocation != a.PublicAllocation || len(held(e)) != 1 || !netip.MustParsePrefix(e.sim.Prefixes()[a.PublicAllocation]).Contains(moved.PublicIP) {
		t.Fatalf("re-ensured %+v, cloud %v", moved, held(e))
	}
	if err := e.sim.UpgradeInstance(instanceID("0")); err != nil {
		t.Fatal(err)
	}
	if again, err := e.p.EnsureIP(ctx, req); err != nil || len(held(e)) != 1 || again.PublicIP != moved.PublicIP {
		t.Fatalf("ensure after a second upgrade: %+v, %v; cloud %v", again, err, held(e))
	}
}

// TestUniformGC: ListOwned lists the cluster's ipConfigurations on Uniform instances (found
// through its prefixes, which name every public IP drawn from them) and its prefixes, after
// them, with the ID assignments claim it by; a prefix cannot be released while a public IP is
// drawn from it, and releasing everything listed in order leaves nothing.
func TestUniformGC(t *testing.T) {
	e := uniformEnv(t, 2, 0)
	ctx := context.Background()
	e.sim.SetPageSize(1)
	var a *providers.Assignment
	for i, n := range []string{"0", "1"} {
		var err error
		if a, err = e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: instance(n), IP: ip(fmt.Sprintf("10.240.30.%d", i+1)), Public: true}); err != nil {
			t.Fatal(err)
		}
	}
	e.sim.ResetCalls()
	owned, err := e.p.ListOwned(ctx, owner.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ListOwned: %s", summary(e.sim.CallCounts()))
	var kinds []string
	for _, r := range owned {
		kinds = append(kinds, string(r.Kind)+" "+r.IP.String())
	}
	if len(owned) != 3 || owned[2].Kind != providers.ResourcePublicIP || owned[0].IP != ip("10.240.30.1") || owned[1].IP != ip("10.240.30.2") ||
		owned[0].InstanceID != instanceID("0") || owned[0].Owner.Gateway != owner.Gateway {
		t.Fatalf("owned %v: %+v", kinds, owned)
	}
	if owned[2].ID != a.PublicAllocation {
		t.Errorf("the listed prefix %s is not the assignments' %s: garbage collection would not see it claimed", owned[2].ID, a.PublicAllocation)
	}
	if err := e.p.ReleaseOwned(ctx, owned[2]); !providers.IsConflict(err) || len(e.sim.Prefixes()) != 1 {
		t.Fatalf("releasing the prefix in use: %v, prefixes %v", err, e.sim.Prefixes())
	}
	for _, r := range owned {
		if err := e.p.ReleaseOwned(ctx, r); err != nil {
			t.Fatalf("ReleaseOwned(%+v): %v", r, err)
		}
	}
	if len(held(e)) != 0 || len(e.sim.Prefixes()) != 0 {
		t.Fatalf("after GC: %v, prefixes %v", held(e), e.sim.Prefixes())
	}
	if owned, err := e.p.ListOwned(ctx, owner.Cluster); err != nil || len(owned) != 0 {
		t.Fatalf("ListOwned after GC: %+v, %v", owned, err)
	}
}

// TestUniformAnotherOperationInProgress: another writer's operation on the instance runs when
// egressd's PUT arrives (AKS adding the instance to a load-balancer pool): the PUT answers 409
// AnotherOperationInProgress, egressd waits for the instance to leave Updating, reads it again
// and writes, keeping the other writer's change.
func TestUniformAnotherOperationInProgress(t *testing.T) {
	e := uniformEnv(t, 1, 0)
	ctx := context.Background()
	e.sim.BeforeNext(azuresim.MInstancePut, func() {
		e.sim.SetOperationDelay(150 * time.Millisecond)
		doc := e.sim.InstanceModel(instanceID("0"))
		doc["tags"] = map[string]any{"aks-managed": "pool-change"}
		b, _ := json.Marshal(doc)
		req, _ := http.NewRequest(http.MethodPut, e.srv.URL+instanceID("0")+"?api-version=2025-04-01", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer other-writer")
		resp, err := e.srv.Client().Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("the other writer's PUT: %v %v", resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
		e.sim.SetOperationDelay(0)
	})
	e.sim.ResetCalls()
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: instance("0"), IP: ip("10.240.30.1"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	c := e.sim.CallCounts()
	t.Logf("ensure during another writer's operation: %s", summary(c))
	if c[azuresim.MInstancePut] != 3 { // the other writer's, egressd's refused one, egressd's second
		t.Errorf("instance PUTs %d, want 3", c[azuresim.MInstancePut])
	}
	if tags, _ := e.sim.InstanceModel(instanceID("0"))["tags"].(map[string]any); tags["aks-managed"] != "pool-change" {
		t.Errorf("the other writer's change was overwritten: tags %v", tags)
	}
	if _, ok := held(e)[a.Attachment]; !ok {
		t.Fatalf("ipConfiguration not applied: %v", held(e))
	}
}
