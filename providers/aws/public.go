package aws

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

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
			filter("tag:"+egressv1.TagCluster, owner.Cluster), filter("tag:"+TagPrivateIP, a.String())}})
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
				{Key: awssdk.String(egressv1.TagCluster), Value: awssdk.String(owner.Cluster)},
				{Key: awssdk.String(egressv1.TagOwner), Value: awssdk.String(owner.Gateway)},
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

// releasePublic releases the cluster's Elastic IP of private address a: alloc when known,
// else whatever the cluster tagged for a. Untagged or foreign Elastic IPs are left alone.
func (p *Provider) releasePublic(ctx context.Context, cluster string, a netip.Addr, alloc string) error {
	in := &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{filter("tag:"+egressv1.TagCluster, cluster), filter("tag:"+TagPrivateIP, a.String())}}
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
		if !hasTag(x.Tags, egressv1.TagCluster, cluster) {
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
