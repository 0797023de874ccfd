package azure_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/egressd/egressd/providers"
	azuresim "github.com/egressd/egressd/test/cloudsim/azure"
)

const scaleSet = "aks-nodepool1-12345678-vmss"

// instance is a node of AKS's default node pool: a Uniform scale-set instance.
func instance(id string) providers.NodeRef {
	return providers.NodeRef{Name: scaleSet + "00000" + id, Zone: "westeurope-1",
		ProviderID: "azure:///subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/Microsoft.Compute/virtualMachineScaleSets/" + scaleSet + "/virtualMachines/" + id}
}

func code(err error) string {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// A Uniform scale-set instance cannot hold an address egressd chose (its ipConfigurations are
// Dynamic): discovery says so after one read of the instance's NICs through the scale-set read
// path (the SDK's 2018-10-01, which the simulator checks) and with no call the next time, a
// missing instance is NotFound, and
// an ensure or a move to such a node is refused before any call, so a move never takes the
// address off its holder for a target that cannot take it.
func TestUniformScaleSetInstance(t *testing.T) {
	e := newEnv(t, 3)
	e.sim.AddScaleSet(azuresim.ScaleSetSeed{ResourceGroup: rg, Name: scaleSet, Subnet: e.sim.SubnetID(rg, "aks-vnet", "nodes"),
		Instances: []azuresim.ScaleSetInstanceSeed{{ID: "0", PrimaryIP: "10.240.0.10"}, {ID: "1", PrimaryIP: "10.240.0.11"}}})
	ctx := context.Background()

	e.sim.ResetCalls()
	_, err := e.p.DiscoverNode(ctx, instance("0"))
	if !providers.IsCapacityExhausted(err) || code(err) != "UniformScaleSetInstance" {
		t.Fatalf("discovering a Uniform instance: %v", err)
	}
	if c := e.sim.CallCounts(); total(c) != 1 || c[azuresim.MScaleSetNICList] != 1 {
		t.Fatalf("discovery calls %v, want one scale-set NIC list", summary(c))
	}
	e.sim.ResetCalls()
	if _, err := e.p.DiscoverNode(ctx, instance("0")); code(err) != "UniformScaleSetInstance" || total(e.sim.CallCounts()) != 0 {
		t.Fatalf("discovering the instance again: %v, calls %s (want none: it is remembered)", err, summary(e.sim.CallCounts()))
	}
	if _, err := e.p.DiscoverNode(ctx, instance("7")); !providers.IsNotFound(err) {
		t.Fatalf("discovering a missing instance: want NotFound, got %v", err)
	}
	gone := instance("0")
	gone.ProviderID = "azure:///subscriptions/" + sub + "/resourceGroups/MC_gone/providers/Microsoft.Compute/virtualMachineScaleSets/" + scaleSet + "/virtualMachines/0"
	if _, err := e.p.DiscoverNode(ctx, gone); !providers.IsNotFound(err) || code(err) != "ResourceGroupNotFound" {
		t.Fatalf("discovering an instance of a missing resource group: want NotFound ResourceGroupNotFound, got %v", err)
	}

	held, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.30.1")})
	if err != nil {
		t.Fatal(err)
	}
	e.sim.ResetCalls()
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: instance("1"), IP: ip("10.240.30.2"), Public: true}); !providers.IsCapacityExhausted(err) || code(err) != "UniformScaleSetInstance" {
		t.Fatalf("ensure on a Uniform instance: %v", err)
	}
	if _, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *held, To: instance("1")}); !providers.IsCapacityExhausted(err) || code(err) != "UniformScaleSetInstance" {
		t.Fatalf("move to a Uniform instance: %v", err)
	}
	if c := e.sim.CallCounts(); total(c) != 0 {
		t.Fatalf("refused ensure and move made calls: %s", summary(c))
	}
	if h, ok := e.sim.Snapshot().PrivateIPs["10.240.30.1"]; !ok || h != "vm-a-nic/"+held.Attachment {
		t.Fatalf("after the refused move 10.240.30.1 is on %q", h)
	}
}

// TestUniformInstancesBatched: several instances of one Uniform scale set are discovered with
// one list of the scale set's NICs (every page: 5 instances in pages of 2), not one list per
// instance; each is refused, an instance the list does not show is NotFound, the instances of
// a scale set that does not exist are NotFound, and the next discovery costs nothing.
func TestUniformInstancesBatched(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	var seed []azuresim.ScaleSetInstanceSeed
	var refs []providers.NodeRef
	for i := range 5 {
		id := fmt.Sprint(i)
		seed = append(seed, azuresim.ScaleSetInstanceSeed{ID: id, PrimaryIP: fmt.Sprintf("10.240.0.%d", 20+i)})
		refs = append(refs, instance(id))
	}
	e.sim.AddScaleSet(azuresim.ScaleSetSeed{ResourceGroup: rg, Name: scaleSet, Subnet: e.sim.SubnetID(rg, "aks-vnet", "nodes"), Instances: seed})
	e.sim.SetPageSize(2)
	other := func(id string) providers.NodeRef {
		n := instance(id)
		n.ProviderID = strings.Replace(n.ProviderID, scaleSet, "gone-vmss", 1)
		return n
	}
	asked := append(append([]providers.NodeRef{}, refs...), instance("9"), other("0"), other("1"))

	e.sim.ResetCalls()
	_, errs := providers.DiscoverNodes(ctx, e.p, asked)
	for i := range refs {
		if !providers.IsCapacityExhausted(errs[i]) || code(errs[i]) != "UniformScaleSetInstance" {
			t.Errorf("%s: %v, want UniformScaleSetInstance", asked[i].Name, errs[i])
		}
	}
	if !providers.IsNotFound(errs[5]) {
		t.Errorf("instance 9, which the list does not show: %v, want NotFound", errs[5])
	}
	if !providers.IsNotFound(errs[6]) || !providers.IsNotFound(errs[7]) || code(errs[6]) != "ResourceNotFound" {
		t.Errorf("instances of a missing scale set: %v, %v; want NotFound ResourceNotFound", errs[6], errs[7])
	}
	if c := e.sim.CallCounts(); c[azuresim.MScaleSetNICListAll] != 4 || c[azuresim.MScaleSetNICList] != 0 || total(c) != 4 {
		t.Fatalf("calls %s, want 3 pages of the scale set's NIC list and 1 refused list of the missing one", summary(c))
	}
	e.sim.ResetCalls()
	if _, errs := providers.DiscoverNodes(ctx, e.p, refs); code(errs[0]) != "UniformScaleSetInstance" || total(e.sim.CallCounts()) != 0 {
		t.Fatalf("again: %v, calls %s (want none: the instances are remembered)", errs[0], summary(e.sim.CallCounts()))
	}
}
