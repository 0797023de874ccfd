package azure

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

// ListOwned implements providers.Provider: one NIC list and one public IP list of the
// configured resource group.
func (p *Provider) ListOwned(ctx context.Context, cluster string) ([]providers.OwnedResource, error) {
	if cluster == "" {
		cluster = p.cfg.ClusterName
	}
	if p.cfg.ResourceGroup == "" {
		return nil, errors.New("listing owned resources: no resource group configured")
	}
	prefix := "egressd-" + clusterHash(cluster) + "-"
	var out []providers.OwnedResource
	if err := p.eachNIC(ctx, "listing NICs", p.cfg.ResourceGroup, func(nic *armnetwork.Interface) bool {
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
		return true
	}); err != nil {
		return nil, err
	}
	pips := p.c.PublicIPAddresses.NewListPager(p.cfg.ResourceGroup, nil)
	for pips.More() {
		page, err := pips.NextPage(ctx)
		if err != nil {
			return nil, classify("listing public IPs", err)
		}
		for _, pip := range page.Value {
			if !ownedBy(pip.Tags, cluster) {
				continue
			}
			r := providers.OwnedResource{Kind: providers.ResourcePublicIP, ID: deref(pip.ID), Owner: providers.Owner{Cluster: cluster, Gateway: deref(pip.Tags[egressv1.TagOwner])}}
			if pip.Properties != nil {
				r.IP, _ = netip.ParseAddr(deref(pip.Properties.IPAddress))
			}
			out = append(out, r)
		}
	}
	return p.listOwnedPrefixes(ctx, cluster, out)
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
		if inst, _, cfg, _, ok := parseScaleSetID(res.ID); ok && cfg != "" {
			if _, mine := ipOfConfigName(res.Owner.Cluster, cfg); !mine {
				return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: errors.New("ipConfiguration not named for this cluster")}
			}
			return p.removeFromInstance(ctx, inst, cfg)
		}
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
		if rg, name, ok := parsePrefixID(res.ID); ok {
			return p.deletePrefix(ctx, rg, name, res.Owner.Cluster)
		}
		parts := strings.Split(strings.Trim(res.ID, "/"), "/")
		if len(parts) != 8 {
			return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("not a public IP ID")}
		}
		return p.deletePublicIP(ctx, parts[3], parts[7], res.Owner.Cluster)
	}
	return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("no such resource kind on Azure")}
}
