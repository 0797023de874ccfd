package azure

import (
	"context"
	"net/netip"
	"strings"

	"github.com/egressd/egressd/providers"
)

// DiscoverNode implements providers.Provider.
// A Uniform scale-set instance answers NotFound when it does not exist, else CapacityExhausted
// (UniformScaleSetInstance, see uniformRefused): one read of its NICs tells the two apart.
func (p *Provider) DiscoverNode(ctx context.Context, node providers.NodeRef) (*providers.NodeInfo, error) {
	if _, inst, err := parseProviderID(node.ProviderID); err == nil && inst != nil {
		return nil, p.discoverInstance(ctx, node, *inst)
	}
	n, err := p.nicFor(ctx, node)
	if err != nil {
		return nil, err
	}
	nic, err := p.getNIC(ctx, n)
	if err != nil {
		return nil, err
	}
	info := &providers.NodeInfo{Ref: node, Zone: node.Zone}
	if nic.Properties != nil && nic.Properties.VirtualMachine != nil {
		info.InstanceID = deref(nic.Properties.VirtualMachine.ID)
	}
	itf := providers.Interface{ID: deref(nic.ID)}
	if nic.Properties != nil {
		itf.MAC = strings.ToLower(strings.ReplaceAll(deref(nic.Properties.MacAddress), "-", ":"))
	}
	prim := primaryConfig(nic)
	for _, c := range configs(nic) {
		if c == prim {
			itf.PrimaryIP = cfgIP(c)
			if c.Properties != nil && c.Properties.Subnet != nil {
				itf.SubnetID = deref(c.Properties.Subnet.ID)
			}
			continue
		}
		itf.SecondaryIPs = append(itf.SecondaryIPs, cfgIP(c))
	}
	info.Interfaces = []providers.Interface{itf}
	if parts := strings.Split(strings.Trim(itf.SubnetID, "/"), "/"); len(parts) == 10 {
		resp, err := p.c.Subnets.Get(ctx, parts[3], parts[7], parts[9], nil)
		if err != nil {
			return nil, classify("getting subnet "+itf.SubnetID, err)
		}
		if resp.Properties != nil {
			if cidr, err := netip.ParsePrefix(deref(resp.Properties.AddressPrefix)); err == nil {
				// Azure reserves the network address, .1 (gateway), .2 and .3 (DNS) and the broadcast address.
				a := cidr.Addr()
				info.Subnets = []providers.Subnet{{ID: itf.SubnetID, Zone: node.Zone, CIDR: cidr, Free: -1,
					Reserved: []netip.Addr{a, a.Next(), a.Next().Next(), a.Next().Next().Next()}}}
			}
		}
	}
	info.Capacity = providers.Capacity{MaxInterfaces: 1, MaxIPsPerInterface: p.cfg.MaxIPConfigurationsPerInterface,
		FreeIPSlots: max(p.cfg.MaxIPConfigurationsPerInterface-len(configs(nic)), 0)}
	return info, nil
}
