package azure

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/egressd/egressd/providers"
)

func (p *Provider) assignment(node string, n nicRef, nic *armnetwork.Interface, c *armnetwork.InterfaceIPConfiguration, pip *armnetwork.PublicIPAddress) *providers.Assignment {
	a := &providers.Assignment{IP: cfgIP(c), Node: node, InterfaceID: deref(nic.ID), Attachment: deref(c.Name)}
	if nic.Properties != nil {
		a.InterfaceMAC = strings.ToLower(strings.ReplaceAll(deref(nic.Properties.MacAddress), "-", ":"))
		if nic.Properties.VirtualMachine != nil {
			a.InstanceID = deref(nic.Properties.VirtualMachine.ID)
		}
	}
	if c.Properties != nil && c.Properties.Subnet != nil {
		a.Subnet = deref(c.Properties.Subnet.ID)
	}
	if pip != nil {
		a.PublicAllocation = deref(pip.ID)
		a.PublicAssociation = deref(nic.ID) + "/ipConfigurations/" + deref(c.Name)
		if pip.Properties != nil {
			a.PublicIP, _ = netip.ParseAddr(deref(pip.Properties.IPAddress))
		}
	}
	return a
}

// EnsureIP implements providers.Provider. Steady state: one NIC get (plus one NIC list the
// first time a VM is seen). First time: NIC get, NIC PUT + operation polls; with Public the
// public IP get (404), PUT + polls first. A NIC in Updating is read again until its operation
// ends; a write refused with 412 (changed since read) or AnotherOperationInProgress is re-read
// and re-applied (updateNIC).
func (p *Provider) EnsureIP(ctx context.Context, req providers.EnsureRequest) (*providers.Assignment, error) {
	op := "ensuring " + req.IP.String() + " on " + req.Node.Name
	if req.Interface == providers.InterfaceDedicated {
		return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "DedicatedInterfaceUnsupported",
			Err: errors.New("azure attaches NICs only to stopped VMs; egress ipConfigurations go on the primary NIC")}
	}
	if _, inst, err := parseProviderID(req.Node.ProviderID); err == nil && inst != nil {
		if !req.Public {
			return nil, uniformPrivateRefused(op, *inst)
		}
		return p.ensureOnInstance(ctx, req.Node, *inst, req.Owner, req.IP)
	}
	n, err := p.nicFor(ctx, req.Node)
	if err != nil {
		return nil, err
	}
	defer p.lock(n.key())()
	nic, err := p.readNIC(ctx, n)
	if err != nil {
		return nil, err
	}
	name := configName(req.Owner.Cluster, req.IP)
	notOwned := func(c *armnetwork.InterfaceIPConfiguration) error {
		return &providers.Error{Kind: providers.KindConflict, Op: op, Code: "NotOwned", Err: fmt.Errorf("%s is ipConfiguration %s, not egressd's", req.IP, deref(c.Name))}
	}
	if c := findConfig(nic, req.IP); c != nil && deref(c.Name) != name {
		return nil, notOwned(c) // before creating a public IP for it
	}
	var pip *armnetwork.PublicIPAddress
	if req.Public {
		if pip, err = p.ensurePublicIP(ctx, n.rg, deref(nic.Location), req.IP, req.Owner); err != nil {
			return nil, err
		}
	}
	var c *armnetwork.InterfaceIPConfiguration
	nic, err = p.updateNIC(ctx, n, nic, func(nic *armnetwork.Interface) (bool, error) {
		c = findConfig(nic, req.IP)
		if c != nil && deref(c.Name) != name {
			return false, notOwned(c)
		}
		if c != nil && (pip == nil || (c.Properties.PublicIPAddress != nil && strings.EqualFold(deref(c.Properties.PublicIPAddress.ID), deref(pip.ID)))) {
			return failed(nic), nil // held; written again only if the NIC's last operation failed
		}
		if c == nil {
			if len(configs(nic)) >= p.cfg.MaxIPConfigurationsPerInterface {
				return false, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "IPConfigurationLimit", Err: fmt.Errorf("NIC %s has %d ipConfigurations", n.name, len(configs(nic)))}
			}
			var ref *armnetwork.PublicIPAddress
			if pip != nil {
				ref = &armnetwork.PublicIPAddress{ID: pip.ID}
			}
			c = newConfig(nic, name, req.IP, req.Subnet, ref)
			nic.Properties.IPConfigurations = append(nic.Properties.IPConfigurations, c)
		} else {
			c.Properties.PublicIPAddress = &armnetwork.PublicIPAddress{ID: pip.ID}
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return p.assignment(req.Node.Name, n, nic, c, pip), nil
}

// MoveIP implements providers.Provider: remove the ipConfiguration from the holder's NIC,
// then add it (with the same public IP reference) to the target's. The target NIC is read
// before the removal so the addition follows the removal's operation at once; if the target
// changed meanwhile, its PUT answers 412 and the addition is re-applied to a fresh read.
func (p *Provider) MoveIP(ctx context.Context, req providers.MoveRequest) (*providers.Assignment, error) {
	ip := req.Current.IP
	op := "moving " + ip.String() + " to " + req.To.Name
	name := configName(req.Owner.Cluster, ip)
	if _, inst, err := parseProviderID(req.To.ProviderID); err == nil && inst != nil {
		return p.moveToInstance(ctx, req, *inst)
	}
	if isUniformRelease(req.Current) {
		return nil, mixedPoolRefused(op)
	}
	to_, err := p.nicFor(ctx, req.To)
	if err != nil {
		return nil, err
	}
	target, err := p.readNIC(ctx, to_)
	if err != nil {
		return nil, err
	}
	if c := configByName(target, name); c != nil && !failed(target) {
		return p.assignment(req.To.Name, to_, target, c, p.pipOf(ctx, c)), nil
	}
	// check refuses a target that holds the address under another name or is full.
	check := func(nic *armnetwork.Interface) error {
		if c := findConfig(nic, ip); c != nil && !strings.EqualFold(deref(c.Name), name) {
			return &providers.Error{Kind: providers.KindConflict, Op: op, Code: "NotOwned", Err: errors.New("the target holds the address under another ipConfiguration")}
		}
		if configByName(nic, name) == nil && len(configs(nic)) >= p.cfg.MaxIPConfigurationsPerInterface {
			return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "IPConfigurationLimit", Err: fmt.Errorf("NIC %s is full", to_.name)}
		}
		return nil
	}
	if err := check(target); err != nil {
		return nil, err
	}
	from, err := p.holderOf(ctx, req.Current, name)
	if err != nil {
		return nil, err
	}
	var pipRef *armnetwork.PublicIPAddress
	var removedAt time.Time
	if from != nil && from.key() != to_.key() {
		removed, err := p.removeConfig(ctx, *from, name)
		if err != nil {
			return nil, err
		}
		if removed != nil && removed.Properties != nil && removed.Properties.PublicIPAddress != nil {
			pipRef = &armnetwork.PublicIPAddress{ID: removed.Properties.PublicIPAddress.ID}
		}
		removedAt = time.Now()
	} else if req.Current.PublicAllocation != "" {
		pipRef = &armnetwork.PublicIPAddress{ID: to.Ptr(req.Current.PublicAllocation)}
	}
	unlock := p.lock(to_.key())
	var c *armnetwork.InterfaceIPConfiguration
	target, err = p.updateNIC(ctx, to_, target, func(nic *armnetwork.Interface) (bool, error) {
		if c = configByName(nic, name); c != nil {
			return failed(nic), nil
		}
		if err := check(nic); err != nil {
			return false, err
		}
		c = newConfig(nic, name, ip, "", pipRef)
		nic.Properties.IPConfigurations = append(nic.Properties.IPConfigurations, c)
		return true, nil
	})
	unlock()
	if from == nil && providers.IsConflict(err) && !isBusy(err) && !isStale(err) {
		// No NIC holds the cluster's ipConfiguration and someone else holds the address.
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: op, Code: "NotOwned", Err: err}
	}
	if err != nil {
		return nil, err
	}
	p.recordMove(ip, removedAt)
	var pip *armnetwork.PublicIPAddress
	if pipRef != nil {
		pip = p.pipOf(ctx, c)
	}
	return p.assignment(req.To.Name, to_, target, c, pip), nil
}

// recordMove records the window of a move whose removal completed at removedAt (zero: the
// move removed nothing), now that the addition completed.
func (p *Provider) recordMove(ip netip.Addr, removedAt time.Time) {
	if removedAt.IsZero() {
		return
	}
	p.mu.Lock()
	p.last = MoveWindow{IP: ip, Window: time.Since(removedAt)}
	p.mu.Unlock()
}

// ReleaseIP implements providers.Provider.
func (p *Provider) ReleaseIP(ctx context.Context, req providers.ReleaseRequest) error {
	ip := req.Current.IP
	op := "releasing " + ip.String()
	if isUniformRelease(req.Current) {
		return p.releaseFromInstance(ctx, req.Current, req.Owner.Cluster)
	}
	name := configName(req.Owner.Cluster, ip)
	holder, err := p.holderOf(ctx, req.Current, name)
	if err != nil {
		return err
	}
	rg := p.cfg.ResourceGroup
	if holder != nil {
		rg = holder.rg
		if _, err := p.removeConfig(ctx, *holder, name); err != nil {
			return err
		}
	} else if n, _, ok := parseNICID(req.Current.InterfaceID); ok {
		rg = n.rg
		nic, err := p.getNIC(ctx, n)
		if err != nil && !providers.IsNotFound(err) {
			return err
		}
		if nic != nil && findConfig(nic, ip) != nil {
			return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: fmt.Errorf("%s on %s is not an ipConfiguration of cluster %s", ip, n.name, req.Owner.Cluster)}
		}
	}
	if rg == "" {
		return nil
	}
	return p.deletePublicIP(ctx, rg, publicName(req.Owner.Cluster, ip), req.Owner.Cluster)
}
