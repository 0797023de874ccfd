package azure

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/egressd/egressd/providers"
)

// discoverInstance reads a Uniform scale-set instance's NICs through the network resource
// provider's scale-set read path (virtualMachineScaleSets/{vmss}/virtualMachines/{i}/networkInterfaces,
// api-version 2018-10-01 in armnetwork) and answers NotFound when the instance has none (it
// does not exist), else the refusal of uniformRefused: such an instance cannot hold an egress
// IP, and saying so at discovery puts the reason in the gateway's status before any placement.
// An instance seen once is remembered (as a VM's NIC is): a gateway selecting Uniform nodes
// costs one read per instance, not one per reconcile; a deleted instance's node leaves the
// cluster, so the coordinator stops asking.
func (p *Provider) discoverInstance(ctx context.Context, node providers.NodeRef, inst instanceRef) error {
	op := "discovering node " + node.Name
	key := strings.ToLower(inst.resourceID())
	p.mu.Lock()
	seen := p.uniform[key]
	p.mu.Unlock()
	if seen {
		return uniformRefused(op, inst)
	}
	pager := p.c.Interfaces.NewListVirtualMachineScaleSetVMNetworkInterfacesPager(inst.rg, inst.vmss, inst.id, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return classify("reading the NICs of "+inst.resourceID(), err)
		}
		if len(page.Value) > 0 {
			p.mu.Lock()
			p.uniform[key] = true
			p.mu.Unlock()
			return uniformRefused(op, inst)
		}
	}
	return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("the scale-set instance has no network interface")}
}

// discoverInstances answers discovery for the Uniform scale-set instances idx of nodes
// (errs[i] for each): instances of one scale set not seen before are read with one list of
// the scale set's NICs (every page) when there are several, with discoverInstance when there
// is one. An instance the list shows is remembered, and refused (uniformRefused); one it does
// not show is NotFound.
func (p *Provider) discoverInstances(ctx context.Context, nodes []providers.NodeRef, insts []instanceRef, idx []int, errs []error) {
	byScaleSet := map[string][]int{} // lower(resource group/scale set) → indexes of unseen instances
	for _, i := range idx {
		p.mu.Lock()
		seen := p.uniform[strings.ToLower(insts[i].resourceID())]
		p.mu.Unlock()
		if seen {
			errs[i] = uniformRefused("discovering node "+nodes[i].Name, insts[i])
			continue
		}
		k := strings.ToLower(insts[i].rg + "/" + insts[i].vmss)
		byScaleSet[k] = append(byScaleSet[k], i)
	}
	for _, k := range slices.Sorted(maps.Keys(byScaleSet)) {
		group := byScaleSet[k]
		if len(group) == 1 {
			errs[group[0]] = p.discoverInstance(ctx, nodes[group[0]], insts[group[0]])
			continue
		}
		inst := insts[group[0]]
		listed := map[string]bool{} // lower(instance resource ID)
		pager := p.c.Interfaces.NewListVirtualMachineScaleSetNetworkInterfacesPager(inst.rg, inst.vmss, nil)
		var err error
		for pager.More() {
			var page armnetwork.InterfacesClientListVirtualMachineScaleSetNetworkInterfacesResponse
			if page, err = pager.NextPage(ctx); err != nil {
				err = classify("reading the NICs of scale set "+inst.vmss, err)
				break
			}
			for _, nic := range page.Value {
				if nic.Properties != nil && nic.Properties.VirtualMachine != nil {
					listed[strings.ToLower(deref(nic.Properties.VirtualMachine.ID))] = true
				}
			}
		}
		for _, i := range group {
			op := "discovering node " + nodes[i].Name
			key := strings.ToLower(insts[i].resourceID())
			switch {
			case err != nil && !providers.IsNotFound(err):
				errs[i] = fmt.Errorf("%s: %w", op, err)
			case listed[key]:
				p.mu.Lock()
				p.uniform[key] = true
				p.mu.Unlock()
				errs[i] = uniformRefused(op, insts[i])
			default: // the scale set, or this instance, does not exist
				errs[i] = &providers.Error{Kind: providers.KindNotFound, Op: op, Code: armErrorCode(err), Err: errors.New("the scale-set instance has no network interface")}
			}
		}
	}
}

// armErrorCode is the ARM error code of err ("" when none).
func armErrorCode(err error) string {
	_, c := armCode(err)
	return c
}
