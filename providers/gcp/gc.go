package gcp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	computepb "cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/iterator"
	"google.golang.org/protobuf/proto"

	"github.com/egressd/egressd/providers"
)

// ListOwned implements providers.Provider: one addresses.aggregatedList filtered on the
// cluster label. Alias ranges carry no labels; a private egress IP is this cluster's exactly
// when its internal reservation is, and its holder is the reservation's user.
func (p *Provider) ListOwned(ctx context.Context, cluster string) ([]providers.OwnedResource, error) {
	if cluster == "" {
		cluster = p.cluster
	}
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
		if _, err := p.dropAlias(ctx, ur, ip, nil); err != nil {
			return err
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
