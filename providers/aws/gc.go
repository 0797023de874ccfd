package aws

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

// ListOwned implements providers.Provider: two describes (interfaces carrying an egressd tag
// in the VPC, Elastic IPs tagged with the cluster), whatever the number of addresses. The
// addresses this process placed within the consistency window are listed where it put them,
// even on an interface the tag filter does not show yet (journal.go).
func (p *Provider) ListOwned(ctx context.Context, cluster string) ([]providers.OwnedResource, error) {
	if cluster == "" {
		cluster = p.cfg.ClusterName
	}
	var out []providers.OwnedResource
	listed := map[netip.Addr]bool{}
	own := func(f *iface, a netip.Addr) {
		if o, ok := f.owner(a); ok && o.Cluster == cluster && !listed[a] {
			listed[a] = true
			out = append(out, providers.OwnedResource{Kind: providers.ResourcePrivateIP, ID: f.ID, IP: a, Owner: o, InstanceID: f.Instance})
		}
	}
	pg := ec2.NewDescribeNetworkInterfacesPaginator(p.api, &ec2.DescribeNetworkInterfacesInput{MaxResults: awssdk.Int32(describePage), Filters: []ec2types.Filter{
		filter("vpc-id", p.cfg.VPC), filter("tag-key", egressv1.TagCluster, TagIPPrefix+"*")}})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, classify("listing interfaces of cluster "+cluster, err)
		}
		fs := make([]*iface, 0, len(page.NetworkInterfaces))
		for _, n := range page.NetworkInterfaces {
			fs = append(fs, fromENI(n))
		}
		p.journal.overlay(fs)
		for _, f := range fs {
			if p.journal.isGone(f.ID) {
				continue
			}
			if f.dedicatedOf(cluster) {
				created, _ := time.Parse(time.RFC3339, f.Tags[TagCreated])
				out = append(out, providers.OwnedResource{Kind: providers.ResourceInterface, ID: f.ID, InstanceID: f.Instance,
					Owner: providers.Owner{Cluster: cluster, Gateway: f.Tags[egressv1.TagOwner]}, Created: created})
			}
			for _, a := range slices.Concat(f.Secondary, f.IPv6) {
				own(f, a)
			}
		}
	}
	for a, pl := range p.journal.fresh() {
		if pl.eni != nil && !listed[a] {
			f := *pl.eni
			if pl.record != "" {
				f.Tags = map[string]string{TagIPPrefix + a.String(): pl.record}
			}
			own(&f, a)
		}
	}
	addrs, err := p.api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{filter("tag:"+egressv1.TagCluster, cluster)}})
	if err != nil {
		return nil, classify("listing Elastic IPs of cluster "+cluster, err)
	}
	for _, x := range addrs.Addresses {
		tags := map[string]string{}
		for _, t := range x.Tags {
			tags[awssdk.ToString(t.Key)] = awssdk.ToString(t.Value)
		}
		if tags[egressv1.TagCluster] != cluster || p.journal.isGone(awssdk.ToString(x.AllocationId)) {
			continue
		}
		pub, _ := netip.ParseAddr(awssdk.ToString(x.PublicIp))
		created, _ := time.Parse(time.RFC3339, tags[TagCreated])
		out = append(out, providers.OwnedResource{Kind: providers.ResourcePublicIP, ID: awssdk.ToString(x.AllocationId), IP: pub,
			Owner: providers.Owner{Cluster: cluster, Gateway: tags[egressv1.TagOwner]}, InstanceID: awssdk.ToString(x.InstanceId), Created: created})
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
			if !hasTag(x.Tags, egressv1.TagCluster, res.Owner.Cluster) {
				return &providers.Error{Kind: providers.KindPermission, Op: op, Err: fmt.Errorf("not tagged %s=%s", egressv1.TagCluster, res.Owner.Cluster)}
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
