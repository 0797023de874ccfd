package aws

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/egressd/egressd/providers"
)

// DiscoverNode implements providers.Provider: DescribeInstances, DescribeInstanceTypes (once
// per type per process) and DescribeSubnets.
func (p *Provider) DiscoverNode(ctx context.Context, node providers.NodeRef) (*providers.NodeInfo, error) {
	infos, errs := p.DiscoverNodes(ctx, []providers.NodeRef{node})
	return infos[0], errs[0]
}

// describePage is the MaxResults of paginated describes: EC2's maximum. EC2 recommends
// paginated requests for DescribeInstances and DescribeNetworkInterfaces (unpaginated ones are
// prone to throttling and timeouts), and a page may hold fewer results than asked.
const describePage = 1000

// discoverBatch is how many instances one DescribeInstances asks for (by an instance-id
// filter, which, unlike InstanceIds, does not fail the whole call for one unknown instance).
const discoverBatch = 200

// DiscoverNodes implements providers.NodesDiscoverer: one DescribeInstances per 200 nodes, one
// DescribeSubnets per VPC and zone, DescribeInstanceTypes once per type per process.
func (p *Provider) DiscoverNodes(ctx context.Context, nodes []providers.NodeRef) ([]*providers.NodeInfo, []error) {
	infos, errs := make([]*providers.NodeInfo, len(nodes)), make([]error, len(nodes))
	ids := make([]string, len(nodes))
	var want []string
	for i, n := range nodes {
		if ids[i], errs[i] = instanceID(n); errs[i] == nil {
			want = append(want, ids[i])
		}
	}
	instances := map[string]*ec2types.Instance{}
	for chunk := range slices.Chunk(slices.Compact(slices.Sorted(slices.Values(want))), discoverBatch) {
		pg := ec2.NewDescribeInstancesPaginator(p.api, &ec2.DescribeInstancesInput{MaxResults: awssdk.Int32(describePage), Filters: []ec2types.Filter{filter("instance-id", chunk...)}})
		for pg.HasMorePages() {
			out, err := pg.NextPage(ctx)
			if err != nil {
				err = classify(fmt.Sprintf("describing %d instances", len(chunk)), err)
				for i := range nodes {
					if errs[i] == nil && slices.Contains(chunk, ids[i]) {
						errs[i] = fmt.Errorf("discovering node %s: %w", nodes[i].Name, err)
					}
				}
				break
			}
			for _, r := range out.Reservations {
				for j := range r.Instances {
					instances[awssdk.ToString(r.Instances[j].InstanceId)] = &r.Instances[j]
				}
			}
		}
	}
	subnets := map[string][]ec2types.Subnet{} // vpc/zone → subnets
	subnetErrs := map[string]error{}
	for i, n := range nodes {
		if errs[i] != nil {
			continue
		}
		op := "discovering node " + n.Name
		in := instances[ids[i]]
		if in == nil || (in.State != nil && in.State.Name == ec2types.InstanceStateNameTerminated) {
			errs[i] = &providers.Error{Kind: providers.KindNotFound, Op: op, Err: fmt.Errorf("instance %s not running", ids[i])}
			continue
		}
		zone := ""
		if in.Placement != nil {
			zone = awssdk.ToString(in.Placement.AvailabilityZone)
		}
		key := awssdk.ToString(in.VpcId) + "/" + zone
		if _, ok := subnets[key]; !ok && subnetErrs[key] == nil {
			out, err := p.api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{
				filter("vpc-id", awssdk.ToString(in.VpcId)), filter("availability-zone", zone)}})
			if err != nil {
				subnetErrs[key] = classify(op, err)
			} else {
				subnets[key] = out.Subnets
			}
		}
		if err := subnetErrs[key]; err != nil {
			errs[i] = err
			continue
		}
		lim, err := p.limits(ctx, string(in.InstanceType))
		if err != nil {
			errs[i] = fmt.Errorf("%s: %w", op, err)
			continue
		}
		infos[i] = nodeInfo(n, ids[i], zone, in, lim, subnets[key])
	}
	return infos, errs
}

// nodeInfo builds what DiscoverNode reports from an instance, its type's limits and the
// subnets of its zone.
func nodeInfo(node providers.NodeRef, inst, zone string, in *ec2types.Instance, lim typeLimits, subnets []ec2types.Subnet) *providers.NodeInfo {
	info := &providers.NodeInfo{Ref: node, InstanceID: inst, Zone: zone}
	info.Capacity.MaxInterfaces, info.Capacity.MaxIPsPerInterface = lim.maxENIs, lim.ipsPerENI
	primarySubnet := ""
	hasDedicated := false
	for _, n := range in.NetworkInterfaces {
		ifc := providers.Interface{ID: awssdk.ToString(n.NetworkInterfaceId), MAC: awssdk.ToString(n.MacAddress),
			SubnetID: awssdk.ToString(n.SubnetId), Dedicated: strings.HasPrefix(awssdk.ToString(n.Description), descDedicated)}
		if n.Attachment != nil {
			ifc.DeviceIndex = int(awssdk.ToInt32(n.Attachment.DeviceIndex))
		}
		for _, pa := range n.PrivateIpAddresses {
			a, err := netip.ParseAddr(awssdk.ToString(pa.PrivateIpAddress))
			if err != nil {
				continue
			}
			if awssdk.ToBool(pa.Primary) {
				ifc.PrimaryIP = a
			} else {
				ifc.SecondaryIPs = append(ifc.SecondaryIPs, a)
			}
		}
		free := lim.ipsPerENI - 1 - len(ifc.SecondaryIPs)
		switch {
		case ifc.DeviceIndex == 0:
			primarySubnet = ifc.SubnetID
			info.Capacity.FreeIPSlots = free
		case ifc.Dedicated:
			hasDedicated = true
			info.Capacity.DedicatedFreeIPSlots = free
		}
		info.Interfaces = append(info.Interfaces, ifc)
	}
	slices.SortFunc(info.Interfaces, func(a, b providers.Interface) int { return a.DeviceIndex - b.DeviceIndex })
	if !hasDedicated && len(info.Interfaces) < lim.maxENIs {
		info.Capacity.DedicatedFreeIPSlots = lim.ipsPerENI - 1
	}
	for _, s := range subnets {
		cidr, err := netip.ParsePrefix(awssdk.ToString(s.CidrBlock))
		if err != nil {
			continue
		}
		sub := providers.Subnet{ID: awssdk.ToString(s.SubnetId), Zone: awssdk.ToString(s.AvailabilityZone), CIDR: cidr,
			Free: int(awssdk.ToInt32(s.AvailableIpAddressCount)), Reserved: reservedAddrs(cidr)}
		info.Subnets = append(info.Subnets, sub)
		if sub.ID == primarySubnet {
			info.Capacity.FreeIPSlots = min(info.Capacity.FreeIPSlots, sub.Free)
			info.Capacity.DedicatedFreeIPSlots = min(info.Capacity.DedicatedFreeIPSlots, max(sub.Free-1, 0))
		}
		// A dual-stack subnet's IPv6 block (a /64), where the IPv6 egress IPs of cloud.family
		// IPv6 come from: the allocator's pools are per (zone, ID), so its ID is the subnet's
		// with ipv6Pool appended (EnsureRequest.Subnet names it; the provider strips it).
		for _, as := range s.Ipv6CidrBlockAssociationSet {
			v6, err := netip.ParsePrefix(awssdk.ToString(as.Ipv6CidrBlock))
			if err != nil || !v6.Addr().Is6() || as.Ipv6CidrBlockState == nil || as.Ipv6CidrBlockState.State != ec2types.SubnetCidrBlockStateCodeAssociated {
				continue
			}
			info.Subnets = append(info.Subnets, providers.Subnet{ID: sub.ID + ipv6Pool, Zone: sub.Zone, CIDR: v6.Masked(), Free: ipv6Free, Reserved: reservedAddrs(v6)})
		}
	}
	slices.SortStableFunc(info.Subnets, func(a, b providers.Subnet) int {
		return boolInt(b.ID == primarySubnet) - boolInt(a.ID == primarySubnet)
	})
	return info
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ipv6Pool marks the ID of a subnet's IPv6 block ("subnet-0abc#ipv6").
const ipv6Pool = "#ipv6"

// ipv6Free is what a /64 reports as free: more than any node's interfaces can take.
const ipv6Free = 1 << 30

// reservedAddrs are the five addresses AWS keeps in every subnet CIDR block, IPv4 or IPv6:
// the first four (network, VPC router, DNS, future use) and the last.
func reservedAddrs(p netip.Prefix) []netip.Addr {
	p = p.Masked()
	var out []netip.Addr
	a := p.Addr()
	for range 4 {
		out = append(out, a)
		a = a.Next()
	}
	last := p.Addr().AsSlice()
	for i := p.Bits(); i < len(last)*8; i++ {
		last[i/8] |= 1 << (7 - i%8)
	}
	l, _ := netip.AddrFromSlice(last)
	return append(out, l)
}

func (p *Provider) limits(ctx context.Context, typ string) (typeLimits, error) {
	p.mu.Lock()
	l, ok := p.types[typ]
	p.mu.Unlock()
	if ok {
		return l, nil
	}
	out, err := p.api.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []ec2types.InstanceType{ec2types.InstanceType(typ)}})
	if err != nil {
		return l, classify("describing instance type "+typ, err)
	}
	for _, t := range out.InstanceTypes {
		if t.NetworkInfo != nil {
			l = typeLimits{maxENIs: int(awssdk.ToInt32(t.NetworkInfo.MaximumNetworkInterfaces)), ipsPerENI: int(awssdk.ToInt32(t.NetworkInfo.Ipv4AddressesPerInterface))}
		}
	}
	if l.ipsPerENI == 0 {
		return l, &providers.Error{Kind: providers.KindNotFound, Op: "describing instance type " + typ, Err: fmt.Errorf("no network limits for %s", typ)}
	}
	p.mu.Lock()
	p.types[typ] = l
	p.mu.Unlock()
	return l, nil
}
