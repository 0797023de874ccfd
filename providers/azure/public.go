package azure

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/egressd/egressd/providers"
)

// ensurePublicIP creates (PUT is idempotent by name) or reads the Standard static public IP.
func (p *Provider) ensurePublicIP(ctx context.Context, rg, location string, ip netip.Addr, owner providers.Owner) (*armnetwork.PublicIPAddress, error) {
	name := publicName(owner.Cluster, ip)
	op := "creating public IP " + name
	if got, err := p.readPublicIP(ctx, rg, name); err == nil {
		if !ownedBy(got.Tags, owner.Cluster) {
			return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Code: "NotOwned", Err: errors.New("public IP exists without this cluster's tag")}
		}
		if ps := got.Properties; ps == nil || ps.ProvisioningState == nil || (*ps.ProvisioningState != armnetwork.ProvisioningStateFailed && *ps.ProvisioningState != "Canceled") {
			return got, nil
		}
		// Its last operation failed: PUT it again (idempotent by name) to provision it.
	} else if ce := classify(op, err); !providers.IsNotFound(ce) {
		return nil, ce
	}
	if p.cfg.Location != "" {
		location = p.cfg.Location
	}
	want := armnetwork.PublicIPAddress{
		Location: to.Ptr(location),
		SKU:      &armnetwork.PublicIPAddressSKU{Name: to.Ptr(armnetwork.PublicIPAddressSKUNameStandard), Tier: to.Ptr(armnetwork.PublicIPAddressSKUTierRegional)},
		Properties: &armnetwork.PublicIPAddressPropertiesFormat{
			PublicIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodStatic),
			PublicIPAddressVersion:   to.Ptr(armnetwork.IPVersionIPv4),
		},
		Tags: ownerTags(owner),
	}
	poller, err := p.c.PublicIPAddresses.BeginCreateOrUpdate(ctx, rg, name, want, nil)
	resp, err := await(ctx, p, op, poller, err)
	if err != nil {
		return nil, err
	}
	return &resp.PublicIPAddress, nil
}

// await polls the long-running operation begun with (poller, err) to its end; a failed start or
// operation is classified under op.
func await[T any](ctx context.Context, p *Provider, op string, poller *runtime.Poller[T], err error) (T, error) {
	var zero T
	if err != nil {
		return zero, classify(op, err)
	}
	resp, err := poller.PollUntilDone(ctx, p.pollOptions())
	if err != nil {
		return zero, classify(op, err)
	}
	return resp, nil
}

// readPublicIP reads a public IP once no operation on it runs (busyRetries waits at most): one
// whose creation is still Updating cannot be associated yet (ARM answers RetryableError).
func (p *Provider) readPublicIP(ctx context.Context, rg, name string) (*armnetwork.PublicIPAddress, error) {
	return readSettled(ctx, p, "reading public IP "+name, func() (*armnetwork.PublicIPAddress, *armnetwork.ProvisioningState, error) {
		got, err := p.c.PublicIPAddresses.Get(ctx, rg, name, nil)
		if err != nil || got.Properties == nil {
			return &got.PublicIPAddress, nil, err
		}
		return &got.PublicIPAddress, got.Properties.ProvisioningState, nil
	})
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

func (p *Provider) deletePublicIP(ctx context.Context, rg, name, cluster string) error {
	op := "deleting public IP " + name
	// Read it settled: a DELETE during its creation's operation answers 409.
	got, err := p.readPublicIP(ctx, rg, name)
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
	if _, err := poller.PollUntilDone(ctx, p.pollOptions()); err != nil {
		return classify(op, err)
	}
	return nil
}
