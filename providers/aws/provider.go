// Package aws is the egressd provider for Amazon EC2: egress IPs are secondary private
// addresses on the node's primary ENI or on a dedicated ENI egressd creates and attaches, moved
// between nodes with AssignPrivateIpAddresses+AllowReassignment (the Elastic IP follows the
// address), with Elastic IPs for public egress. It owns every call to the EC2 SDK.
//
// Ownership. Everything egressd creates carries egressd.io/cluster and egressd.io/owner
// tags, and only tagged resources are ever released. A private address cannot be tagged, so
// its ownership is recorded on the interface holding it:
//   - on a dedicated ENI (tagged egressd.io/role=egress-interface and the cluster), every
//     secondary address is the cluster's: the ENI is egressd's alone;
//   - on any other ENI (the node's primary), a tag egressd.io/ip/<address> = <cluster>/<gateway>
//     marks the address as egressd's. The tag is written before the address is assigned, so a
//     crash leaves at worst a tag for an address the ENI does not hold, which is ignored: an
//     address is owned only when the ENI that holds it carries the record.
//
// A move leaves the old holder's record in place (a standing record): moving the address back
// is then one AssignPrivateIpAddresses, with no tag call on the critical path. Standing records
// go when the address is released (every record of it in the VPC), and when an ENI would pass
// EC2's 50 tags: the records of addresses it does not hold are pruned first.
//
// Describe calls are eventually consistent, so the provider also remembers, for its lifetime,
// the dedicated ENIs and Elastic IPs it created: a retry that does not see them yet reuses
// them instead of creating a second one.
package aws

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/egressd/egressd/providers"
)

// Tags egressd writes.
const (
	TagCluster   = "egressd.io/cluster"
	TagOwner     = "egressd.io/owner"
	TagRole      = "egressd.io/role"
	TagInstance  = "egressd.io/instance"
	TagPrivateIP = "egressd.io/private-ip"
	TagCreated   = "egressd.io/created"
	// TagIPPrefix + address, on a non-dedicated ENI, records the address as a cluster's.
	TagIPPrefix = "egressd.io/ip/"

	roleDedicated = "egress-interface"
	descDedicated = "egressd egress interface"
)

// Provider implements providers.Provider on EC2.
type Provider struct {
	api EC2API
	cfg Config

	mu sync.Mutex
	// dedicated and eips remember what this process created, keyed by cluster/instance and
	// cluster/address: EC2 describes may not show a new resource for a few seconds.
	dedicated map[string]dedicatedENI
	eips      map[string]publicIP
	// types caches instance type limits: they never change for a type name.
	types map[string]typeLimits
}

type dedicatedENI struct {
	iface *iface
}

type publicIP struct {
	Allocation string
	Public     netip.Addr
}

type typeLimits struct{ maxENIs, ipsPerENI int }

var _ providers.Provider = (*Provider)(nil)

// Name implements providers.Provider.
func (p *Provider) Name() string { return Name }

// VPC returns the VPC the provider works in.
func (p *Provider) VPC() string { return p.cfg.VPC }

// iface is the provider's view of one ENI.
type iface struct {
	ID, MAC, Subnet, Zone string
	Groups                []string
	Instance              string
	AttachmentID          string
	Device                int
	DeleteOnTermination   bool
	Primary               netip.Addr
	Secondary             []netip.Addr
	Assoc                 map[netip.Addr]assoc
	Tags                  map[string]string
}

type assoc struct {
	Public                  netip.Addr
	Allocation, Association string
}

func fromENI(n ec2types.NetworkInterface) *iface {
	f := &iface{ID: awssdk.ToString(n.NetworkInterfaceId), MAC: awssdk.ToString(n.MacAddress), Subnet: awssdk.ToString(n.SubnetId),
		Zone: awssdk.ToString(n.AvailabilityZone), Assoc: map[netip.Addr]assoc{}, Tags: map[string]string{}, Device: -1}
	for _, g := range n.Groups {
		f.Groups = append(f.Groups, awssdk.ToString(g.GroupId))
	}
	if a := n.Attachment; a != nil {
		f.Instance = awssdk.ToString(a.InstanceId)
		f.AttachmentID = awssdk.ToString(a.AttachmentId)
		f.Device = int(awssdk.ToInt32(a.DeviceIndex))
		f.DeleteOnTermination = awssdk.ToBool(a.DeleteOnTermination)
	}
	for _, t := range n.TagSet {
		f.Tags[awssdk.ToString(t.Key)] = awssdk.ToString(t.Value)
	}
	for _, pa := range n.PrivateIpAddresses {
		a, err := netip.ParseAddr(awssdk.ToString(pa.PrivateIpAddress))
		if err != nil {
			continue
		}
		if awssdk.ToBool(pa.Primary) {
			f.Primary = a
		} else {
			f.Secondary = append(f.Secondary, a)
		}
		if as := pa.Association; as != nil && as.AllocationId != nil {
			pub, _ := netip.ParseAddr(awssdk.ToString(as.PublicIp))
			f.Assoc[a] = assoc{Public: pub, Allocation: awssdk.ToString(as.AllocationId), Association: awssdk.ToString(as.AssociationId)}
		}
	}
	return f
}

func (f *iface) holds(a netip.Addr) bool { return slices.Contains(f.Secondary, a) }

func (f *iface) dedicatedOf(cluster string) bool {
	return f.Tags[TagRole] == roleDedicated && f.Tags[TagCluster] == cluster
}

// owner returns who owns address a on this interface, per the ownership rules above.
func (f *iface) owner(a netip.Addr) (providers.Owner, bool) {
	if f.Tags[TagRole] == roleDedicated && f.Tags[TagCluster] != "" {
		return providers.Owner{Cluster: f.Tags[TagCluster], Gateway: f.Tags[TagOwner]}, true
	}
	v, ok := f.Tags[TagIPPrefix+a.String()]
	if !ok {
		return providers.Owner{}, false
	}
	c, g, _ := strings.Cut(v, "/")
	return providers.Owner{Cluster: c, Gateway: g}, c != ""
}

func (f *iface) ownedBy(a netip.Addr, cluster string) bool {
	o, ok := f.owner(a)
	return ok && o.Cluster == cluster
}

func mode(f *iface) providers.InterfaceMode {
	if f.Tags[TagRole] == roleDedicated {
		return providers.InterfaceDedicated
	}
	return providers.InterfacePrimary
}

func (p *Provider) assignment(node string, f *iface, a netip.Addr) *providers.Assignment {
	out := &providers.Assignment{IP: a, Node: node, InstanceID: f.Instance, InterfaceID: f.ID, InterfaceMAC: f.MAC,
		Subnet: f.Subnet, Attachment: string(mode(f))}
	if as, ok := f.Assoc[a]; ok {
		out.PublicIP, out.PublicAllocation, out.PublicAssociation = as.Public, as.Allocation, as.Association
	}
	return out
}

// instanceID reads the instance ID from a providerID of the form aws:///<zone>/<instance>.
func instanceID(n providers.NodeRef) (string, error) {
	rest, ok := strings.CutPrefix(n.ProviderID, "aws://")
	i := strings.LastIndex(rest, "/")
	id := rest[i+1:]
	if !ok || !strings.HasPrefix(id, "i-") {
		return "", &providers.Error{Kind: providers.KindNotFound, Op: "reading instance of node " + n.Name,
			Err: fmt.Errorf("providerID %q is not aws:///<zone>/<instance-id>", n.ProviderID)}
	}
	return id, nil
}

func filter(name string, values ...string) ec2types.Filter {
	return ec2types.Filter{Name: awssdk.String(name), Values: values}
}

// nodeENIs returns the interfaces attached to an instance, by device index. One read call.
func (p *Provider) nodeENIs(ctx context.Context, inst string) ([]*iface, error) {
	out, err := p.api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{filter("attachment.instance-id", inst)}})
	if err != nil {
		return nil, classify("describing interfaces of "+inst, err)
	}
	var fs []*iface
	for _, n := range out.NetworkInterfaces {
		fs = append(fs, fromENI(n))
	}
	slices.SortFunc(fs, func(a, b *iface) int { return a.Device - b.Device })
	if len(fs) == 0 || fs[0].Device != 0 {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: "describing interfaces of " + inst,
			Err: fmt.Errorf("instance %s has no primary interface (terminated or unknown)", inst)}
	}
	return fs, nil
}

// holderOf returns the interface holding a as a secondary address in the VPC, or nil.
func (p *Provider) holderOf(ctx context.Context, a netip.Addr) (*iface, error) {
	out, err := p.api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
		filter("vpc-id", p.cfg.VPC), filter("addresses.private-ip-address", a.String())}})
	if err != nil {
		return nil, classify("finding the interface holding "+a.String(), err)
	}
	for _, n := range out.NetworkInterfaces {
		if f := fromENI(n); f.holds(a) || f.Primary == a {
			return f, nil
		}
	}
	return nil, nil
}

func validate(op string, owner providers.Owner, a netip.Addr) error {
	if !a.Is4() {
		return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: fmt.Errorf("address %v: EC2 secondary addresses here are IPv4", a)}
	}
	if owner.Cluster == "" || strings.Contains(owner.Cluster, "/") {
		return &providers.Error{Kind: providers.KindPermission, Op: op, Err: fmt.Errorf("owner cluster %q: required, without '/'", owner.Cluster)}
	}
	return nil
}

// EnsureIP implements providers.Provider. Calls, first time, primary ENI: one describe,
// CreateTags (ownership) and AssignPrivateIpAddresses; on a dedicated ENI that exists: one
// describe and AssignPrivateIpAddresses. When the node already holds the address: one describe.
func (p *Provider) EnsureIP(ctx context.Context, req providers.EnsureRequest) (*providers.Assignment, error) {
	op := fmt.Sprintf("ensuring %s on %s", req.IP, req.Node.Name)
	if err := validate(op, req.Owner, req.IP); err != nil {
		return nil, err
	}
	inst, err := instanceID(req.Node)
	if err != nil {
		return nil, err
	}
	enis, err := p.nodeENIs(ctx, inst)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var target *iface
	for _, f := range enis {
		if f.holds(req.IP) || f.Primary == req.IP {
			if !f.ownedBy(req.IP, req.Owner.Cluster) {
				return nil, &providers.Error{Kind: providers.KindConflict, Op: op,
					Err: fmt.Errorf("%s already holds %s, not as egressd's", f.ID, req.IP)}
			}
			target = f
		}
	}
	if target == nil {
		if req.Interface == providers.InterfaceDedicated {
			target, err = p.ensureDedicated(ctx, req.Owner, inst, req.Subnet, enis)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", op, err)
			}
		} else {
			target = enis[0]
		}
		if err := p.assign(ctx, req.Owner, target, req.IP, false); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	if req.Public {
		if err := p.ensurePublic(ctx, req.Owner, target, req.IP); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	return p.assignment(req.Node.Name, target, req.IP), nil
}

// assign puts a on f, recording ownership first when f is not a dedicated ENI (no tag call
// when f has a standing record of a from an earlier stay).
func (p *Provider) assign(ctx context.Context, owner providers.Owner, f *iface, a netip.Addr, reassign bool) error {
	if !f.dedicatedOf(owner.Cluster) {
		key, val := TagIPPrefix+a.String(), owner.Cluster+"/"+owner.Gateway
		if f.Tags[key] != val {
			if _, has := f.Tags[key]; !has && len(f.Tags) >= maxTags {
				if err := p.pruneStanding(ctx, owner.Cluster, f); err != nil {
					return err
				}
			}
			if _, err := p.api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{f.ID},
				Tags: []ec2types.Tag{{Key: awssdk.String(key), Value: awssdk.String(val)}}}); err != nil {
				return classify(fmt.Sprintf("recording %s as %s's on %s", a, owner.Cluster, f.ID), err)
			}
			f.Tags[key] = val
		}
	}
	if _, err := p.api.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: awssdk.String(f.ID),
		PrivateIpAddresses: []string{a.String()}, AllowReassignment: awssdk.Bool(reassign)}); err != nil {
		return classify(fmt.Sprintf("assigning %s to %s", a, f.ID), err)
	}
	f.Secondary = append(f.Secondary, a)
	return nil
}

// maxTags is EC2's limit of user tags per resource.
const maxTags = 50

// pruneStanding deletes cluster's records on f of addresses f does not hold (one DeleteTags),
// making room for a new record. Other clusters' records are theirs to keep.
func (p *Provider) pruneStanding(ctx context.Context, cluster string, f *iface) error {
	var stale []ec2types.Tag
	for k, v := range f.Tags {
		if ip, ok := strings.CutPrefix(k, TagIPPrefix); ok && strings.HasPrefix(v, cluster+"/") {
			if a, err := netip.ParseAddr(ip); err == nil && !f.holds(a) {
				stale = append(stale, ec2types.Tag{Key: awssdk.String(k)})
			}
		}
	}
	if len(stale) == 0 {
		return nil
	}
	if _, err := p.api.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{f.ID}, Tags: stale}); err != nil {
		return classify(fmt.Sprintf("pruning %d standing records from %s", len(stale), f.ID), err)
	}
	for _, t := range stale {
		delete(f.Tags, awssdk.ToString(t.Key))
	}
	return nil
}

// dropRecords deletes every record of a in the VPC that names cluster (standing ones on
// interfaces that held a before, and the holder's), one DeleteTags per interface after one
// describe. Records of other clusters are left alone.
func (p *Provider) dropRecords(ctx context.Context, cluster string, a netip.Addr) error {
	key := TagIPPrefix + a.String()
	out, err := p.api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
		filter("vpc-id", p.cfg.VPC), filter("tag-key", key)}})
	if err != nil {
		return classify("finding the records of "+a.String(), err)
	}
	for _, n := range out.NetworkInterfaces {
		f := fromENI(n)
		if c, _, _ := strings.Cut(f.Tags[key], "/"); c != cluster {
			continue
		}
		if _, err := p.api.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{f.ID},
			Tags: []ec2types.Tag{{Key: awssdk.String(key)}}}); err != nil && !providers.IsNotFound(classify("", err)) {
			return classify(fmt.Sprintf("removing the record of %s from %s", a, f.ID), err)
		}
	}
	return nil
}

// ensureDedicated returns the cluster's dedicated ENI on inst, creating and attaching it when
// there is none: in the node's subnet (or subnet), with the primary ENI's security groups,
// at the first free device index, deleted on instance termination.
func (p *Provider) ensureDedicated(ctx context.Context, owner providers.Owner, inst, subnet string, enis []*iface) (*iface, error) {
	for _, f := range enis {
		if f.dedicatedOf(owner.Cluster) {
			return f, nil
		}
	}
	key := owner.Cluster + "/" + inst
	p.mu.Lock()
	mem, known := p.dedicated[key]
	p.mu.Unlock()
	var f *iface
	if known {
		f = mem.iface
	} else {
		// Created earlier but not attached (crash, failed attach)? Reuse it.
		out, err := p.api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
			filter("vpc-id", p.cfg.VPC), filter("tag:"+TagCluster, owner.Cluster), filter("tag:"+TagInstance, inst),
			filter("tag:"+TagRole, roleDedicated)}})
		if err != nil {
			return nil, classify("looking for the dedicated interface of "+inst, err)
		}
		for _, n := range out.NetworkInterfaces {
			f = fromENI(n)
		}
	}
	if f == nil {
		if subnet == "" {
			subnet = enis[0].Subnet
		}
		now := time.Now().UTC().Format(time.RFC3339)
		out, err := p.api.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{
			SubnetId: awssdk.String(subnet), Groups: enis[0].Groups, Description: awssdk.String(descDedicated + " for " + inst),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeNetworkInterface, Tags: []ec2types.Tag{
				{Key: awssdk.String(TagCluster), Value: awssdk.String(owner.Cluster)},
				{Key: awssdk.String(TagOwner), Value: awssdk.String(owner.Gateway)},
				{Key: awssdk.String(TagRole), Value: awssdk.String(roleDedicated)},
				{Key: awssdk.String(TagInstance), Value: awssdk.String(inst)},
				{Key: awssdk.String(TagCreated), Value: awssdk.String(now)},
			}}}})
		if err != nil {
			return nil, classify(fmt.Sprintf("creating a dedicated interface for %s in %s", inst, subnet), err)
		}
		f = fromENI(*out.NetworkInterface)
		p.remember(key, f)
	}
	if f.Instance == "" {
		used := map[int]bool{}
		for _, e := range enis {
			used[e.Device] = true
		}
		dev := p.cfg.DedicatedDeviceIndex
		for used[dev] {
			dev++
		}
		out, err := p.api.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: awssdk.String(f.ID),
			InstanceId: awssdk.String(inst), DeviceIndex: awssdk.Int32(int32(dev))})
		if err != nil {
			return nil, classify(fmt.Sprintf("attaching %s to %s at device %d", f.ID, inst, dev), err)
		}
		f.Instance, f.AttachmentID, f.Device = inst, awssdk.ToString(out.AttachmentId), dev
		p.remember(key, f)
	}
	if !f.DeleteOnTermination {
		if _, err := p.api.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
			NetworkInterfaceId: awssdk.String(f.ID), Attachment: &ec2types.NetworkInterfaceAttachmentChanges{
				AttachmentId: awssdk.String(f.AttachmentID), DeleteOnTermination: awssdk.Bool(true)}}); err != nil {
			return nil, classify("setting delete-on-termination on "+f.ID, err)
		}
		f.DeleteOnTermination = true
		p.remember(key, f)
	}
	return f, nil
}

func (p *Provider) remember(key string, f *iface) {
	c := *f
	c.Secondary = nil
	c.Assoc = map[netip.Addr]assoc{}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dedicated[key] = dedicatedENI{iface: &c}
}

func (p *Provider) forgetDedicated(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, v := range p.dedicated {
		if v.iface.ID == id {
			delete(p.dedicated, k)
		}
	}
}

// ensurePublic associates an Elastic IP with a on f: the one already associated, else the
// cluster's Elastic IP allocated for a earlier (remembered, or found by tag), else a new one.
func (p *Provider) ensurePublic(ctx context.Context, owner providers.Owner, f *iface, a netip.Addr) error {
	if _, ok := f.Assoc[a]; ok {
		return nil
	}
	key := owner.Cluster + "/" + a.String()
	p.mu.Lock()
	pub, known := p.eips[key]
	p.mu.Unlock()
	if !known {
		out, err := p.api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{
			filter("tag:"+TagCluster, owner.Cluster), filter("tag:"+TagPrivateIP, a.String())}})
		if err != nil {
			return classify("looking for the Elastic IP of "+a.String(), err)
		}
		for _, x := range out.Addresses {
			pub = publicIP{Allocation: awssdk.ToString(x.AllocationId)}
			pub.Public, _ = netip.ParseAddr(awssdk.ToString(x.PublicIp))
		}
	}
	if pub.Allocation == "" {
		out, err := p.api.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc,
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeElasticIp, Tags: []ec2types.Tag{
				{Key: awssdk.String(TagCluster), Value: awssdk.String(owner.Cluster)},
				{Key: awssdk.String(TagOwner), Value: awssdk.String(owner.Gateway)},
				{Key: awssdk.String(TagPrivateIP), Value: awssdk.String(a.String())},
				{Key: awssdk.String(TagCreated), Value: awssdk.String(time.Now().UTC().Format(time.RFC3339))},
			}}}}, retryThrottlesOnly)
		if err != nil {
			return classify("allocating an Elastic IP for "+a.String(), err)
		}
		pub = publicIP{Allocation: awssdk.ToString(out.AllocationId)}
		pub.Public, _ = netip.ParseAddr(awssdk.ToString(out.PublicIp))
	}
	p.mu.Lock()
	p.eips[key] = pub
	p.mu.Unlock()
	out, err := p.api.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: awssdk.String(pub.Allocation),
		NetworkInterfaceId: awssdk.String(f.ID), PrivateIpAddress: awssdk.String(a.String()), AllowReassociation: awssdk.Bool(false)})
	if err != nil {
		return classify(fmt.Sprintf("associating %s with %s on %s", pub.Allocation, a, f.ID), err)
	}
	f.Assoc[a] = assoc{Public: pub.Public, Allocation: pub.Allocation, Association: awssdk.ToString(out.AssociationId)}
	return nil
}

// MoveIP implements providers.Provider: one AssignPrivateIpAddresses with AllowReassignment
// (plus the ownership tag on a primary ENI that has no standing record of the address), after
// two describes that check the address is the cluster's and where it goes. The Elastic IP
// follows the address inside EC2; the old holder keeps its record.
func (p *Provider) MoveIP(ctx context.Context, req providers.MoveRequest) (*providers.Assignment, error) {
	a := req.Current.IP
	op := fmt.Sprintf("moving %s to %s", a, req.To.Name)
	if err := validate(op, req.Owner, a); err != nil {
		return nil, err
	}
	inst, err := instanceID(req.To)
	if err != nil {
		return nil, err
	}
	holder, err := p.holderOf(ctx, a)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if holder != nil && !holder.ownedBy(a, req.Owner.Cluster) {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: op,
			Err: fmt.Errorf("%s holds %s, not as cluster %s's", holder.ID, a, req.Owner.Cluster)}
	}
	if holder != nil && holder.Instance == inst {
		return p.assignment(req.To.Name, holder, a), nil
	}
	enis, err := p.nodeENIs(ctx, inst)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	m := req.Interface
	if m == "" {
		m = providers.InterfaceMode(req.Current.Attachment)
	}
	if m == "" && holder != nil {
		m = mode(holder)
	}
	target := enis[0]
	if m == providers.InterfaceDedicated {
		if target, err = p.ensureDedicated(ctx, req.Owner, inst, req.Current.Subnet, enis); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	if !target.holds(a) {
		if err := p.assign(ctx, req.Owner, target, a, true); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	if holder != nil {
		if as, ok := holder.Assoc[a]; ok {
			target.Assoc[a] = as
		}
	} else if req.Current.PublicAllocation != "" {
		if err := p.ensurePublic(ctx, req.Owner, target, a); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	return p.assignment(req.To.Name, target, a), nil
}

// ReleaseIP implements providers.Provider.
func (p *Provider) ReleaseIP(ctx context.Context, req providers.ReleaseRequest) error {
	a := req.Current.IP
	op := fmt.Sprintf("releasing %s", a)
	if err := validate(op, req.Owner, a); err != nil {
		return err
	}
	holder, err := p.holderOf(ctx, a)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	alloc := req.Current.PublicAllocation
	if holder != nil {
		if !holder.ownedBy(a, req.Owner.Cluster) {
			return &providers.Error{Kind: providers.KindPermission, Op: op,
				Err: fmt.Errorf("%s holds %s, not as cluster %s's", holder.ID, a, req.Owner.Cluster)}
		}
		if as, ok := holder.Assoc[a]; ok {
			alloc = as.Allocation
		}
		// Unassigning disassociates the Elastic IP too.
		if _, err := p.api.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{
			NetworkInterfaceId: awssdk.String(holder.ID), PrivateIpAddresses: []string{a.String()}}); err != nil &&
			!providers.IsNotFound(classify("", err)) && errorCode(err) != "InvalidParameterValue" {
			return classify(fmt.Sprintf("unassigning %s from %s", a, holder.ID), err)
		}
	}
	// The holder's record goes only now: dropped before the unassign, a crash in between would
	// leave the address on an ENI without a record, no longer provably the cluster's.
	if err := p.dropRecords(ctx, req.Owner.Cluster, a); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := p.releasePublic(ctx, req.Owner.Cluster, a, alloc); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if holder != nil && holder.dedicatedOf(req.Owner.Cluster) && len(holder.Secondary) == 1 {
		if err := p.deleteInterface(ctx, holder); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	return nil
}

// releasePublic releases the cluster's Elastic IP of private address a: alloc when known,
// else whatever the cluster tagged for a. Untagged or foreign Elastic IPs are left alone.
func (p *Provider) releasePublic(ctx context.Context, cluster string, a netip.Addr, alloc string) error {
	in := &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{filter("tag:"+TagCluster, cluster), filter("tag:"+TagPrivateIP, a.String())}}
	if alloc != "" {
		in = &ec2.DescribeAddressesInput{AllocationIds: []string{alloc}}
	}
	out, err := p.api.DescribeAddresses(ctx, in)
	if providers.IsNotFound(classify("", err)) {
		p.forgetEIP(cluster, a)
		return nil
	}
	if err != nil {
		return classify("describing the Elastic IP of "+a.String(), err)
	}
	for _, x := range out.Addresses {
		if !hasTag(x.Tags, TagCluster, cluster) {
			continue
		}
		if err := p.releaseAddress(ctx, x); err != nil {
			return err
		}
	}
	p.forgetEIP(cluster, a)
	return nil
}

func (p *Provider) releaseAddress(ctx context.Context, x ec2types.Address) error {
	id := awssdk.ToString(x.AllocationId)
	if x.AssociationId != nil {
		if _, err := p.api.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: x.AssociationId}); err != nil &&
			!providers.IsNotFound(classify("", err)) {
			return classify("disassociating "+id, err)
		}
	}
	if _, err := p.api.ReleaseAddress(ctx, &ec2.ReleaseAddressInput{AllocationId: x.AllocationId}); err != nil &&
		!providers.IsNotFound(classify("", err)) {
		return classify("releasing "+id, err)
	}
	return nil
}

func (p *Provider) forgetEIP(cluster string, a netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.eips, cluster+"/"+a.String())
}

func hasTag(tags []ec2types.Tag, k, v string) bool {
	for _, t := range tags {
		if awssdk.ToString(t.Key) == k && awssdk.ToString(t.Value) == v {
			return true
		}
	}
	return false
}

// deleteInterface detaches and deletes a dedicated ENI. EC2 detaches asynchronously: when
// the delete finds it still in use, the ENI is left for garbage collection (ListOwned lists
// it) rather than waited for here.
func (p *Provider) deleteInterface(ctx context.Context, f *iface) error {
	if f.AttachmentID != "" {
		if _, err := p.api.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: awssdk.String(f.AttachmentID)}); err != nil &&
			!providers.IsNotFound(classify("", err)) {
			return classify("detaching "+f.ID, err)
		}
	}
	p.forgetDedicated(f.ID)
	_, err := p.api.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: awssdk.String(f.ID)})
	switch e := classify("deleting "+f.ID, err); {
	case err == nil, providers.IsNotFound(e), providers.IsConflict(e):
		return nil
	default:
		return e
	}
}

// ListOwned implements providers.Provider: two describes (interfaces carrying an egressd tag
// in the VPC, Elastic IPs tagged with the cluster), whatever the number of addresses.
func (p *Provider) ListOwned(ctx context.Context, cluster string) ([]providers.OwnedResource, error) {
	if cluster == "" {
		cluster = p.cfg.ClusterName
	}
	var out []providers.OwnedResource
	pg := ec2.NewDescribeNetworkInterfacesPaginator(p.api, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
		filter("vpc-id", p.cfg.VPC), filter("tag-key", TagCluster, TagIPPrefix+"*")}})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, classify("listing interfaces of cluster "+cluster, err)
		}
		for _, n := range page.NetworkInterfaces {
			f := fromENI(n)
			if f.dedicatedOf(cluster) {
				created, _ := time.Parse(time.RFC3339, f.Tags[TagCreated])
				out = append(out, providers.OwnedResource{Kind: providers.ResourceInterface, ID: f.ID, InstanceID: f.Instance,
					Owner: providers.Owner{Cluster: cluster, Gateway: f.Tags[TagOwner]}, Created: created})
			}
			for _, a := range f.Secondary {
				if o, ok := f.owner(a); ok && o.Cluster == cluster {
					out = append(out, providers.OwnedResource{Kind: providers.ResourcePrivateIP, ID: f.ID, IP: a, Owner: o, InstanceID: f.Instance})
				}
			}
		}
	}
	addrs, err := p.api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{filter("tag:"+TagCluster, cluster)}})
	if err != nil {
		return nil, classify("listing Elastic IPs of cluster "+cluster, err)
	}
	for _, x := range addrs.Addresses {
		tags := map[string]string{}
		for _, t := range x.Tags {
			tags[awssdk.ToString(t.Key)] = awssdk.ToString(t.Value)
		}
		if tags[TagCluster] != cluster {
			continue
		}
		pub, _ := netip.ParseAddr(awssdk.ToString(x.PublicIp))
		created, _ := time.Parse(time.RFC3339, tags[TagCreated])
		out = append(out, providers.OwnedResource{Kind: providers.ResourcePublicIP, ID: awssdk.ToString(x.AllocationId), IP: pub,
			Owner: providers.Owner{Cluster: cluster, Gateway: tags[TagOwner]}, InstanceID: awssdk.ToString(x.InstanceId), Created: created})
	}
	return out, nil
}

// ReleaseOwned implements providers.Provider.
func (p *Provider) ReleaseOwned(ctx context.Context, res providers.OwnedResource) error {
	op := fmt.Sprintf("releasing %s %s", res.Kind, res.ID)
	switch res.Kind {
	case providers.ResourcePrivateIP:
		return p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: res.Owner, Current: providers.Assignment{IP: res.IP}})
	case providers.ResourcePublicIP:
		out, err := p.api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{res.ID}})
		if providers.IsNotFound(classify("", err)) {
			return nil
		}
		if err != nil {
			return classify(op, err)
		}
		for _, x := range out.Addresses {
			if !hasTag(x.Tags, TagCluster, res.Owner.Cluster) {
				return &providers.Error{Kind: providers.KindPermission, Op: op, Err: fmt.Errorf("not tagged %s=%s", TagCluster, res.Owner.Cluster)}
			}
			if err := p.releaseAddress(ctx, x); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
		}
		return nil
	case providers.ResourceInterface:
		out, err := p.api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{res.ID}})
		if providers.IsNotFound(classify("", err)) {
			return nil
		}
		if err != nil {
			return classify(op, err)
		}
		for _, n := range out.NetworkInterfaces {
			f := fromENI(n)
			if !f.dedicatedOf(res.Owner.Cluster) {
				return &providers.Error{Kind: providers.KindPermission, Op: op, Err: fmt.Errorf("not a dedicated interface of cluster %s", res.Owner.Cluster)}
			}
			if err := p.deleteInterface(ctx, f); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
		}
		return nil
	}
	return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: fmt.Errorf("unknown resource kind %q", res.Kind)}
}

// DiscoverNode implements providers.Provider: DescribeInstances, DescribeInstanceTypes (once
// per type per process) and DescribeSubnets.
func (p *Provider) DiscoverNode(ctx context.Context, node providers.NodeRef) (*providers.NodeInfo, error) {
	infos, errs := p.DiscoverNodes(ctx, []providers.NodeRef{node})
	return infos[0], errs[0]
}

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
		pg := ec2.NewDescribeInstancesPaginator(p.api, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{filter("instance-id", chunk...)}})
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

// reservedAddrs are the five addresses AWS keeps in every subnet: network, VPC router, DNS,
// future use, broadcast.
func reservedAddrs(p netip.Prefix) []netip.Addr {
	p = p.Masked()
	var out []netip.Addr
	a := p.Addr()
	for range 4 {
		out = append(out, a)
		a = a.Next()
	}
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | (1<<(32-p.Bits()) - 1)
	return append(out, netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}))
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
