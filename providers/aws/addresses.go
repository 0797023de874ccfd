package aws

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/egressd/egressd/providers"
)

func (p *Provider) assignment(node string, f *iface, a netip.Addr) *providers.Assignment {
	out := &providers.Assignment{IP: a, Node: node, InstanceID: f.Instance, InterfaceID: f.ID, InterfaceMAC: f.MAC,
		Subnet: f.Subnet, Attachment: string(mode(f))}
	if as, ok := f.Assoc[a]; ok {
		out.PublicIP, out.PublicAllocation, out.PublicAssociation = as.Public, as.Allocation, as.Association
	}
	return out
}

func validate(op string, owner providers.Owner, a netip.Addr) error {
	if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
		return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: fmt.Errorf("address %v: want an IPv4 address or an IPv6 one of a dual-stack subnet", a)}
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
	if req.Public && req.IP.Is6() {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: fmt.Errorf("public egress IPs are Elastic IPs, which are IPv4: %s is IPv6", req.IP)}
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
	var err error
	if a.Is6() {
		// IPv6 has no AllowReassignment: MoveIP unassigns from the old holder first.
		_, err = p.api.AssignIpv6Addresses(ctx, &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: awssdk.String(f.ID),
			Ipv6Addresses: []string{a.String()}})
	} else {
		_, err = p.api.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: awssdk.String(f.ID),
			PrivateIpAddresses: []string{a.String()}, AllowReassignment: awssdk.Bool(reassign)})
	}
	if err != nil {
		op := fmt.Sprintf("assigning %s to %s", a, f.ID)
		if errorCode(err) == "InvalidParameterValue" && a.Is4() {
			// EC2 has no code of its own for an address that is another interface's
			// primary (AllowReassignment cannot take it), and InvalidParameterValue covers
			// every bad parameter: ask EC2 who holds the address rather than read the message.
			if h, herr := p.holderOf(ctx, a); herr == nil && h != nil && h.ID != f.ID && h.Primary == a {
				return &providers.Error{Kind: providers.KindConflict, Op: op, Code: "InvalidParameterValue",
					Err: fmt.Errorf("%s is the primary address of %s: %w", a, h.ID, err)}
			}
		}
		return classify(op, err)
	}
	list := f.addrs(a)
	*list = append(*list, a)
	p.journal.placed(a, f)
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
		if a.Is6() && holder != nil {
			// EC2 moves an IPv6 address only by unassigning it first: for a moment no
			// interface holds it.
			if err := p.unassign(ctx, holder.ID, a); err != nil {
				return nil, fmt.Errorf("%s: %w", op, err)
			}
		}
		if err := p.assign(ctx, req.Owner, target, a, true); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	if holder != nil {
		if as, ok := holder.Assoc[a]; ok {
			target.Assoc[a] = as
			p.journal.associated(a, target.ID, as)
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
		if err := p.unassign(ctx, holder.ID, a); err != nil {
			return err
		}
	}
	// EC2's describes lag its writes (eventual consistency): right after egressd assigned or
	// moved a, the describe may show it on its previous interface, or nowhere. The assignment
	// being released names where egressd put it; unassigning there too never leaves it behind
	// (EC2 validates against its accepted state: an interface without a answers
	// InvalidParameterValue, which is ignored).
	if id := req.Current.InterfaceID; id != "" && (holder == nil || holder.ID != id) {
		if err := p.unassign(ctx, id, a); err != nil {
			return err
		}
	}
	// The holder's record goes only now: dropped before the unassign, a crash in between would
	// leave the address on an ENI without a record, no longer provably the cluster's.
	if err := p.dropRecords(ctx, req.Owner.Cluster, a); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if alloc != "" && alloc == req.Current.PublicAllocation {
		// The assignment's own Elastic IP: released by ID, without a describe that may not
		// show it yet.
		x := ec2types.Address{AllocationId: awssdk.String(alloc)}
		if req.Current.PublicAssociation != "" {
			x.AssociationId = awssdk.String(req.Current.PublicAssociation)
		}
		if err := p.releaseAddress(ctx, x); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		p.forgetEIP(req.Owner.Cluster, a)
	} else if err := p.releasePublic(ctx, req.Owner.Cluster, a, alloc); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if holder != nil && holder.dedicatedOf(req.Owner.Cluster) && holder.held() == 1 {
		if err := p.deleteInterface(ctx, holder); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	return nil
}

// unassign removes a from the interface id; an interface that does not hold it (any more) is
// not an error. Unassigning disassociates the Elastic IP too.
func (p *Provider) unassign(ctx context.Context, id string, a netip.Addr) error {
	var err error
	if a.Is6() {
		_, err = p.api.UnassignIpv6Addresses(ctx, &ec2.UnassignIpv6AddressesInput{
			NetworkInterfaceId: awssdk.String(id), Ipv6Addresses: []string{a.String()}})
	} else {
		_, err = p.api.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{
			NetworkInterfaceId: awssdk.String(id), PrivateIpAddresses: []string{a.String()}})
	}
	if err != nil && !providers.IsNotFound(classify("", err)) && errorCode(err) != "InvalidParameterValue" {
		return classify(fmt.Sprintf("unassigning %s from %s", a, id), err)
	}
	p.journal.removed(a)
	return nil
}
