package azure

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/egressd/egressd/providers"
)

// Cache lifetimes of discovery, in one place.
const (
	// nicListTTL is how long one list of a resource group's NICs answers discovery. The
	// coordinator describes each gateway's nodes in its own batch, the gateways one after the
	// other; a list shared for a few seconds makes that one list per resource group instead of
	// one per gateway. What the list shows of a NIC changes only when the NIC is written: the
	// provider's own writes drop the NIC from the list (forgetListed), so the next discovery
	// reads it again; another writer's change (cloud-provider-azure's load-balancer pools) does
	// not change what discovery reports (addresses and free ipConfiguration slots).
	nicListTTL = 10 * time.Second
	// subnetTTL is how long a subnet read is reused. Discovery uses only its address prefix,
	// for the allocator's pool; the reserved addresses follow from it.
	subnetTTL = 10 * time.Minute
)

// nicList is one list of a resource group's NICs.
type nicList struct {
	at time.Time
	// vms maps a VM's resource ID (lower case) to its primary NIC as listed; a NIC the
	// provider wrote since is removed.
	vms map[string]*armnetwork.Interface
	// pages is how many list calls it took: what reading the resource group again costs.
	pages int
}

type subnetRead struct {
	cidr netip.Prefix
	at   time.Time
}

// DiscoverNode implements providers.Provider: DiscoverNodes of one node.
func (p *Provider) DiscoverNode(ctx context.Context, node providers.NodeRef) (*providers.NodeInfo, error) {
	infos, errs := p.DiscoverNodes(ctx, []providers.NodeRef{node})
	return infos[0], errs[0]
}

// DiscoverNodes implements providers.NodesDiscoverer: per resource group, one paginated list
// of its NICs (networkInterfaces.list, every page) for all the nodes asked, instead of one
// NIC GET per node, reused for nicListTTL; one subnets.get per subnet per subnetTTL. A node
// whose NIC the provider knows and that the list no longer shows as read (the provider wrote
// it since) is read with one NIC GET when those GETs cost no more calls than the list did
// last time; a node whose VM no NIC references is NotFound. A failed list fails only the
// nodes of its resource group.
//
// A Uniform scale-set instance is described from its primary NIC as the network resource
// provider's scale-set read path shows it (what its model's last completed operation made):
// one read of the instance's NICs (discoverInstance), one list of the scale set's NICs for
// several instances of one scale set (discoverInstances), every discovery (an AKS upgrade
// replaces an instance's model, and its egress ipConfigurations with it); NotFound when it
// does not exist. Its secondary addresses are the cloud's Dynamic ones.
func (p *Provider) DiscoverNodes(ctx context.Context, nodes []providers.NodeRef) ([]*providers.NodeInfo, []error) {
	infos, errs := make([]*providers.NodeInfo, len(nodes)), make([]error, len(nodes))
	vms, insts := make([]vmRef, len(nodes)), make([]instanceRef, len(nodes))
	byRG := map[string][]int{} // lower(resource group) → indexes into nodes
	var uniform []int
	for i, n := range nodes {
		vm, inst, err := parseProviderID(n.ProviderID)
		switch {
		case err != nil:
			errs[i] = err
		case inst != nil:
			insts[i] = *inst
			uniform = append(uniform, i)
		default:
			vms[i] = vm
			byRG[strings.ToLower(vm.rg)] = append(byRG[strings.ToLower(vm.rg)], i)
		}
	}
	nics := make([]*armnetwork.Interface, len(nodes))
	p.discoverInstances(ctx, nodes, insts, uniform, nics, errs)
	for _, rg := range slices.Sorted(maps.Keys(byRG)) {
		p.readNICs(ctx, nodes, vms, byRG[rg], nics, errs)
	}
	subnetErrs := map[string]error{} // a subnet that could not be read is not read again for the next node

	for i, n := range nodes {
		if errs[i] != nil {
			continue
		}
		if nics[i] == nil {
			errs[i] = &providers.Error{Kind: providers.KindNotFound, Op: "discovering node " + n.Name, Err: fmt.Errorf("no network interface references %s", vms[i].id())}
			continue
		}
		infos[i], errs[i] = p.nodeInfo(ctx, n, nics[i], subnetErrs)
	}
	return infos, errs
}

// readNICs fills nics[i] for the nodes idx of one resource group (errs[i] when it cannot):
// from the resource group's list when fresh, else by GETs of the NICs it knows when they cost
// no more calls than a list, else by a new list.
func (p *Provider) readNICs(ctx context.Context, nodes []providers.NodeRef, vms []vmRef, idx []int, nics []*armnetwork.Interface, errs []error) {
	rg := vms[idx[0]].rg
	var unread []int
	p.mu.Lock()
	l := p.lists[strings.ToLower(rg)]
	fresh := l != nil && time.Since(l.at) < nicListTTL
	known := true
	for _, i := range idx {
		key := strings.ToLower(vms[i].id())
		if fresh && l.vms[key] != nil {
			nics[i] = l.vms[key]
			continue
		}
		unread = append(unread, i)
		if _, ok := p.nics[key]; !ok {
			known = false
		}
	}
	pages := 1
	if l != nil {
		pages = l.pages
	}
	p.mu.Unlock()
	if len(unread) == 0 {
		return
	}
	if known && len(unread) <= pages {
		for _, i := range unread {
			p.mu.Lock()
			n := p.nics[strings.ToLower(vms[i].id())]
			p.mu.Unlock()
			nic, err := p.getNIC(ctx, n)
			if providers.IsNotFound(err) {
				continue // the VM is gone with its NIC: NotFound below
			}
			if err != nil {
				errs[i] = fmt.Errorf("discovering node %s: %w", nodes[i].Name, err)
				continue
			}
			nics[i] = nic
		}
		return
	}
	listed, err := p.listNICs(ctx, rg)
	for _, i := range unread {
		if err != nil {
			errs[i] = fmt.Errorf("discovering node %s: %w", nodes[i].Name, err)
			continue
		}
		nics[i] = listed[strings.ToLower(vms[i].id())]
	}
}

// listNICs lists the NICs of resource group rg (every page) and returns each VM's primary NIC
// by VM resource ID (lower case; the caller's own map). It records the VM → NIC references
// (nicFor's cache) and keeps the list for discovery unless the provider wrote a NIC while it
// ran (the list may show that NIC as it was before the write).
func (p *Provider) listNICs(ctx context.Context, rg string) (map[string]*armnetwork.Interface, error) {
	p.mu.Lock()
	gen := p.written
	p.mu.Unlock()
	l := &nicList{vms: map[string]*armnetwork.Interface{}}
	pager := p.c.Interfaces.NewListPager(rg, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, classify("listing the NICs of resource group "+rg, err)
		}
		l.pages++
		for _, nic := range page.Value {
			if nic.Properties == nil || nic.Properties.VirtualMachine == nil || nic.Properties.VirtualMachine.ID == nil {
				continue
			}
			vm := strings.ToLower(*nic.Properties.VirtualMachine.ID)
			if l.vms[vm] == nil || (nic.Properties.Primary != nil && *nic.Properties.Primary) {
				l.vms[vm] = nic
			}
		}
	}
	l.at = time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for vm, nic := range l.vms {
		p.nics[vm] = nicRef{rg, deref(nic.Name)}
	}
	if p.written == gen {
		p.lists[strings.ToLower(rg)] = &nicList{at: l.at, vms: maps.Clone(l.vms), pages: l.pages}
	}
	return l.vms, nil
}

// forgetListed drops NIC n from its resource group's list: the provider is writing it (putNIC
// calls it before the PUT and after the operation), so the listed document is out of date, and
// a list running meanwhile is not kept.
func (p *Provider) forgetListed(n nicRef) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.written++
	l := p.lists[strings.ToLower(n.rg)]
	if l == nil {
		return
	}
	for vm, nic := range l.vms {
		if strings.EqualFold(deref(nic.Name), n.name) {
			delete(l.vms, vm)
		}
	}
}

// nodeInfo builds what discovery reports of a node from its primary NIC and that NIC's
// primary subnet; subnetErrs holds the subnets of this discovery that could not be read.
func (p *Provider) nodeInfo(ctx context.Context, node providers.NodeRef, nic *armnetwork.Interface, subnetErrs map[string]error) (*providers.NodeInfo, error) {
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
	err := subnetErrs[strings.ToLower(itf.SubnetID)]
	var cidr netip.Prefix
	if err == nil {
		if cidr, err = p.subnetPrefix(ctx, itf.SubnetID); err != nil {
			subnetErrs[strings.ToLower(itf.SubnetID)] = err
		}
	}
	if err != nil {
		return nil, fmt.Errorf("discovering node %s: %w", node.Name, err)
	}
	if cidr.IsValid() {
		// Azure reserves the network address, .1 (gateway), .2 and .3 (DNS) and the broadcast address.
		a := cidr.Addr()
		info.Subnets = []providers.Subnet{{ID: itf.SubnetID, Zone: node.Zone, CIDR: cidr, Free: -1,
			Reserved: []netip.Addr{a, a.Next(), a.Next().Next(), a.Next().Next().Next()}}}
	}
	info.Capacity = providers.Capacity{MaxInterfaces: 1, MaxIPsPerInterface: p.cfg.MaxIPConfigurationsPerInterface,
		FreeIPSlots: max(p.cfg.MaxIPConfigurationsPerInterface-len(configs(nic)), 0)}
	return info, nil
}

// subnetPrefix returns the address prefix of subnet id (from the cache when fresh); the zero
// prefix when id is not a subnet ID or the subnet shows none.
func (p *Provider) subnetPrefix(ctx context.Context, id string) (netip.Prefix, error) {
	parts := strings.Split(strings.Trim(id, "/"), "/")
	if len(parts) != 10 {
		return netip.Prefix{}, nil
	}
	key := strings.ToLower(id)
	p.mu.Lock()
	c, ok := p.subnets[key]
	p.mu.Unlock()
	if ok && time.Since(c.at) < subnetTTL {
		return c.cidr, nil
	}
	resp, err := p.c.Subnets.Get(ctx, parts[3], parts[7], parts[9], nil)
	if err != nil {
		return netip.Prefix{}, classify("getting subnet "+id, err)
	}
	var cidr netip.Prefix
	if resp.Properties != nil {
		if c, err := netip.ParsePrefix(deref(resp.Properties.AddressPrefix)); err == nil {
			cidr = c
		}
	}
	p.mu.Lock()
	p.subnets[key] = subnetRead{cidr: cidr, at: time.Now()}
	p.mu.Unlock()
	return cidr, nil
}
