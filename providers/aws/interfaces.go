package aws

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

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
	// IPv6 are the interface's IPv6 addresses (dual-stack subnets).
	IPv6  []netip.Addr
	Assoc map[netip.Addr]assoc
	Tags  map[string]string
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
	for _, v6 := range n.Ipv6Addresses {
		if a, err := netip.ParseAddr(awssdk.ToString(v6.Ipv6Address)); err == nil {
			f.IPv6 = append(f.IPv6, a)
		}
	}
	return f
}

// addrs is the list a belongs in: the secondary IPv4 addresses, or the IPv6 ones.
func (f *iface) addrs(a netip.Addr) *[]netip.Addr {
	if a.Is6() {
		return &f.IPv6
	}
	return &f.Secondary
}

func (f *iface) holds(a netip.Addr) bool { return slices.Contains(*f.addrs(a), a) }

// held counts the addresses egressd may have put on the interface (secondary IPv4 and IPv6).
func (f *iface) held() int { return len(f.Secondary) + len(f.IPv6) }

func (f *iface) dedicatedOf(cluster string) bool {
	return f.Tags[TagRole] == roleDedicated && f.Tags[egressv1.TagCluster] == cluster
}

// owner returns who owns address a on this interface, per the ownership rules above.
func (f *iface) owner(a netip.Addr) (providers.Owner, bool) {
	if f.Tags[TagRole] == roleDedicated && f.Tags[egressv1.TagCluster] != "" {
		return providers.Owner{Cluster: f.Tags[egressv1.TagCluster], Gateway: f.Tags[egressv1.TagOwner]}, true
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
	p.journal.overlay(fs)
	if len(fs) == 0 || fs[0].Device != 0 {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: "describing interfaces of " + inst,
			Err: fmt.Errorf("instance %s has no primary interface (terminated or unknown)", inst)}
	}
	return fs, nil
}

// holderOf returns the interface holding a as a secondary address in the VPC, or nil. When
// this process placed a within the consistency window (journal.go) on an interface the
// describe does not show holding it, that interface is read by ID: one more describe.
func (p *Provider) holderOf(ctx context.Context, a netip.Addr) (*iface, error) {
	by := "addresses.private-ip-address"
	if a.Is6() {
		by = "ipv6-addresses.ipv6-address"
	}
	out, err := p.api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
		filter("vpc-id", p.cfg.VPC), filter(by, a.String())}})
	if err != nil {
		return nil, classify("finding the interface holding "+a.String(), err)
	}
	var fs []*iface
	for _, n := range out.NetworkInterfaces {
		fs = append(fs, fromENI(n))
	}
	p.journal.overlay(fs)
	for _, f := range fs {
		if f.holds(a) || f.Primary == a {
			return f, nil
		}
	}
	eni, ok := p.journal.where(a)
	if !ok || eni == nil {
		return nil, nil
	}
	byID, err := p.api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni.ID}})
	if providers.IsNotFound(classify("", err)) {
		return nil, nil
	}
	if err != nil {
		return nil, classify("describing "+eni.ID+", where "+a.String()+" was put", err)
	}
	fs = fs[:0]
	for _, n := range byID.NetworkInterfaces {
		fs = append(fs, fromENI(n))
	}
	p.journal.overlay(fs)
	for _, f := range fs {
		if f.holds(a) {
			return f, nil
		}
	}
	return nil, nil
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
			filter("vpc-id", p.cfg.VPC), filter("tag:"+egressv1.TagCluster, owner.Cluster), filter("tag:"+TagInstance, inst),
			filter("tag:"+TagRole, roleDedicated)}})
		if err != nil {
			return nil, classify("looking for the dedicated interface of "+inst, err)
		}
		for _, n := range out.NetworkInterfaces {
			f = fromENI(n)
		}
	}
	if f == nil {
		subnet = strings.TrimSuffix(subnet, ipv6Pool)
		if subnet == "" {
			subnet = enis[0].Subnet
		}
		now := time.Now().UTC().Format(time.RFC3339)
		out, err := p.api.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{
			SubnetId: awssdk.String(subnet), Groups: enis[0].Groups, Description: awssdk.String(descDedicated + " for " + inst),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeNetworkInterface, Tags: []ec2types.Tag{
				{Key: awssdk.String(egressv1.TagCluster), Value: awssdk.String(owner.Cluster)},
				{Key: awssdk.String(egressv1.TagOwner), Value: awssdk.String(owner.Gateway)},
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

// detachWait bounds how long a release waits for EC2 to detach a dedicated interface (the
// simulator's AWS profile draws up to 15 s; garbage collection deletes one detached later).
const detachWait = 20 * time.Second

// awaitDetached polls the interface until EC2 shows it available (or gone), for at most
// detachWait: one describe per poll, backing off from 100 ms to 2 s.
func (p *Provider) awaitDetached(ctx context.Context, id string) error {
	deadline := time.Now().Add(detachWait)
	for wait := doubtPollFirst; ; wait = min(2*wait, doubtPollMax) {
		out, err := p.api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
		if providers.IsNotFound(classify("", err)) {
			return nil
		}
		if err != nil {
			return classify("waiting for "+id+" to detach", err)
		}
		if len(out.NetworkInterfaces) == 0 || out.NetworkInterfaces[0].Status == ec2types.NetworkInterfaceStatusAvailable {
			return nil
		}
		if time.Now().After(deadline) {
			return nil // the delete finds it in use and leaves it for garbage collection
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
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

// deleteInterface detaches and deletes a dedicated ENI. EC2 detaches asynchronously (the
// attachment is "detaching" for seconds), so the delete waits, reading the interface, until it
// is "available", for at most detachWait; an ENI still in use then is left for garbage
// collection (ListOwned lists it).
func (p *Provider) deleteInterface(ctx context.Context, f *iface) error {
	if f.AttachmentID != "" {
		if _, err := p.api.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: awssdk.String(f.AttachmentID)}); err != nil &&
			!providers.IsNotFound(classify("", err)) {
			return classify("detaching "+f.ID, err)
		}
		if err := p.awaitDetached(ctx, f.ID); err != nil {
			return err
		}
	}
	p.forgetDedicated(f.ID)
	_, err := p.api.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: awssdk.String(f.ID)})
	switch e := classify("deleting "+f.ID, err); {
	case err == nil, providers.IsNotFound(e):
		p.journal.gone(f.ID)
		return nil
	case providers.IsConflict(e):
		return nil
	default:
		return e
	}
}
