package gcp

import (
	"context"
	"net/netip"

	computepb "cloud.google.com/go/compute/apiv1/computepb"

	"github.com/egressd/egressd/providers"
)

// DiscoverNode implements providers.Provider: instances.get plus subnetworks.get of nic0.
func (p *Provider) DiscoverNode(ctx context.Context, node providers.NodeRef) (*providers.NodeInfo, error) {
	r, err := p.ref(node)
	if err != nil {
		return nil, err
	}
	inst, err := p.getInstance(ctx, r)
	if err != nil {
		return nil, err
	}
	info := &providers.NodeInfo{Ref: node, InstanceID: r.id(), Zone: r.zone}
	for i, n := range inst.GetNetworkInterfaces() {
		itf := providers.Interface{ID: n.GetName(), DeviceIndex: i, SubnetID: n.GetSubnetwork()}
		itf.PrimaryIP, _ = netip.ParseAddr(n.GetNetworkIP())
		for _, a := range n.GetAliasIpRanges() {
			if pr, err := parseRange(a.GetIpCidrRange()); err == nil && pr.Bits() == 32 {
				itf.SecondaryIPs = append(itf.SecondaryIPs, pr.Addr())
			}
		}
		info.Interfaces = append(info.Interfaces, itf)
	}
	if len(inst.GetNetworkInterfaces()) > 0 {
		n0 := inst.GetNetworkInterfaces()[0]
		sr, ok := subnetRef(n0.GetSubnetwork())
		if ok {
			var sn *computepb.Subnetwork
			err := p.retry(ctx, "getting subnetwork "+n0.GetSubnetwork(), func() error {
				var err error
				sn, err = p.c.Subnetworks.Get(ctx, &computepb.GetSubnetworkRequest{Project: sr.project, Region: sr.region, Subnetwork: sr.name})
				return err
			})
			if err != nil {
				return nil, err
			}
			cidr, err := netip.ParsePrefix(sn.GetIpCidrRange())
			if err == nil {
				// GCP reserves the network, gateway, second-to-last and broadcast addresses.
				last := lastAddr(cidr)
				info.Subnets = append(info.Subnets, providers.Subnet{
					ID: n0.GetSubnetwork(), Zone: r.zone, CIDR: cidr, Free: -1,
					Reserved: []netip.Addr{cidr.Addr(), cidr.Addr().Next(), last.Prev(), last},
				})
			}
		}
		used := len(n0.GetAliasIpRanges())
		info.Capacity = providers.Capacity{
			MaxInterfaces: len(inst.GetNetworkInterfaces()), MaxIPsPerInterface: p.maxAliases + 1,
			FreeIPSlots: max(p.maxAliases-used, 0),
		}
		if nics := inst.GetNetworkInterfaces(); len(nics) > 1 {
			info.Capacity.DedicatedFreeIPSlots = max(p.maxAliases-len(nics[len(nics)-1].GetAliasIpRanges()), 0)
		}
	}
	return info, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
