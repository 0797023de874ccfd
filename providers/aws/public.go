package aws

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
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
		var err error
		if pub, err = p.findEIP(ctx, owner.Cluster, a); err != nil {
			return err
		}
	}
	if pub.Allocation == "" {
		var err error
		if pub, err = p.awaitDoubtfulEIP(ctx, owner.Cluster, a); err != nil {
			return err
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
			if uncertain(err) {
				p.mu.Lock()
				p.doubt[key] = time.Now()
				p.mu.Unlock()
			}
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
	p.journal.associated(a, f.ID, f.Assoc[a])
	return nil
}

// findEIP returns the cluster's Elastic IP tagged for a, if a describe shows one.
func (p *Provider) findEIP(ctx context.Context, cluster string, a netip.Addr) (publicIP, error) {
	out, err := p.api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{
		filter("tag:"+egressv1.TagCluster, cluster), filter("tag:"+TagPrivateIP, a.String())}})
	if err != nil {
		return publicIP{}, classify("looking for the Elastic IP of "+a.String(), err)
	}
	var pub publicIP
	for _, x := range out.Addresses {
		pub = publicIP{Allocation: awssdk.ToString(x.AllocationId)}
		pub.Public, _ = netip.ParseAddr(awssdk.ToString(x.PublicIp))
	}
	return pub, nil
}

// awaitDoubtfulEIP waits, within the consistency window of the lost answer, for the Elastic IP
// an AllocateAddress whose answer was lost may have allocated for a to show in describes.
// AllocateAddress takes no client token, so allocating again at once could leave two; waiting
// costs a few seconds on a rare path. Past the window, nothing more is known than that the
// describes do not show one: the caller allocates, and garbage collection releases a second
// one that did exist (tagged as the cluster's, claimed by no EgressIP).
func (p *Provider) awaitDoubtfulEIP(ctx context.Context, cluster string, a netip.Addr) (publicIP, error) {
	key := cluster + "/" + a.String()
	p.mu.Lock()
	since, doubtful := p.doubt[key]
	p.mu.Unlock()
	if !doubtful {
		return publicIP{}, nil
	}
	defer func() {
		p.mu.Lock()
		delete(p.doubt, key)
		p.mu.Unlock()
	}()
	deadline := since.Add(time.Duration(p.cfg.ConsistencyWindow))
	for wait := doubtPollFirst; time.Now().Before(deadline); wait = min(2*wait, doubtPollMax) {
		select {
		case <-ctx.Done():
			return publicIP{}, ctx.Err()
		case <-time.After(min(wait, time.Until(deadline))):
		}
		pub, err := p.findEIP(ctx, cluster, a)
		if err != nil || pub.Allocation != "" {
			return pub, err
		}
	}
	return publicIP{}, nil
}

const (
	doubtPollFirst = 100 * time.Millisecond
	doubtPollMax   = 2 * time.Second
)

// uncertain reports whether a failed call may have been applied: a server error (5xx) or no
// answer at all, as opposed to EC2 refusing the request.
func uncertain(err error) bool {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode() >= 500
	}
	return true
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
	p.journal.gone(id)
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
