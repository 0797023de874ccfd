// Package gcp is egressd's Compute Engine provider: egress IPs are /32 alias IP ranges on a
// node's network interface (instances.updateNetworkInterface with the NIC fingerprint), each
// backed by a labelled static internal address reservation that both keeps the address from
// being handed to another VM and marks it as this cluster's for garbage collection (alias
// ranges themselves carry no labels). Public egress binds a labelled static external address
// through the NIC's single access config.
//
// It owns the cloud.google.com/go/compute SDK; nothing else in egressd imports it.
package gcp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	compute "cloud.google.com/go/compute/apiv1"
	computepb "cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/iterator"
	"google.golang.org/protobuf/proto"

	"github.com/egressd/egressd/providers"
)

// Label keys (GCP label keys allow only lowercase letters, digits, '-' and '_').
const (
	LabelCluster = "egressd-io-cluster"
	LabelOwner   = "egressd-io-owner"

	// accessConfigPrefix starts the name of the access config egressd creates; the rest is
	// the egress IP it serves, so a NIC's access config says which egress IP it belongs to.
	accessConfigPrefix = "egressd-nat-"
	// defaultMaxAliasRanges per NIC when the configuration does not say.
	defaultMaxAliasRanges = 10
)

// Options tune the provider.
type Options struct {
	// Project used when a node reference carries none.
	Project string
	// MaxAliasRangesPerInterface; 0 means 10.
	MaxAliasRangesPerInterface int
	// RetryBudget per step; 0 means 30s.
	RetryBudget time.Duration
}

// Provider implements providers.Provider for GCP.
type Provider struct {
	c          Clients
	project    string
	maxAliases int
	budget     time.Duration

	locksMu sync.Mutex
	locks   map[string]*sync.Mutex
	// gens counts this provider's mutations per instance, so that a read taken before the
	// instance lock is known to be still current (no extra instances.get) or is discarded.
	gens map[string]uint64

	statsMu sync.Mutex
	last    MoveWindow
}

// MoveWindow is how long a move left the address (and its public IP) on no instance, as the
// provider observed it: from the removal operation reported DONE to the addition reported
// DONE.
type MoveWindow struct {
	IP      netip.Addr
	Private time.Duration
	Public  time.Duration
}

var _ providers.Provider = (*Provider)(nil)

// New returns a provider using clients.
func New(c Clients, o Options) *Provider {
	p := &Provider{c: c, project: o.Project, maxAliases: o.MaxAliasRangesPerInterface, budget: o.RetryBudget, locks: map[string]*sync.Mutex{}, gens: map[string]uint64{}}
	if p.maxAliases <= 0 {
		p.maxAliases = defaultMaxAliasRanges
	}
	if p.budget <= 0 {
		p.budget = defaultRetryBudget
	}
	return p
}

// Name implements providers.Provider.
func (p *Provider) Name() string { return "gcp" }

// LastMoveWindow returns the window of the last MoveIP that moved an address.
func (p *Provider) LastMoveWindow() MoveWindow {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	return p.last
}

// ---- references and names ----

type instanceRef struct{ project, zone, name string }

func (r instanceRef) key() string { return r.project + "/" + r.zone + "/" + r.name }
func (r instanceRef) id() string {
	return fmt.Sprintf("projects/%s/zones/%s/instances/%s", r.project, r.zone, r.name)
}
func (r instanceRef) region() string { return zoneRegion(r.zone) }

func zoneRegion(zone string) string {
	if i := strings.LastIndex(zone, "-"); i > 0 {
		return zone[:i]
	}
	return zone
}

// parseProviderID parses gce://project/zone/instance.
func (p *Provider) ref(n providers.NodeRef) (instanceRef, error) {
	if rest, ok := strings.CutPrefix(n.ProviderID, "gce://"); ok {
		parts := strings.Split(rest, "/")
		if len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != "" {
			return instanceRef{parts[0], parts[1], parts[2]}, nil
		}
		return instanceRef{}, &providers.Error{Kind: providers.KindNotFound, Op: "parsing providerID " + n.ProviderID, Err: errors.New("want gce://project/zone/instance")}
	}
	if n.ProviderID == "" && n.Zone != "" && n.Name != "" && p.project != "" {
		return instanceRef{p.project, n.Zone, n.Name}, nil
	}
	return instanceRef{}, &providers.Error{Kind: providers.KindNotFound, Op: "parsing providerID " + n.ProviderID, Err: errors.New("not a GCE node")}
}

// parseInstanceID parses projects/P/zones/Z/instances/N or a self link.
func parseInstanceID(s string) (instanceRef, bool) {
	i := strings.Index(s, "projects/")
	if i < 0 {
		return instanceRef{}, false
	}
	parts := strings.Split(s[i:], "/")
	if len(parts) != 6 || parts[2] != "zones" || parts[4] != "instances" {
		return instanceRef{}, false
	}
	return instanceRef{parts[1], parts[3], parts[5]}, true
}

// labelValue makes s a valid label value: lowercase letters, digits, '-', '_', at most 63.
func labelValue(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return string(b)
}

func labels(o providers.Owner) map[string]string {
	return map[string]string{LabelCluster: labelValue(o.Cluster), LabelOwner: labelValue(o.Gateway)}
}

func ownedBy(l map[string]string, cluster string) bool {
	return l[LabelCluster] != "" && l[LabelCluster] == labelValue(cluster)
}

// Address resource names are derived from the cluster and the IP, so that retries after a
// crash or an ambiguous error find the resource instead of creating a second one.
func clusterHash(cluster string) string {
	h := sha256.Sum256([]byte(cluster))
	return hex.EncodeToString(h[:4])
}

func internalName(cluster string, ip netip.Addr) string {
	return "egressd-" + clusterHash(cluster) + "-" + strings.ReplaceAll(ip.String(), ".", "-")
}

func publicName(cluster string, ip netip.Addr) string {
	return "egressd-" + clusterHash(cluster) + "-pub-" + strings.ReplaceAll(ip.String(), ".", "-")
}

func (p *Provider) gen(key string) uint64 {
	p.locksMu.Lock()
	defer p.locksMu.Unlock()
	return p.gens[key]
}

func (p *Provider) bump(key string) {
	p.locksMu.Lock()
	p.gens[key]++
	p.locksMu.Unlock()
}

// cachedRead is an instance read with the generation it was taken at.
type cachedRead struct {
	inst *computepb.Instance
	gen  uint64
}

func (p *Provider) read(ctx context.Context, r instanceRef) (cachedRead, error) {
	g := p.gen(r.key())
	inst, err := p.getInstance(ctx, r)
	return cachedRead{inst, g}, err
}

func (p *Provider) lock(key string) func() {
	p.locksMu.Lock()
	m := p.locks[key]
	if m == nil {
		m = &sync.Mutex{}
		p.locks[key] = m
	}
	p.locksMu.Unlock()
	m.Lock()
	return m.Unlock
}

// ---- SDK wrappers (each retried within the budget) ----

func (p *Provider) getInstance(ctx context.Context, r instanceRef) (*computepb.Instance, error) {
	var inst *computepb.Instance
	err := p.retry(ctx, "getting instance "+r.id(), func() error {
		var err error
		inst, err = p.c.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name})
		return err
	})
	return inst, err
}

func (p *Provider) getAddress(ctx context.Context, project, region, name string) (*computepb.Address, error) {
	var a *computepb.Address
	err := p.retry(ctx, "getting address "+name, func() error {
		var err error
		a, err = p.c.Addresses.Get(ctx, &computepb.GetAddressRequest{Project: project, Region: region, Address: name})
		return err
	})
	if providers.IsNotFound(err) {
		return nil, nil
	}
	return a, err
}

func (p *Provider) waitZone(ctx context.Context, op string, r instanceRef, o *compute.Operation) error {
	pb := o.Proto()
	for pb.GetStatus() != computepb.Operation_DONE {
		var next *computepb.Operation
		err := p.retry(ctx, op+": waiting for "+pb.GetName(), func() error {
			var err error
			next, err = p.c.ZoneOperations.Wait(ctx, &computepb.WaitZoneOperationRequest{Project: r.project, Zone: r.zone, Operation: pb.GetName()})
			return err
		})
		if err != nil {
			return err
		}
		pb = next
	}
	return opError(op, pb)
}

func (p *Provider) waitRegion(ctx context.Context, op, project, region string, o *compute.Operation) error {
	pb := o.Proto()
	for pb.GetStatus() != computepb.Operation_DONE {
		var next *computepb.Operation
		err := p.retry(ctx, op+": waiting for "+pb.GetName(), func() error {
			var err error
			next, err = p.c.RegionOperations.Wait(ctx, &computepb.WaitRegionOperationRequest{Project: project, Region: region, Operation: pb.GetName()})
			return err
		})
		if err != nil {
			return err
		}
		pb = next
	}
	return opError(op, pb)
}

// ---- NIC helpers ----

func nicByName(inst *computepb.Instance, name string) *computepb.NetworkInterface {
	for _, n := range inst.GetNetworkInterfaces() {
		if n.GetName() == name {
			return n
		}
	}
	return nil
}

// egressNIC picks the interface for egress IPs: nic0, or with a dedicated interface the last
// one (GCE cannot hot-add interfaces; a dedicated one must exist when the node is created).
func egressNIC(inst *computepb.Instance, mode providers.InterfaceMode) (*computepb.NetworkInterface, error) {
	nics := inst.GetNetworkInterfaces()
	if len(nics) == 0 {
		return nil, fmt.Errorf("instance %s has no network interface", inst.GetName())
	}
	if mode == providers.InterfaceDedicated {
		if len(nics) < 2 {
			return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: "choosing a dedicated interface on " + inst.GetName(), Code: "DedicatedInterfaceMissing",
				Err: errors.New("GCE cannot attach interfaces to a running instance; create the node with a second NIC")}
		}
		return nics[len(nics)-1], nil
	}
	return nics[0], nil
}

func aliasHas(n *computepb.NetworkInterface, ip netip.Addr) bool {
	for _, a := range n.GetAliasIpRanges() {
		if pr, err := parseRange(a.GetIpCidrRange()); err == nil && pr.Bits() == 32 && pr.Addr() == ip {
			return true
		}
	}
	return false
}

func parseRange(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}

// findHolder returns the interface of inst holding ip, or nil.
func findHolder(inst *computepb.Instance, ip netip.Addr) *computepb.NetworkInterface {
	for _, n := range inst.GetNetworkInterfaces() {
		if aliasHas(n, ip) {
			return n
		}
	}
	return nil
}

// updateAliases is the read-modify-write of one NIC's alias ranges, serialised per instance:
// it reads the instance (or uses cached for the first attempt), lets change compute the new
// list, sends it with the fingerprint it read and waits for the zone operation. A 412 (the
// NIC changed under us) re-reads and tries again within the retry budget. It returns the
// instance as last read.
func (p *Provider) updateAliases(ctx context.Context, r instanceRef, nicName string, cached cachedRead,
	change func(n *computepb.NetworkInterface) ([]*computepb.AliasIpRange, bool, error)) (*computepb.Instance, error) {
	defer p.lock(r.key())()
	op := "updating alias IP ranges of " + r.id() + " " + nicName
	inst := cached.inst
	if cached.gen != p.gen(r.key()) {
		inst = nil // we changed the instance since this read
	}
	err := p.retry(ctx, op, func() error {
		if inst == nil {
			var err error
			inst, err = p.c.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name})
			if err != nil {
				return err
			}
		}
		n := nicByName(inst, nicName)
		if n == nil {
			return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("no such interface")}
		}
		ranges, changed, err := change(n)
		if err != nil || !changed {
			return err
		}
		o, err := p.c.Instances.UpdateNetworkInterface(ctx, &computepb.UpdateNetworkInterfaceInstanceRequest{
			Project: r.project, Zone: r.zone, Instance: r.name, NetworkInterface: nicName,
			NetworkInterfaceResource: &computepb.NetworkInterface{Fingerprint: n.Fingerprint, AliasIpRanges: ranges},
		})
		inst = nil // whatever happens next, the cached read is stale
		p.bump(r.key())
		if err != nil {
			return err
		}
		return p.waitZone(ctx, op, r, o)
	})
	return inst, err
}

func addAlias(ip netip.Addr, max int) func(n *computepb.NetworkInterface) ([]*computepb.AliasIpRange, bool, error) {
	return func(n *computepb.NetworkInterface) ([]*computepb.AliasIpRange, bool, error) {
		if aliasHas(n, ip) {
			return nil, false, nil
		}
		if len(n.GetAliasIpRanges()) >= max {
			return nil, false, &providers.Error{Kind: providers.KindCapacityExhausted, Op: "adding alias " + ip.String(), Code: "AliasIpRangesLimit",
				Err: fmt.Errorf("interface %s already has %d alias IP ranges", n.GetName(), len(n.GetAliasIpRanges()))}
		}
		out := append([]*computepb.AliasIpRange(nil), n.GetAliasIpRanges()...)
		out = append(out, &computepb.AliasIpRange{IpCidrRange: proto.String(ip.String() + "/32")})
		return out, true, nil
	}
}

func removeAlias(ip netip.Addr) func(n *computepb.NetworkInterface) ([]*computepb.AliasIpRange, bool, error) {
	return func(n *computepb.NetworkInterface) ([]*computepb.AliasIpRange, bool, error) {
		if !aliasHas(n, ip) {
			return nil, false, nil
		}
		var out []*computepb.AliasIpRange
		for _, a := range n.GetAliasIpRanges() {
			if pr, err := parseRange(a.GetIpCidrRange()); err == nil && pr.Bits() == 32 && pr.Addr() == ip {
				continue
			}
			out = append(out, a)
		}
		return out, true, nil
	}
}

// ---- reservations ----

// ensureAddress inserts the named address or finds it when it already exists (a retry after
// an ambiguous error, another controller replica, a crash). It returns the address as read
// back when read is set or the address pre-existed.
func (p *Provider) ensureAddress(ctx context.Context, project, region string, want *computepb.Address, read bool, owner providers.Owner) (*computepb.Address, error) {
	name := want.GetName()
	op := "reserving address " + name
	var existed bool
	err := p.retry(ctx, op, func() error {
		o, err := p.c.Addresses.Insert(ctx, &computepb.InsertAddressRequest{Project: project, Region: region, AddressResource: want})
		if isStatus(err, 409) {
			existed = true
			return nil
		}
		if err != nil {
			return err
		}
		return p.waitRegion(ctx, op, project, region, o)
	})
	if err != nil {
		return nil, err
	}
	if !existed && !read {
		return want, nil
	}
	var a *computepb.Address
	err = p.retry(ctx, op, func() error {
		var err error
		a, err = p.c.Addresses.Get(ctx, &computepb.GetAddressRequest{Project: project, Region: region, Address: name})
		if isStatus(err, 404) {
			// Created (or reported existing) but not visible yet.
			return &providers.Error{Kind: providers.KindConflict, Op: op, Code: errCodeNotVisibleYet, Err: err}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if !ownedBy(a.GetLabels(), owner.Cluster) {
		return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Code: "AddressNotOwned", Err: fmt.Errorf("address %s exists without this cluster's label", name)}
	}
	return a, nil
}

func (p *Provider) deleteAddress(ctx context.Context, project, region, name string) error {
	op := "deleting address " + name
	return p.retry(ctx, op, func() error {
		o, err := p.c.Addresses.Delete(ctx, &computepb.DeleteAddressRequest{Project: project, Region: region, Address: name})
		if isStatus(err, 404) {
			return nil
		}
		if err != nil {
			return err
		}
		return p.waitRegion(ctx, op, project, region, o)
	})
}

// ---- access configs ----

func accessConfigName(ip netip.Addr) string {
	return accessConfigPrefix + strings.ReplaceAll(ip.String(), ".", "-")
}

func natConfig(n *computepb.NetworkInterface, natIP string) *computepb.AccessConfig {
	for _, ac := range n.GetAccessConfigs() {
		if ac.GetNatIP() == natIP {
			return ac
		}
	}
	return nil
}

// bindPublic binds natIP to the instance's NIC through an access config. A NIC has at most
// one access config: when it has another one, the node cannot take this public IP.
func (p *Provider) bindPublic(ctx context.Context, r instanceRef, nicName string, ip netip.Addr, natIP, tier string) error {
	defer p.lock(r.key())()
	op := "binding " + natIP + " to " + r.id() + " " + nicName
	return p.retry(ctx, op, func() error {
		inst, err := p.c.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name})
		if err != nil {
			return err
		}
		n := nicByName(inst, nicName)
		if n == nil {
			return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("no such interface")}
		}
		if natConfig(n, natIP) != nil {
			return nil
		}
		if len(n.GetAccessConfigs()) > 0 {
			return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "AccessConfigInUse",
				Err: fmt.Errorf("interface already has access config %q (%s); GCE allows one per interface", n.GetAccessConfigs()[0].GetName(), n.GetAccessConfigs()[0].GetNatIP())}
		}
		ac := &computepb.AccessConfig{Name: proto.String(accessConfigName(ip)), Type: proto.String("ONE_TO_ONE_NAT"), NatIP: proto.String(natIP)}
		if tier != "" {
			ac.NetworkTier = proto.String(tier)
		}
		o, err := p.c.Instances.AddAccessConfig(ctx, &computepb.AddAccessConfigInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name, NetworkInterface: nicName, AccessConfigResource: ac})
		p.bump(r.key())
		if isStatus(err, 400) && strings.Contains(apiErr(err).Message, "access config") {
			// The read was older than the interface (describe lag): read again.
			return &providers.Error{Kind: providers.KindConflict, Op: op, Code: errCodeNotVisibleYet, Err: err}
		}
		if err != nil {
			return err
		}
		return p.waitZone(ctx, op, r, o)
	})
}

// unbindPublic removes the access config carrying natIP from the instance, if any.
func (p *Provider) unbindPublic(ctx context.Context, r instanceRef, natIP string) error {
	defer p.lock(r.key())()
	op := "unbinding " + natIP + " from " + r.id()
	return p.retry(ctx, op, func() error {
		inst, err := p.c.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name})
		if isStatus(err, 404) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, n := range inst.GetNetworkInterfaces() {
			ac := natConfig(n, natIP)
			if ac == nil {
				continue
			}
			o, err := p.c.Instances.DeleteAccessConfig(ctx, &computepb.DeleteAccessConfigInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name, NetworkInterface: n.GetName(), AccessConfig: ac.GetName()})
			p.bump(r.key())
			if err != nil {
				return err
			}
			return p.waitZone(ctx, op, r, o)
		}
		return nil
	})
}

// ensurePublic reserves (or finds) the IP's external address and binds it to the NIC.
func (p *Provider) ensurePublic(ctx context.Context, r instanceRef, n *computepb.NetworkInterface, ip netip.Addr, owner providers.Owner) (*computepb.Address, error) {
	// Steady state: the interface already carries egressd's access config; no address call.
	for _, ac := range n.GetAccessConfigs() {
		if ac.GetName() == accessConfigName(ip) && ac.GetNatIP() != "" {
			return &computepb.Address{Name: proto.String(publicName(owner.Cluster, ip)), Address: ac.NatIP, NetworkTier: ac.NetworkTier}, nil
		}
	}
	want := &computepb.Address{
		Name: proto.String(publicName(owner.Cluster, ip)), AddressType: proto.String("EXTERNAL"),
		NetworkTier: proto.String("PREMIUM"), Labels: labels(owner),
	}
	a, err := p.ensureAddress(ctx, r.project, r.region(), want, true, owner)
	if err != nil {
		return nil, err
	}
	if natConfig(n, a.GetAddress()) != nil {
		return a, nil
	}
	for _, u := range a.GetUsers() {
		if ur, ok := parseInstanceID(u); ok && ur != r {
			return nil, &providers.Error{Kind: providers.KindConflict, Op: "binding public IP of " + ip.String(), Code: "AddressInUse", Err: fmt.Errorf("%s is used by %s", a.GetAddress(), u)}
		}
	}
	if err := p.bindPublic(ctx, r, n.GetName(), ip, a.GetAddress(), a.GetNetworkTier()); err != nil {
		return nil, err
	}
	return a, nil
}

func (p *Provider) assignment(node string, r instanceRef, n *computepb.NetworkInterface, ip netip.Addr, pub *computepb.Address) *providers.Assignment {
	if node == "" {
		node = r.name
	}
	a := &providers.Assignment{
		IP: ip, Node: node, InstanceID: r.id(), InterfaceID: n.GetName(), Subnet: n.GetSubnetwork(),
		Attachment: n.GetName() + ":" + ip.String() + "/32",
	}
	if pub != nil {
		a.PublicIP, _ = netip.ParseAddr(pub.GetAddress())
		a.PublicAllocation = fmt.Sprintf("regions/%s/addresses/%s", r.region(), pub.GetName())
		a.PublicAssociation = n.GetName() + "/" + accessConfigName(ip)
	}
	return a
}

// ---- contract ----

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

type subnetID struct{ project, region, name string }

func subnetRef(link string) (subnetID, bool) {
	i := strings.Index(link, "projects/")
	if i < 0 {
		return subnetID{}, false
	}
	parts := strings.Split(link[i:], "/")
	if len(parts) != 6 || parts[2] != "regions" || parts[4] != "subnetworks" {
		return subnetID{}, false
	}
	return subnetID{parts[1], parts[3], parts[5]}, true
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func checkIP(op string, ip netip.Addr) error {
	if !ip.Is4() {
		return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "IPv6Unsupported", Err: errors.New("GCP alias IP ranges are IPv4 only")}
	}
	return nil
}

// EnsureIP implements providers.Provider. Steady state (already held): one instances.get.
// First time: instances.get, addresses.insert (internal reservation) + regionOperations.wait,
// updateNetworkInterface + zoneOperations.wait; with Public, the external address insert +
// wait + get, instances.get, addAccessConfig + wait.
func (p *Provider) EnsureIP(ctx context.Context, req providers.EnsureRequest) (*providers.Assignment, error) {
	op := "ensuring " + req.IP.String() + " on " + req.Node.Name
	if err := checkIP(op, req.IP); err != nil {
		return nil, err
	}
	r, err := p.ref(req.Node)
	if err != nil {
		return nil, err
	}
	rd, err := p.read(ctx, r)
	if err != nil {
		return nil, err
	}
	inst := rd.inst
	n, err := egressNIC(inst, req.Interface)
	if err != nil {
		return nil, err
	}
	if req.Subnet != "" && req.Subnet != n.GetSubnetwork() && !strings.HasSuffix(n.GetSubnetwork(), "/"+req.Subnet) {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: op, Code: "SubnetMismatch", Err: fmt.Errorf("interface %s is in %s, not %s", n.GetName(), n.GetSubnetwork(), req.Subnet)}
	}
	if !aliasHas(n, req.IP) {
		if len(n.GetAliasIpRanges()) >= p.maxAliases {
			return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "AliasIpRangesLimit", Err: fmt.Errorf("interface %s holds %d alias IP ranges", n.GetName(), len(n.GetAliasIpRanges()))}
		}
		res, err := p.ensureAddress(ctx, r.project, r.region(), &computepb.Address{
			Name: proto.String(internalName(req.Owner.Cluster, req.IP)), Address: proto.String(req.IP.String()),
			AddressType: proto.String("INTERNAL"), Purpose: proto.String("GCE_ENDPOINT"),
			Subnetwork: proto.String(n.GetSubnetwork()), Labels: labels(req.Owner),
		}, false, req.Owner)
		if err != nil {
			return nil, err
		}
		for _, u := range res.GetUsers() {
			if ur, ok := parseInstanceID(u); ok && ur != r {
				return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Code: "AddressInUse", Err: fmt.Errorf("%s is held by %s (use MoveIP)", req.IP, u)}
			}
		}
		if _, err := p.updateAliases(ctx, r, n.GetName(), rd, addAlias(req.IP, p.maxAliases)); err != nil {
			return nil, err
		}
	}
	var pub *computepb.Address
	if req.Public {
		if pub, err = p.ensurePublic(ctx, r, n, req.IP, req.Owner); err != nil {
			return nil, err
		}
	}
	return p.assignment(req.Node.Name, r, n, req.IP, pub), nil
}

// MoveIP implements providers.Provider. GCP has no atomic reassignment: the alias is removed
// from the holder, then added to the target (a reserved address keeps anyone else from
// taking it in between). The target is read before the removal so that the addition follows
// the removal's operation immediately; the public IP's access config moves after the alias.
func (p *Provider) MoveIP(ctx context.Context, req providers.MoveRequest) (*providers.Assignment, error) {
	ip := req.Current.IP
	op := "moving " + ip.String() + " to " + req.To.Name
	if err := checkIP(op, ip); err != nil {
		return nil, err
	}
	to, err := p.ref(req.To)
	if err != nil {
		return nil, err
	}
	res, err := p.getAddress(ctx, to.project, to.region(), internalName(req.Owner.Cluster, ip))
	if err != nil {
		return nil, err
	}
	if res == nil || !ownedBy(res.GetLabels(), req.Owner.Cluster) {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: fmt.Errorf("%s has no address reservation of this cluster", ip)}
	}
	trd, err := p.read(ctx, to)
	if err != nil {
		return nil, err
	}
	target := trd.inst
	n, err := egressNIC(target, req.Interface)
	if err != nil {
		return nil, err
	}
	if h := findHolder(target, ip); h != nil {
		n = h
	}
	wantPublic := req.Current.PublicIP.IsValid() || req.Current.PublicAllocation != ""
	var pub *computepb.Address
	if wantPublic {
		if pub, err = p.getAddress(ctx, to.project, to.region(), publicName(req.Owner.Cluster, ip)); err != nil {
			return nil, err
		}
	}
	if aliasHas(n, ip) && (pub == nil || natConfig(n, pub.GetAddress()) != nil) {
		return p.assignment(req.To.Name, to, n, ip, pub), nil
	}
	if !aliasHas(n, ip) && len(n.GetAliasIpRanges()) >= p.maxAliases {
		return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "AliasIpRangesLimit", Err: fmt.Errorf("interface %s of %s is full", n.GetName(), to.name)}
	}
	if pub != nil && natConfig(n, pub.GetAddress()) == nil && len(n.GetAccessConfigs()) > 0 {
		return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "AccessConfigInUse", Err: fmt.Errorf("interface %s of %s already has an access config", n.GetName(), to.name)}
	}

	// Holders other than the target, from the reservation's users (the cloud's truth) and
	// the recorded assignment (in case the reservation's users lag).
	holders := map[instanceRef]bool{}
	for _, u := range res.GetUsers() {
		if ur, ok := parseInstanceID(u); ok && ur != to {
			holders[ur] = true
		}
	}
	if cr, ok := parseInstanceID(req.Current.InstanceID); ok && cr != to {
		holders[cr] = true
	}
	var pubRemoved, aliasRemoved time.Time
	for h := range holders {
		if pub != nil {
			if err := p.unbindPublic(ctx, h, pub.GetAddress()); err != nil {
				return nil, err
			}
			pubRemoved = time.Now()
		}
		hrd, err := p.read(ctx, h)
		hinst := hrd.inst
		if providers.IsNotFound(err) {
			continue // the old node is gone, and its alias with it
		}
		if err != nil {
			return nil, err
		}
		hn := findHolder(hinst, ip)
		if hn == nil {
			continue
		}
		if _, err := p.updateAliases(ctx, h, hn.GetName(), hrd, removeAlias(ip)); err != nil {
			return nil, err
		}
		aliasRemoved = time.Now()
	}
	if _, err := p.updateAliases(ctx, to, n.GetName(), trd, addAlias(ip, p.maxAliases)); err != nil {
		return nil, err
	}
	w := MoveWindow{IP: ip}
	if !aliasRemoved.IsZero() {
		w.Private = time.Since(aliasRemoved)
	}
	if pub != nil {
		if err := p.bindPublic(ctx, to, n.GetName(), ip, pub.GetAddress(), pub.GetNetworkTier()); err != nil {
			return nil, err
		}
		if !pubRemoved.IsZero() {
			w.Public = time.Since(pubRemoved)
		}
	}
	p.statsMu.Lock()
	p.last = w
	p.statsMu.Unlock()
	return p.assignment(req.To.Name, to, n, ip, pub), nil
}

// releaseRegion finds the region of a recorded assignment.
func (p *Provider) releaseTarget(cur providers.Assignment) (project, region string, holder *instanceRef) {
	project = p.project
	if r, ok := parseInstanceID(cur.InstanceID); ok {
		return r.project, r.region(), &r
	}
	if s, ok := subnetRef(cur.Subnet); ok {
		return s.project, s.region, nil
	}
	return project, "", nil
}

// ReleaseIP implements providers.Provider: unbinds and deletes the public address, removes
// the alias from whichever instance holds it, and deletes the internal reservation last (it
// is the ownership marker, so a crash part-way leaves something GC can find).
func (p *Provider) ReleaseIP(ctx context.Context, req providers.ReleaseRequest) error {
	ip := req.Current.IP
	op := "releasing " + ip.String()
	if err := checkIP(op, ip); err != nil {
		return err
	}
	project, region, recorded := p.releaseTarget(req.Current)
	if region == "" {
		return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("the assignment names no instance or subnet to find the region by")}
	}
	res, err := p.getAddress(ctx, project, region, internalName(req.Owner.Cluster, ip))
	if err != nil {
		return err
	}
	if res != nil && !ownedBy(res.GetLabels(), req.Owner.Cluster) {
		return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: fmt.Errorf("address %s is not labelled for cluster %s", res.GetName(), req.Owner.Cluster)}
	}
	pub, err := p.getAddress(ctx, project, region, publicName(req.Owner.Cluster, ip))
	if err != nil {
		return err
	}
	if pub != nil && !ownedBy(pub.GetLabels(), req.Owner.Cluster) {
		return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: fmt.Errorf("address %s is not labelled for cluster %s", pub.GetName(), req.Owner.Cluster)}
	}
	holders := map[instanceRef]bool{}
	if res != nil {
		for _, u := range res.GetUsers() {
			if ur, ok := parseInstanceID(u); ok {
				holders[ur] = true
			}
		}
	}
	if recorded != nil {
		holders[*recorded] = true
	}
	if pub != nil {
		for _, u := range pub.GetUsers() {
			if ur, ok := parseInstanceID(u); ok {
				if err := p.unbindPublic(ctx, ur, pub.GetAddress()); err != nil {
					return err
				}
			}
		}
	}
	for h := range holders {
		hrd, err := p.read(ctx, h)
		hinst := hrd.inst
		if providers.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		hn := findHolder(hinst, ip)
		if hn == nil {
			continue
		}
		if res == nil {
			// An alias with no reservation of ours was not created by this cluster.
			return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: fmt.Errorf("%s on %s has no reservation of cluster %s", ip, h.id(), req.Owner.Cluster)}
		}
		if _, err := p.updateAliases(ctx, h, hn.GetName(), hrd, removeAlias(ip)); err != nil {
			return err
		}
	}
	if pub != nil {
		if err := p.deleteAddress(ctx, project, region, pub.GetName()); err != nil {
			return err
		}
	}
	if res != nil {
		if err := p.deleteAddress(ctx, project, region, res.GetName()); err != nil {
			return err
		}
	}
	return nil
}

// ListOwned implements providers.Provider: one addresses.aggregatedList filtered on the
// cluster label. Alias ranges carry no labels; a private egress IP is this cluster's exactly
// when its internal reservation is, and its holder is the reservation's user.
func (p *Provider) ListOwned(ctx context.Context, cluster string) ([]providers.OwnedResource, error) {
	var out []providers.OwnedResource
	op := "listing addresses of cluster " + cluster
	err := p.retry(ctx, op, func() error {
		out = out[:0]
		it := p.c.Addresses.AggregatedList(ctx, &computepb.AggregatedListAddressesRequest{
			Project: p.project, Filter: proto.String(fmt.Sprintf("labels.%s = %q", LabelCluster, labelValue(cluster))),
		})
		for {
			pair, err := it.Next()
			if errors.Is(err, iterator.Done) {
				return nil
			}
			if err != nil {
				return err
			}
			for _, a := range pair.Value.GetAddresses() {
				if !ownedBy(a.GetLabels(), cluster) {
					continue // never trust the filter alone
				}
				res := providers.OwnedResource{Kind: providers.ResourcePrivateIP, ID: regionOf(a) + "/addresses/" + a.GetName(),
					Owner: providers.Owner{Cluster: a.GetLabels()[LabelCluster], Gateway: a.GetLabels()[LabelOwner]}}
				if a.GetAddressType() == "EXTERNAL" {
					res.Kind = providers.ResourcePublicIP
				}
				res.IP, _ = netip.ParseAddr(a.GetAddress())
				for _, u := range a.GetUsers() {
					if ur, ok := parseInstanceID(u); ok {
						res.InstanceID = ur.id()
					}
				}
				if t, err := time.Parse(time.RFC3339Nano, a.GetCreationTimestamp()); err == nil {
					res.Created = t
				}
				out = append(out, res)
			}
		}
	})
	return out, err
}

func regionOf(a *computepb.Address) string {
	reg := a.GetRegion()
	if i := strings.LastIndex(reg, "/"); i >= 0 {
		reg = reg[i+1:]
	}
	return "regions/" + reg
}

// ReleaseOwned implements providers.Provider: detaches the address from its users (alias or
// access config) and deletes it, after checking the label again.
func (p *Provider) ReleaseOwned(ctx context.Context, res providers.OwnedResource) error {
	op := "releasing owned " + res.ID
	if res.ID == "" {
		id, err := findOwned(ctx, p, res)
		if err != nil {
			return err
		}
		res.ID = id
	}
	parts := strings.Split(res.ID, "/")
	if len(parts) != 4 || parts[0] != "regions" || parts[2] != "addresses" {
		return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("want regions/R/addresses/NAME")}
	}
	region, name := parts[1], parts[3]
	a, err := p.getAddress(ctx, p.project, region, name)
	if err != nil || a == nil {
		return err
	}
	if !ownedBy(a.GetLabels(), res.Owner.Cluster) {
		return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: fmt.Errorf("address %s is not labelled for cluster %s", name, res.Owner.Cluster)}
	}
	ip, _ := netip.ParseAddr(a.GetAddress())
	for _, u := range a.GetUsers() {
		ur, ok := parseInstanceID(u)
		if !ok {
			continue
		}
		if a.GetAddressType() == "EXTERNAL" {
			if err := p.unbindPublic(ctx, ur, a.GetAddress()); err != nil {
				return err
			}
			continue
		}
		hrd, err := p.read(ctx, ur)
		hinst := hrd.inst
		if providers.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		if hn := findHolder(hinst, ip); hn != nil {
			if _, err := p.updateAliases(ctx, ur, hn.GetName(), hrd, removeAlias(ip)); err != nil {
				return err
			}
		}
	}
	return p.deleteAddress(ctx, p.project, region, name)
}

// findOwned resolves a resource given by kind and address only (no ID) among the cluster's
// owned resources; one that is not listed is not the cluster's.
func findOwned(ctx context.Context, p providers.Provider, res providers.OwnedResource) (string, error) {
	owned, err := p.ListOwned(ctx, res.Owner.Cluster)
	if err != nil {
		return "", err
	}
	for _, o := range owned {
		if o.Kind == res.Kind && o.IP == res.IP {
			return o.ID, nil
		}
	}
	return "", &providers.Error{Kind: providers.KindPermission, Op: "releasing owned " + res.IP.String(), Code: "NotOwned",
		Err: fmt.Errorf("%s is not a resource of cluster %s", res.IP, res.Owner.Cluster)}
}
