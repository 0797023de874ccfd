// Package azure is egressd's Azure provider: egress IPs are static secondary ipConfigurations
// on the node's network interface, written with a PUT of the whole NIC as read (so its
// load-balancer backend pools, application security groups and other ipConfigurations are
// kept) and awaited through the long-running operation. Public egress associates a Standard
// SKU static public IP with the ipConfiguration.
//
// Ownership: ipConfigurations carry no tags, so their name encodes the cluster
// (egressd-<8 hex of sha256(cluster)>-<ip>); public IPs carry the egressd.io/cluster and
// egressd.io/owner tags. Only names and tags of this cluster are ever changed or released.
//
// It owns the armnetwork SDK; nothing else in egressd imports it.
package azure

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/egressd/egressd/providers"
)

// Tag keys on public IPs.
const (
	TagCluster = "egressd.io/cluster"
	TagOwner   = "egressd.io/owner"

	// defaultMaxIPConfigurations per NIC (Azure's documented limit is 256).
	defaultMaxIPConfigurations = 256
	// defaultPollFrequency when ARM sends no Retry-After.
	defaultPollFrequency = time.Second
)

// Options tune the provider.
type Options struct {
	SubscriptionID string
	// ResourceGroup listed for garbage collection (the node resource group).
	ResourceGroup string
	// Location for public IPs; empty: the NIC's.
	Location            string
	MaxIPConfigurations int
	PollFrequency       time.Duration
}

// Provider implements providers.Provider for Azure.
type Provider struct {
	c    Clients
	o    Options
	mu   sync.Mutex
	nics map[string]nicRef // VM resource ID (lower case) → its primary NIC; a VM's NICs do not change while it exists
	lks  map[string]*sync.Mutex
	last MoveWindow
}

// MoveWindow is how long a move left the address on no NIC, as observed by the provider
// (removal operation done → addition operation done). The public IP travels with the
// ipConfiguration, so its window is the same.
type MoveWindow struct {
	IP     netip.Addr
	Window time.Duration
}

var _ providers.Provider = (*Provider)(nil)

// New returns a provider.
func New(c Clients, o Options) *Provider {
	if o.MaxIPConfigurations <= 0 {
		o.MaxIPConfigurations = defaultMaxIPConfigurations
	}
	if o.PollFrequency <= 0 {
		o.PollFrequency = defaultPollFrequency
	}
	return &Provider{c: c, o: o, nics: map[string]nicRef{}, lks: map[string]*sync.Mutex{}}
}

// Name implements providers.Provider.
func (p *Provider) Name() string { return "azure" }

// LastMoveWindow returns the window of the last move.
func (p *Provider) LastMoveWindow() MoveWindow {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

type vmRef struct{ sub, rg, name string }

func (v vmRef) id() string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s", v.sub, v.rg, v.name)
}

type nicRef struct{ rg, name string }

func (n nicRef) key() string { return strings.ToLower(n.rg + "/" + n.name) }

// parseProviderID parses azure:///subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM.
func parseProviderID(id string) (vmRef, error) {
	op := "parsing providerID " + id
	rest, ok := strings.CutPrefix(id, "azure://")
	if !ok {
		return vmRef{}, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("not an Azure node")}
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	if len(parts) >= 8 && strings.EqualFold(parts[6], "virtualMachineScaleSets") {
		return vmRef{}, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "VMSSUnsupported",
			Err: errors.New("uniform scale set NICs are changed through the scale set model, which this provider does not do yet; use Flexible orchestration or availability-set node pools for gateways")}
	}
	if len(parts) != 8 || !strings.EqualFold(parts[0], "subscriptions") || !strings.EqualFold(parts[2], "resourceGroups") || !strings.EqualFold(parts[6], "virtualMachines") {
		return vmRef{}, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("want azure:///subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM")}
	}
	return vmRef{parts[1], parts[3], parts[7]}, nil
}

// parseNICID parses a NIC resource ID (or an ipConfiguration ID) into the NIC reference.
func parseNICID(id string) (nicRef, string, bool) {
	parts := strings.Split(strings.Trim(id, "/"), "/")
	if len(parts) < 8 || !strings.EqualFold(parts[2], "resourceGroups") || !strings.EqualFold(parts[6], "networkInterfaces") {
		return nicRef{}, "", false
	}
	cfg := ""
	if len(parts) == 10 && strings.EqualFold(parts[8], "ipConfigurations") {
		cfg = parts[9]
	}
	return nicRef{parts[3], parts[7]}, cfg, true
}

func clusterHash(cluster string) string {
	h := sha256.Sum256([]byte(cluster))
	return hex.EncodeToString(h[:4])
}

var ipDash = strings.NewReplacer(".", "-", ":", "-")

func configName(cluster string, ip netip.Addr) string {
	return "egressd-" + clusterHash(cluster) + "-" + ipDash.Replace(ip.String())
}

func publicName(cluster string, ip netip.Addr) string {
	return "egressd-" + clusterHash(cluster) + "-pub-" + ipDash.Replace(ip.String())
}

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

// classify maps ARM errors to provider errors.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *providers.Error
	if errors.As(err, &pe) {
		return err
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s: %w", op, err)
	}
	code := re.ErrorCode
	switch {
	case re.StatusCode == http.StatusNotFound:
		return &providers.Error{Kind: providers.KindNotFound, Op: op, Code: code, Err: err}
	case re.StatusCode == http.StatusTooManyRequests:
		e := &providers.Error{Kind: providers.KindThrottled, Op: op, Code: code, Err: err}
		if re.RawResponse != nil {
			if s := re.RawResponse.Header.Get("Retry-After"); s != "" {
				if d, err := time.ParseDuration(s + "s"); err == nil {
					e.RetryAfter = d
				}
			}
		}
		return e
	case re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized:
		return &providers.Error{Kind: providers.KindPermission, Op: op, Code: code, Err: err}
	case re.StatusCode == http.StatusConflict || re.StatusCode == http.StatusPreconditionFailed ||
		code == "PrivateIPAddressInUse" || code == "PublicIPAddressInUse" || code == "AnotherOperationInProgress":
		return &providers.Error{Kind: providers.KindConflict, Op: op, Code: code, Err: err}
	case strings.Contains(code, "Limit") || strings.Contains(code, "Quota") || code == "SubnetIsFull":
		return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: code, Err: err}
	}
	return fmt.Errorf("%s: %w", op, err)
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
	pager := p.c.Interfaces.NewListPager(vm.rg, nil)
	var found *armnetwork.Interface
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nicRef{}, classify(op, err)
		}
		for _, nic := range page.Value {
			if nic.Properties == nil || nic.Properties.VirtualMachine == nil || !strings.EqualFold(deref(nic.Properties.VirtualMachine.ID), vm.id()) {
				continue
			}
			if found == nil || (nic.Properties.Primary != nil && *nic.Properties.Primary) {
				found = nic
			}
		}
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
	if _, err := poller.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: p.o.PollFrequency}); err != nil {
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

func (p *Provider) assignment(node string, n nicRef, nic *armnetwork.Interface, c *armnetwork.InterfaceIPConfiguration, pip *armnetwork.PublicIPAddress) *providers.Assignment {
	a := &providers.Assignment{IP: cfgIP(c), Node: node, InterfaceID: deref(nic.ID), Attachment: deref(c.Name)}
	if nic.Properties != nil {
		a.InterfaceMAC = strings.ToLower(strings.ReplaceAll(deref(nic.Properties.MacAddress), "-", ":"))
		if nic.Properties.VirtualMachine != nil {
			a.InstanceID = deref(nic.Properties.VirtualMachine.ID)
		}
	}
	if c.Properties != nil && c.Properties.Subnet != nil {
		a.Subnet = deref(c.Properties.Subnet.ID)
	}
	if pip != nil {
		a.PublicAllocation = deref(pip.ID)
		a.PublicAssociation = deref(nic.ID) + "/ipConfigurations/" + deref(c.Name)
		if pip.Properties != nil {
			a.PublicIP, _ = netip.ParseAddr(deref(pip.Properties.IPAddress))
		}
	}
	return a
}

// ensurePublicIP creates (PUT is idempotent by name) or reads the Standard static public IP.
func (p *Provider) ensurePublicIP(ctx context.Context, rg, location string, ip netip.Addr, owner providers.Owner) (*armnetwork.PublicIPAddress, error) {
	name := publicName(owner.Cluster, ip)
	op := "creating public IP " + name
	if got, err := p.c.PublicIPAddresses.Get(ctx, rg, name, nil); err == nil {
		if !ownedBy(got.Tags, owner.Cluster) {
			return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Code: "NotOwned", Err: errors.New("public IP exists without this cluster's tag")}
		}
		return &got.PublicIPAddress, nil
	} else if ce := classify(op, err); !providers.IsNotFound(ce) {
		return nil, ce
	}
	if p.o.Location != "" {
		location = p.o.Location
	}
	want := armnetwork.PublicIPAddress{
		Location: to.Ptr(location),
		SKU:      &armnetwork.PublicIPAddressSKU{Name: to.Ptr(armnetwork.PublicIPAddressSKUNameStandard), Tier: to.Ptr(armnetwork.PublicIPAddressSKUTierRegional)},
		Properties: &armnetwork.PublicIPAddressPropertiesFormat{
			PublicIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodStatic),
			PublicIPAddressVersion:   to.Ptr(armnetwork.IPVersionIPv4),
		},
		Tags: map[string]*string{TagCluster: to.Ptr(owner.Cluster), TagOwner: to.Ptr(owner.Gateway)},
	}
	poller, err := p.c.PublicIPAddresses.BeginCreateOrUpdate(ctx, rg, name, want, nil)
	if err != nil {
		return nil, classify(op, err)
	}
	resp, err := poller.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: p.o.PollFrequency})
	if err != nil {
		return nil, classify(op, err)
	}
	return &resp.PublicIPAddress, nil
}

func ownedBy(tags map[string]*string, cluster string) bool {
	return tags[TagCluster] != nil && *tags[TagCluster] == cluster
}

// DiscoverNode implements providers.Provider.
func (p *Provider) DiscoverNode(ctx context.Context, node providers.NodeRef) (*providers.NodeInfo, error) {
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
	info.Capacity = providers.Capacity{MaxInterfaces: 1, MaxIPsPerInterface: p.o.MaxIPConfigurations,
		FreeIPSlots: max(p.o.MaxIPConfigurations-len(configs(nic)), 0)}
	return info, nil
}

// EnsureIP implements providers.Provider. Steady state: one NIC get (plus one NIC list the
// first time a VM is seen). First time: NIC get, NIC PUT + operation polls; with Public the
// public IP get (404), PUT + polls first.
func (p *Provider) EnsureIP(ctx context.Context, req providers.EnsureRequest) (*providers.Assignment, error) {
	op := "ensuring " + req.IP.String() + " on " + req.Node.Name
	if req.Interface == providers.InterfaceDedicated {
		return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "DedicatedInterfaceUnsupported",
			Err: errors.New("azure attaches NICs only to stopped VMs; egress ipConfigurations go on the primary NIC")}
	}
	n, err := p.nicFor(ctx, req.Node)
	if err != nil {
		return nil, err
	}
	defer p.lock(n.key())()
	nic, err := p.getNIC(ctx, n)
	if err != nil {
		return nil, err
	}
	name := configName(req.Owner.Cluster, req.IP)
	c := findConfig(nic, req.IP)
	if c != nil && deref(c.Name) != name {
		return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Code: "NotOwned", Err: fmt.Errorf("%s is ipConfiguration %s, not egressd's", req.IP, deref(c.Name))}
	}
	var pip *armnetwork.PublicIPAddress
	if req.Public {
		if pip, err = p.ensurePublicIP(ctx, n.rg, deref(nic.Location), req.IP, req.Owner); err != nil {
			return nil, err
		}
	}
	if c != nil && (pip == nil || (c.Properties.PublicIPAddress != nil && strings.EqualFold(deref(c.Properties.PublicIPAddress.ID), deref(pip.ID)))) {
		return p.assignment(req.Node.Name, n, nic, c, pip), nil
	}
	if c == nil {
		if len(configs(nic)) >= p.o.MaxIPConfigurations {
			return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "IPConfigurationLimit", Err: fmt.Errorf("NIC %s has %d ipConfigurations", n.name, len(configs(nic)))}
		}
		var ref *armnetwork.PublicIPAddress
		if pip != nil {
			ref = &armnetwork.PublicIPAddress{ID: pip.ID}
		}
		c = newConfig(nic, name, req.IP, req.Subnet, ref)
		nic.Properties.IPConfigurations = append(nic.Properties.IPConfigurations, c)
	} else {
		c.Properties.PublicIPAddress = &armnetwork.PublicIPAddress{ID: pip.ID}
	}
	if err := p.putNIC(ctx, n, nic); err != nil {
		return nil, err
	}
	return p.assignment(req.Node.Name, n, nic, c, pip), nil
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
	if p.o.ResourceGroup == "" {
		return nil, nil
	}
	pager := p.c.Interfaces.NewListPager(p.o.ResourceGroup, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, classify("listing NICs", err)
		}
		for _, nic := range page.Value {
			if configByName(nic, name) != nil {
				return &nicRef{p.o.ResourceGroup, deref(nic.Name)}, nil
			}
		}
	}
	return nil, nil
}

func configByName(nic *armnetwork.Interface, name string) *armnetwork.InterfaceIPConfiguration {
	for _, c := range configs(nic) {
		if strings.EqualFold(deref(c.Name), name) {
			return c
		}
	}
	return nil
}

// MoveIP implements providers.Provider: remove the ipConfiguration from the holder's NIC,
// then add it (with the same public IP reference) to the target's. The target NIC is read
// before the removal so the addition follows the removal's operation at once.
func (p *Provider) MoveIP(ctx context.Context, req providers.MoveRequest) (*providers.Assignment, error) {
	ip := req.Current.IP
	op := "moving " + ip.String() + " to " + req.To.Name
	name := configName(req.Owner.Cluster, ip)
	to_, err := p.nicFor(ctx, req.To)
	if err != nil {
		return nil, err
	}
	target, err := p.getNIC(ctx, to_)
	if err != nil {
		return nil, err
	}
	if c := configByName(target, name); c != nil {
		return p.assignment(req.To.Name, to_, target, c, p.pipOf(ctx, c)), nil
	}
	if findConfig(target, ip) != nil {
		return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Code: "NotOwned", Err: errors.New("the target holds the address under another ipConfiguration")}
	}
	if len(configs(target)) >= p.o.MaxIPConfigurations {
		return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "IPConfigurationLimit", Err: fmt.Errorf("NIC %s is full", to_.name)}
	}
	from, err := p.holderOf(ctx, req.Current, name)
	if err != nil {
		return nil, err
	}
	var pipRef *armnetwork.PublicIPAddress
	var removedAt time.Time
	if from != nil && from.key() != to_.key() {
		removed, err := p.removeConfig(ctx, *from, name)
		if err != nil {
			return nil, err
		}
		if removed != nil && removed.Properties != nil && removed.Properties.PublicIPAddress != nil {
			pipRef = &armnetwork.PublicIPAddress{ID: removed.Properties.PublicIPAddress.ID}
		}
		removedAt = time.Now()
	} else if req.Current.PublicAllocation != "" {
		pipRef = &armnetwork.PublicIPAddress{ID: to.Ptr(req.Current.PublicAllocation)}
	}
	unlock := p.lock(to_.key())
	c := newConfig(target, name, ip, "", pipRef)
	target.Properties.IPConfigurations = append(target.Properties.IPConfigurations, c)
	err = p.putNIC(ctx, to_, target)
	unlock()
	if from == nil && providers.IsConflict(err) {
		// No NIC holds the cluster's ipConfiguration and someone else holds the address.
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: op, Code: "NotOwned", Err: err}
	}
	if err != nil {
		return nil, err
	}
	if !removedAt.IsZero() {
		p.mu.Lock()
		p.last = MoveWindow{IP: ip, Window: time.Since(removedAt)}
		p.mu.Unlock()
	}
	var pip *armnetwork.PublicIPAddress
	if pipRef != nil {
		pip = p.pipOf(ctx, c)
	}
	return p.assignment(req.To.Name, to_, target, c, pip), nil
}

// pipOf reads the public IP associated with c, or nil.
func (p *Provider) pipOf(ctx context.Context, c *armnetwork.InterfaceIPConfiguration) *armnetwork.PublicIPAddress {
	if c.Properties == nil || c.Properties.PublicIPAddress == nil {
		return nil
	}
	parts := strings.Split(strings.Trim(deref(c.Properties.PublicIPAddress.ID), "/"), "/")
	if len(parts) != 8 {
		return nil
	}
	resp, err := p.c.PublicIPAddresses.Get(ctx, parts[3], parts[7], nil)
	if err != nil {
		return &armnetwork.PublicIPAddress{ID: c.Properties.PublicIPAddress.ID}
	}
	return &resp.PublicIPAddress
}

// ReleaseIP implements providers.Provider.
func (p *Provider) ReleaseIP(ctx context.Context, req providers.ReleaseRequest) error {
	ip := req.Current.IP
	op := "releasing " + ip.String()
	name := configName(req.Owner.Cluster, ip)
	holder, err := p.holderOf(ctx, req.Current, name)
	if err != nil {
		return err
	}
	rg := p.o.ResourceGroup
	if holder != nil {
		rg = holder.rg
		if _, err := p.removeConfig(ctx, *holder, name); err != nil {
			return err
		}
	} else if n, _, ok := parseNICID(req.Current.InterfaceID); ok {
		rg = n.rg
		nic, err := p.getNIC(ctx, n)
		if err != nil && !providers.IsNotFound(err) {
			return err
		}
		if nic != nil && findConfig(nic, ip) != nil {
			return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: fmt.Errorf("%s on %s is not an ipConfiguration of cluster %s", ip, n.name, req.Owner.Cluster)}
		}
	}
	if rg == "" {
		return nil
	}
	return p.deletePublicIP(ctx, rg, publicName(req.Owner.Cluster, ip), req.Owner.Cluster)
}

func (p *Provider) deletePublicIP(ctx context.Context, rg, name, cluster string) error {
	op := "deleting public IP " + name
	got, err := p.c.PublicIPAddresses.Get(ctx, rg, name, nil)
	if err != nil {
		if ce := classify(op, err); providers.IsNotFound(ce) {
			return nil
		} else {
			return ce
		}
	}
	if !ownedBy(got.Tags, cluster) {
		return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: errors.New("public IP not tagged for this cluster")}
	}
	if got.Properties != nil && got.Properties.IPConfiguration != nil {
		if n, cfg, ok := parseNICID(deref(got.Properties.IPConfiguration.ID)); ok {
			if !strings.HasPrefix(cfg, "egressd-"+clusterHash(cluster)+"-") {
				return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "InUse", Err: fmt.Errorf("associated with %s, not egressd's", cfg)}
			}
			if _, err := p.removeConfig(ctx, n, cfg); err != nil {
				return err
			}
		}
	}
	poller, err := p.c.PublicIPAddresses.BeginDelete(ctx, rg, name, nil)
	if err != nil {
		if ce := classify(op, err); !providers.IsNotFound(ce) {
			return ce
		}
		return nil
	}
	if _, err := poller.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: p.o.PollFrequency}); err != nil {
		return classify(op, err)
	}
	return nil
}

// ListOwned implements providers.Provider: one NIC list and one public IP list of the
// configured resource group.
func (p *Provider) ListOwned(ctx context.Context, cluster string) ([]providers.OwnedResource, error) {
	if p.o.ResourceGroup == "" {
		return nil, errors.New("listing owned resources: no resource group configured")
	}
	prefix := "egressd-" + clusterHash(cluster) + "-"
	var out []providers.OwnedResource
	nics := p.c.Interfaces.NewListPager(p.o.ResourceGroup, nil)
	for nics.More() {
		page, err := nics.NextPage(ctx)
		if err != nil {
			return nil, classify("listing NICs", err)
		}
		for _, nic := range page.Value {
			for _, c := range configs(nic) {
				if !strings.HasPrefix(deref(c.Name), prefix) || strings.HasPrefix(deref(c.Name), prefix+"pub-") {
					continue
				}
				r := providers.OwnedResource{Kind: providers.ResourcePrivateIP, ID: deref(nic.ID) + "/ipConfigurations/" + deref(c.Name), IP: cfgIP(c), Owner: providers.Owner{Cluster: cluster}}
				if nic.Properties != nil && nic.Properties.VirtualMachine != nil {
					r.InstanceID = deref(nic.Properties.VirtualMachine.ID)
				}
				out = append(out, r)
			}
		}
	}
	pips := p.c.PublicIPAddresses.NewListPager(p.o.ResourceGroup, nil)
	for pips.More() {
		page, err := pips.NextPage(ctx)
		if err != nil {
			return nil, classify("listing public IPs", err)
		}
		for _, pip := range page.Value {
			if !ownedBy(pip.Tags, cluster) {
				continue
			}
			r := providers.OwnedResource{Kind: providers.ResourcePublicIP, ID: deref(pip.ID), Owner: providers.Owner{Cluster: cluster, Gateway: deref(pip.Tags[TagOwner])}}
			if pip.Properties != nil {
				r.IP, _ = netip.ParseAddr(deref(pip.Properties.IPAddress))
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// ReleaseOwned implements providers.Provider.
func (p *Provider) ReleaseOwned(ctx context.Context, res providers.OwnedResource) error {
	op := "releasing owned " + res.ID
	if res.ID == "" {
		owned, err := p.ListOwned(ctx, res.Owner.Cluster)
		if err != nil {
			return err
		}
		for _, o := range owned {
			if o.Kind == res.Kind && o.IP == res.IP {
				res.ID = o.ID
			}
		}
		if res.ID == "" {
			return &providers.Error{Kind: providers.KindPermission, Op: "releasing owned " + res.IP.String(), Code: "NotOwned",
				Err: fmt.Errorf("%s is not a resource of cluster %s", res.IP, res.Owner.Cluster)}
		}
		op = "releasing owned " + res.ID
	}
	switch res.Kind {
	case providers.ResourcePrivateIP:
		n, cfg, ok := parseNICID(res.ID)
		if !ok || cfg == "" {
			return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("not an ipConfiguration ID")}
		}
		if !strings.HasPrefix(cfg, "egressd-"+clusterHash(res.Owner.Cluster)+"-") {
			return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: errors.New("ipConfiguration not named for this cluster")}
		}
		_, err := p.removeConfig(ctx, n, cfg)
		return err
	case providers.ResourcePublicIP:
		parts := strings.Split(strings.Trim(res.ID, "/"), "/")
		if len(parts) != 8 {
			return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("not a public IP ID")}
		}
		return p.deletePublicIP(ctx, parts[3], parts[7], res.Owner.Cluster)
	}
	return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("no such resource kind on Azure")}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
