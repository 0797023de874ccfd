package azure

import (
	"context"
	"errors"
	"strings"

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
