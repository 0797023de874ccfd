package azure

import (
	"context"
	"errors"

	"github.com/egressd/egressd/providers"
)

// discoverInstance reads a Uniform scale-set instance's NICs through the network resource
// provider's scale-set read path (virtualMachineScaleSets/{vmss}/virtualMachines/{i}/networkInterfaces,
// api-version 2018-10-01 in armnetwork) and answers NotFound when the instance has none (it
// does not exist), else the refusal of uniformRefused: such an instance cannot hold an egress
// IP, and saying so at discovery puts the reason in the gateway's status before any placement.
func (p *Provider) discoverInstance(ctx context.Context, node providers.NodeRef, inst instanceRef) error {
	op := "discovering node " + node.Name
	pager := p.c.Interfaces.NewListVirtualMachineScaleSetVMNetworkInterfacesPager(inst.rg, inst.vmss, inst.id, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return classify("reading the NICs of "+inst.resourceID(), err)
		}
		if len(page.Value) > 0 {
			return uniformRefused(op, inst)
		}
	}
	return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("the scale-set instance has no network interface")}
}
