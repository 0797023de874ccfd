package gcp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	computepb "cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/iterator"
	"google.golang.org/protobuf/proto"

	"github.com/egressd/egressd/providers"
)

// discoverBatch is how many instance names one instances.aggregatedList asks for. The filter
// is an OR of name comparisons sent in the URL's query; 50 names of up to 63 characters keep
// it to a few KiB, far from any front end's URL limit (the Compute reference states none).
const discoverBatch = 50

// listPage is the maxResults of list calls: Compute's maximum (and default) 500.
const listPage = 500

// DiscoverNode implements providers.Provider: DiscoverNodes of one node (one
// instances.aggregatedList, one subnetworks.get).
func (p *Provider) DiscoverNode(ctx context.Context, node providers.NodeRef) (*providers.NodeInfo, error) {
	infos, errs := p.DiscoverNodes(ctx, []providers.NodeRef{node})
	return infos[0], errs[0]
}

// DiscoverNodes implements providers.NodesDiscoverer: one instances.aggregatedList per project
// per 50 nodes, filtered on their names, whatever zones they are in (instead of one
// instances.get per node), and one subnetworks.get per subnetwork not read in the last
// subnetworkTTL. A node whose
// instance the list does not show in its zone is NotFound; a failed list fails only the nodes
// it was for. Without compute.instances.list (a role from before batching) it falls back to
// one instances.get per node.
func (p *Provider) DiscoverNodes(ctx context.Context, nodes []providers.NodeRef) ([]*providers.NodeInfo, []error) {
	infos, errs := make([]*providers.NodeInfo, len(nodes)), make([]error, len(nodes))
	refs := make([]instanceRef, len(nodes))
	byProject := map[string][]instanceRef{}
	for i, n := range nodes {
		if refs[i], errs[i] = p.ref(n); errs[i] == nil {
			byProject[refs[i].project] = append(byProject[refs[i].project], refs[i])
		}
	}
	found := map[instanceRef]*computepb.Instance{}
	listErr := map[instanceRef]error{}
	for _, project := range slices.Sorted(maps.Keys(byProject)) {
		rs := byProject[project]
		slices.SortFunc(rs, func(a, b instanceRef) int { return strings.Compare(a.name+"/"+a.zone, b.name+"/"+b.zone) })
		rs = slices.Compact(rs)
		for chunk := range slices.Chunk(rs, discoverBatch) {
			got, err := p.listInstances(ctx, project, chunk)
			if providers.KindOf(err) == providers.KindPermission {
				// A role granted before discovery was batched has compute.instances.get and
				// not compute.instances.list: one instances.get per node still works.
				got, err = p.getInstances(ctx, chunk)
			}
			for _, r := range chunk {
				if err != nil {
					listErr[r] = err
				} else if in := got[r]; in != nil {
					found[r] = in
				}
			}
		}
	}
	subnets := map[string]*computepb.Subnetwork{}
	subnetErr := map[string]error{}
	for i, n := range nodes {
		if errs[i] != nil {
			continue
		}
		op := "discovering node " + n.Name
		r := refs[i]
		if err := listErr[r]; err != nil {
			errs[i] = fmt.Errorf("%s: %w", op, err)
			continue
		}
		inst := found[r]
		if inst == nil {
			errs[i] = &providers.Error{Kind: providers.KindNotFound, Op: op, Err: fmt.Errorf("instance %s not found", r.id())}
			continue
		}
		var sn *computepb.Subnetwork
		if nics := inst.GetNetworkInterfaces(); len(nics) > 0 {
			link := nics[0].GetSubnetwork()
			if _, ok := subnets[link]; !ok && subnetErr[link] == nil {
				subnets[link], subnetErr[link] = p.getSubnetwork(ctx, link)
			}
			if err := subnetErr[link]; err != nil {
				errs[i] = fmt.Errorf("%s: %w", op, err)
				continue
			}
			sn = subnets[link]
		}
		infos[i] = p.nodeInfo(n, r, inst, sn)
	}
	return infos, errs
}

// listInstances lists the instances of refs (one project) with one filtered
// instances.aggregatedList, every page, within the retry budget. An instance of the same name
// in a zone that was not asked for is left out.
func (p *Provider) listInstances(ctx context.Context, project string, refs []instanceRef) (map[instanceRef]*computepb.Instance, error) {
	want := map[instanceRef]bool{}
	var terms []string
	for _, r := range refs {
		if !slices.Contains(terms, fmt.Sprintf("(name = %q)", r.name)) {
			terms = append(terms, fmt.Sprintf("(name = %q)", r.name))
		}
		want[r] = true
	}
	out := map[instanceRef]*computepb.Instance{}
	err := p.retry(ctx, fmt.Sprintf("listing %d instances of project %s", len(refs), project), func() error {
		clear(out)
		it := p.c.Instances.AggregatedList(ctx, &computepb.AggregatedListInstancesRequest{Project: project,
			Filter: proto.String(strings.Join(terms, " OR ")), MaxResults: proto.Uint32(listPage)})
		for {
			pair, err := it.Next()
			if errors.Is(err, iterator.Done) {
				return nil
			}
			if err != nil {
				return err
			}
			zone, ok := strings.CutPrefix(pair.Key, "zones/")
			if !ok {
				continue
			}
			for _, in := range pair.Value.GetInstances() {
				if r := (instanceRef{project, zone, in.GetName()}); want[r] { // never trust the filter alone
					out[r] = in
				}
			}
		}
	})
	return out, err
}

// getInstances reads the instances of refs one by one; a missing one is left out.
func (p *Provider) getInstances(ctx context.Context, refs []instanceRef) (map[instanceRef]*computepb.Instance, error) {
	out := map[instanceRef]*computepb.Instance{}
	for _, r := range refs {
		in, err := p.getInstance(ctx, r)
		if providers.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[r] = in
	}
	return out, nil
}

// subnetworkTTL is how long a subnetwork read is reused. Discovery needs only its primary
// range, which never shrinks (expand-ip-range only widens it): a stale range is a subset of
// the current one, so the allocator never hands out an address outside it.
const subnetworkTTL = 10 * time.Minute

type subnetworkRead struct {
	sn *computepb.Subnetwork
	at time.Time
}

// getSubnetwork reads the subnetwork of a self link (from the cache when fresh); nil when the
// link is not one.
func (p *Provider) getSubnetwork(ctx context.Context, link string) (*computepb.Subnetwork, error) {
	sr, ok := subnetRef(link)
	if !ok {
		return nil, nil
	}
	p.subnetsMu.Lock()
	c, ok := p.subnets[link]
	p.subnetsMu.Unlock()
	if ok && time.Since(c.at) < subnetworkTTL {
		return c.sn, nil
	}
	var sn *computepb.Subnetwork
	err := p.retry(ctx, "getting subnetwork "+link, func() error {
		var err error
		sn, err = p.c.Subnetworks.Get(ctx, &computepb.GetSubnetworkRequest{Project: sr.project, Region: sr.region, Subnetwork: sr.name})
		return err
	})
	if err == nil {
		p.subnetsMu.Lock()
		p.subnets[link] = subnetworkRead{sn: sn, at: time.Now()}
		p.subnetsMu.Unlock()
	}
	return sn, err
}

// nodeInfo builds what DiscoverNode reports from an instance and nic0's subnetwork (nil when
// unknown).
func (p *Provider) nodeInfo(node providers.NodeRef, r instanceRef, inst *computepb.Instance, sn *computepb.Subnetwork) *providers.NodeInfo {
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
	nics := inst.GetNetworkInterfaces()
	if len(nics) == 0 {
		return info
	}
	n0 := nics[0]
	if sn != nil {
		if cidr, err := netip.ParsePrefix(sn.GetIpCidrRange()); err == nil {
			// GCP reserves the network, gateway, second-to-last and broadcast addresses.
			last := lastAddr(cidr)
			info.Subnets = append(info.Subnets, providers.Subnet{
				ID: n0.GetSubnetwork(), Zone: r.zone, CIDR: cidr, Free: -1,
				Reserved: []netip.Addr{cidr.Addr(), cidr.Addr().Next(), last.Prev(), last},
			})
		}
	}
	info.Capacity = providers.Capacity{
		MaxInterfaces: len(nics), MaxIPsPerInterface: p.maxAliases + 1,
		FreeIPSlots: max(p.maxAliases-len(n0.GetAliasIpRanges()), 0),
	}
	if len(nics) > 1 {
		info.Capacity.DedicatedFreeIPSlots = max(p.maxAliases-len(nics[len(nics)-1].GetAliasIpRanges()), 0)
	}
	return info
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
