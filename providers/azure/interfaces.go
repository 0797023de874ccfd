package azure

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/egressd/egressd/providers"
)

func (p *Provider) lock(key string) func() {
	p.mu.Lock()
	m := p.lks[key]
	if m == nil {
		m = &sync.Mutex{}
		p.lks[key] = m
	}
	p.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// nicFor finds the VM's primary NIC: one list of the VM's resource group the first time
// (Azure has no NIC-by-VM lookup without the compute API), cached afterwards.
func (p *Provider) nicFor(ctx context.Context, node providers.NodeRef) (nicRef, error) {
	vm, err := parseProviderID(node.ProviderID)
	if err != nil {
		return nicRef{}, err
	}
	key := strings.ToLower(vm.id())
	p.mu.Lock()
	n, ok := p.nics[key]
	p.mu.Unlock()
	if ok {
		return n, nil
	}
	op := "finding the NIC of " + vm.id()
	var found *armnetwork.Interface
	if err := p.eachNIC(ctx, op, vm.rg, func(nic *armnetwork.Interface) bool {
		if nic.Properties == nil || nic.Properties.VirtualMachine == nil || !strings.EqualFold(deref(nic.Properties.VirtualMachine.ID), vm.id()) {
			return true
		}
		if found == nil || (nic.Properties.Primary != nil && *nic.Properties.Primary) {
			found = nic
		}
		return true
	}); err != nil {
		return nicRef{}, err
	}
	if found == nil {
		return nicRef{}, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("no network interface references this VM")}
	}
	n = nicRef{vm.rg, deref(found.Name)}
	p.mu.Lock()
	p.nics[key] = n
	p.mu.Unlock()
	return n, nil
}

func (p *Provider) getNIC(ctx context.Context, n nicRef) (*armnetwork.Interface, error) {
	resp, err := p.c.Interfaces.Get(ctx, n.rg, n.name, nil)
	if err != nil {
		return nil, classify("getting NIC "+n.name, err)
	}
	return &resp.Interface, nil
}

// putNIC writes the NIC and waits for the long-running operation; a failed operation is an
// error.
func (p *Provider) putNIC(ctx context.Context, n nicRef, nic *armnetwork.Interface) error {
	op := "updating NIC " + n.name
	poller, err := p.c.Interfaces.BeginCreateOrUpdate(ctx, n.rg, n.name, *nic, nil)
	if err != nil {
		return classify(op, err)
	}
	if _, err := poller.PollUntilDone(ctx, p.pollOptions()); err != nil {
		return classify(op, err)
	}
	return nil
}

func configs(nic *armnetwork.Interface) []*armnetwork.InterfaceIPConfiguration {
	if nic.Properties == nil {
		return nil
	}
	return nic.Properties.IPConfigurations
}

func cfgIP(c *armnetwork.InterfaceIPConfiguration) netip.Addr {
	if c.Properties == nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(deref(c.Properties.PrivateIPAddress))
	return a
}

func primaryConfig(nic *armnetwork.Interface) *armnetwork.InterfaceIPConfiguration {
	for _, c := range configs(nic) {
		if c.Properties != nil && c.Properties.Primary != nil && *c.Properties.Primary {
			return c
		}
	}
	if cs := configs(nic); len(cs) > 0 {
		return cs[0]
	}
	return nil
}

func findConfig(nic *armnetwork.Interface, ip netip.Addr) *armnetwork.InterfaceIPConfiguration {
	for _, c := range configs(nic) {
		if cfgIP(c) == ip {
			return c
		}
	}
	return nil
}

// newConfig builds the secondary ipConfiguration: static address in the primary's subnet (or
// subnet), the primary's application security groups (so NSG rules written against them
// cover the egress address), no load-balancer pools (the egress address must not become an
// LB backend).
func newConfig(nic *armnetwork.Interface, name string, ip netip.Addr, subnet string, pip *armnetwork.PublicIPAddress) *armnetwork.InterfaceIPConfiguration {
	prim := primaryConfig(nic)
	props := &armnetwork.InterfaceIPConfigurationPropertiesFormat{
		Primary:                   to.Ptr(false),
		PrivateIPAddress:          to.Ptr(ip.String()),
		PrivateIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodStatic),
		PublicIPAddress:           pip,
	}
	if ip.Is6() {
		props.PrivateIPAddressVersion = to.Ptr(armnetwork.IPVersionIPv6)
	} else {
		props.PrivateIPAddressVersion = to.Ptr(armnetwork.IPVersionIPv4)
	}
	if subnet != "" {
		props.Subnet = &armnetwork.Subnet{ID: to.Ptr(subnet)}
	} else if prim != nil && prim.Properties != nil && prim.Properties.Subnet != nil {
		props.Subnet = &armnetwork.Subnet{ID: prim.Properties.Subnet.ID}
	}
	if prim != nil && prim.Properties != nil {
		props.ApplicationSecurityGroups = prim.Properties.ApplicationSecurityGroups
	}
	return &armnetwork.InterfaceIPConfiguration{Name: to.Ptr(name), Properties: props}
}

// removeConfig removes the ipConfiguration name from the NIC (PUT + wait). It returns the
// removed configuration, or nil when the NIC did not have it.
func (p *Provider) removeConfig(ctx context.Context, n nicRef, name string) (*armnetwork.InterfaceIPConfiguration, error) {
	defer p.lock(n.key())()
	nic, err := p.getNIC(ctx, n)
	if providers.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keep []*armnetwork.InterfaceIPConfiguration
	var removed *armnetwork.InterfaceIPConfiguration
	for _, c := range configs(nic) {
		if strings.EqualFold(deref(c.Name), name) {
			removed = c
			continue
		}
		keep = append(keep, c)
	}
	if removed == nil {
		return nil, nil
	}
	nic.Properties.IPConfigurations = keep
	return removed, p.putNIC(ctx, n, nic)
}

// holderOf finds the NIC holding the cluster's ipConfiguration for ip: the recorded one
// first, else by listing the resource group's NICs.
func (p *Provider) holderOf(ctx context.Context, cur providers.Assignment, name string) (*nicRef, error) {
	if n, _, ok := parseNICID(cur.InterfaceID); ok {
		nic, err := p.getNIC(ctx, n)
		if err == nil && configByName(nic, name) != nil {
			return &n, nil
		}
		if err != nil && !providers.IsNotFound(err) {
			return nil, err
		}
	}
	if p.cfg.ResourceGroup == "" {
		return nil, nil
	}
	var holder *nicRef
	err := p.eachNIC(ctx, "listing NICs", p.cfg.ResourceGroup, func(nic *armnetwork.Interface) bool {
		if configByName(nic, name) != nil {
			holder = &nicRef{p.cfg.ResourceGroup, deref(nic.Name)}
			return false
		}
		return true
	})
	return holder, err
}

// eachNIC calls fn with every NIC of resource group rg, page by page, until fn returns false.
func (p *Provider) eachNIC(ctx context.Context, op, rg string, fn func(*armnetwork.Interface) bool) error {
	pager := p.c.Interfaces.NewListPager(rg, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return classify(op, err)
		}
		for _, nic := range page.Value {
			if !fn(nic) {
				return nil
			}
		}
	}
	return nil
}

func configByName(nic *armnetwork.Interface, name string) *armnetwork.InterfaceIPConfiguration {
	for _, c := range configs(nic) {
		if strings.EqualFold(deref(c.Name), name) {
			return c
		}
	}
	return nil
}
