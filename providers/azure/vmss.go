package azure

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v7"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/egressd/egressd/providers"
)

// Uniform scale-set instances (AKS's default node pools). An instance's ipConfigurations
// exist only in its compute model, where they take no private address (the cloud allocates a
// Dynamic one) and no existing public IP (only one drawn from a prefix): egressd cannot put
// the address it chose on such an instance. It supports them for public egress, the way
// AKS's Static Egress Gateway does: a secondary ipConfiguration named as on a VM NIC
// (configName: cluster and egress IP), added to the instance's model with a public IP drawn
// from a Standard public IP prefix egressd creates and tags per gateway and zone. The cloud
// translates that public IP from the ipConfiguration's Dynamic address, which the assignment
// reports as its PublicNATSource, with PrivateAddressNotHeld: the agent sends every flow of
// the egress IP from it. Partners allowlist the prefix, which never changes; the address
// within it may change on a move or after an upgrade.

// discoverInstance reads a Uniform scale-set instance's NICs through the network resource
// provider's scale-set read path (virtualMachineScaleSets/{vmss}/virtualMachines/{i}/networkInterfaces,
// api-version 2018-10-01 in armnetwork) and returns its primary NIC, NotFound when it has none
// (the instance does not exist).
func (p *Provider) discoverInstance(ctx context.Context, node providers.NodeRef, inst instanceRef) (*armnetwork.Interface, error) {
	nic, err := p.instanceNIC(ctx, inst)
	if err != nil {
		return nil, fmt.Errorf("discovering node %s: %w", node.Name, err)
	}
	return nic, nil
}

// instanceNIC reads the primary NIC of a Uniform scale-set instance as the network resource
// provider shows it (what the instance's last completed operation made of its model): one list
// of the instance's NICs.
func (p *Provider) instanceNIC(ctx context.Context, inst instanceRef) (*armnetwork.Interface, error) {
	var found *armnetwork.Interface
	pager := p.c.Interfaces.NewListVirtualMachineScaleSetVMNetworkInterfacesPager(inst.rg, inst.vmss, inst.id, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, classify("reading the NICs of "+inst.resourceID(), err)
		}
		for _, nic := range page.Value {
			if found == nil || (nic.Properties != nil && nic.Properties.Primary != nil && *nic.Properties.Primary) {
				found = nic
			}
		}
	}
	if found == nil {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: "reading the NICs of " + inst.resourceID(), Err: errors.New("the scale-set instance has no network interface")}
	}
	return found, nil
}

// discoverInstances fills nics[i] (or errs[i]) for the Uniform scale-set instances idx of
// nodes: the instances of one scale set with one list of the scale set's NICs (every page)
// when there are several, with discoverInstance when there is one. An instance the list does
// not show is NotFound.
func (p *Provider) discoverInstances(ctx context.Context, nodes []providers.NodeRef, insts []instanceRef, idx []int, nics []*armnetwork.Interface, errs []error) {
	byScaleSet := map[string][]int{} // lower(resource group/scale set) → indexes
	for _, i := range idx {
		k := strings.ToLower(insts[i].rg + "/" + insts[i].vmss)
		byScaleSet[k] = append(byScaleSet[k], i)
	}
	for _, k := range slices.Sorted(maps.Keys(byScaleSet)) {
		group := byScaleSet[k]
		if len(group) == 1 {
			nics[group[0]], errs[group[0]] = p.discoverInstance(ctx, nodes[group[0]], insts[group[0]])
			continue
		}
		inst := insts[group[0]]
		listed := map[string]*armnetwork.Interface{} // lower(instance resource ID) → primary NIC
		pager := p.c.Interfaces.NewListVirtualMachineScaleSetNetworkInterfacesPager(inst.rg, inst.vmss, nil)
		var err error
		for pager.More() {
			var page armnetwork.InterfacesClientListVirtualMachineScaleSetNetworkInterfacesResponse
			if page, err = pager.NextPage(ctx); err != nil {
				err = classify("reading the NICs of scale set "+inst.vmss, err)
				break
			}
			for _, nic := range page.Value {
				if nic.Properties == nil || nic.Properties.VirtualMachine == nil {
					continue
				}
				vm := strings.ToLower(deref(nic.Properties.VirtualMachine.ID))
				if listed[vm] == nil || (nic.Properties.Primary != nil && *nic.Properties.Primary) {
					listed[vm] = nic
				}
			}
		}
		for _, i := range group {
			op := "discovering node " + nodes[i].Name
			switch nic := listed[strings.ToLower(insts[i].resourceID())]; {
			case err != nil && !providers.IsNotFound(err):
				errs[i] = fmt.Errorf("%s: %w", op, err)
			case nic != nil:
				nics[i] = nic
			default: // the scale set, or this instance, does not exist
				errs[i] = &providers.Error{Kind: providers.KindNotFound, Op: op, Code: armErrorCode(err), Err: errors.New("the scale-set instance has no network interface")}
			}
		}
	}
}

// armErrorCode is the ARM error code of err ("" when none).
func armErrorCode(err error) string {
	_, c := armCode(err)
	return c
}

// ---- the instance's model ----

// instanceState is the provisioningState of an instance document.
func instanceState(vm *armcompute.VirtualMachineScaleSetVM) *armnetwork.ProvisioningState {
	if vm.Properties == nil || vm.Properties.ProvisioningState == nil {
		return nil
	}
	return to.Ptr(armnetwork.ProvisioningState(*vm.Properties.ProvisioningState))
}

// readInstance reads the instance's model once no operation on it runs (busyRetries waits at
// most).
func (p *Provider) readInstance(ctx context.Context, inst instanceRef) (*armcompute.VirtualMachineScaleSetVM, error) {
	op := "reading scale-set instance " + inst.resourceID()
	return readSettled(ctx, p, op, func() (*armcompute.VirtualMachineScaleSetVM, *armnetwork.ProvisioningState, error) {
		resp, err := p.c.ScaleSetVMs.Get(ctx, inst.rg, inst.vmss, inst.id, nil)
		if err != nil {
			return nil, nil, classify(op, err)
		}
		return &resp.VirtualMachineScaleSetVM, instanceState(&resp.VirtualMachineScaleSetVM), nil
	})
}

// updateInstance applies change to the instance's model and writes it back with If-Match on
// the instance's etag, re-read and re-applied after 412 (changed since read: AKS or an
// operator wrote it) or AnotherOperationInProgress (after a wait), and waits for the
// long-running operation, as updateNIC does for a NIC. change derives everything from the
// document it is given and says whether there is anything to write.
func (p *Provider) updateInstance(ctx context.Context, inst instanceRef, change func(*armcompute.VirtualMachineScaleSetVM) (bool, error)) error {
	op := "updating scale-set instance " + inst.resourceID()
	stale, busy := 0, 0
	for {
		vm, err := p.readInstance(ctx, inst)
		if err != nil {
			return err
		}
		write, err := change(vm)
		if err != nil || !write {
			return err
		}
		if deref(vm.Etag) == "" {
			return fmt.Errorf("%s: the instance as read has no etag, and egressd writes instances only if they are unchanged since read", op)
		}
		err = p.putInstance(ctx, inst, vm)
		switch {
		case err == nil:
			return nil
		case isStale(err) && stale < staleRetries:
			stale++
		case isBusy(err) && busy < busyRetries:
			if err := p.wait(ctx, busy); err != nil {
				return err
			}
			busy++
		default:
			return err
		}
	}
}

// putInstance writes vm's network profile configuration: the body carries the instance's
// location, SKU, hardware profile and network profile configuration only, as
// cloud-provider-azure's instance updates do (the compute API keeps what the body leaves out);
// sending back read-only parts of the instance as read (instance view, extensions) is not
// needed, and If-Match on the etag read makes the write conditional.
func (p *Provider) putInstance(ctx context.Context, inst instanceRef, vm *armcompute.VirtualMachineScaleSetVM) error {
	op := "updating scale-set instance " + inst.resourceID()
	body := armcompute.VirtualMachineScaleSetVM{Location: vm.Location, SKU: vm.SKU, Properties: &armcompute.VirtualMachineScaleSetVMProperties{}}
	if vm.Properties != nil {
		body.Properties.HardwareProfile, body.Properties.NetworkProfileConfiguration = vm.Properties.HardwareProfile, vm.Properties.NetworkProfileConfiguration
	}
	poller, err := p.c.ScaleSetVMs.BeginUpdate(ctx, inst.rg, inst.vmss, inst.id, body, &armcompute.VirtualMachineScaleSetVMsClientBeginUpdateOptions{IfMatch: vm.Etag})
	_, err = await(ctx, p, op, poller, err)
	return err
}

// primaryNICConfig is the instance model's primary network interface configuration.
func primaryNICConfig(vm *armcompute.VirtualMachineScaleSetVM) *armcompute.VirtualMachineScaleSetNetworkConfiguration {
	if vm.Properties == nil || vm.Properties.NetworkProfileConfiguration == nil {
		return nil
	}
	ncs := vm.Properties.NetworkProfileConfiguration.NetworkInterfaceConfigurations
	for _, nc := range ncs {
		if nc.Properties != nil && nc.Properties.Primary != nil && *nc.Properties.Primary {
			return nc
		}
	}
	if len(ncs) > 0 {
		return ncs[0]
	}
	return nil
}

func modelConfigs(nc *armcompute.VirtualMachineScaleSetNetworkConfiguration) []*armcompute.VirtualMachineScaleSetIPConfiguration {
	if nc == nil || nc.Properties == nil {
		return nil
	}
	return nc.Properties.IPConfigurations
}

// modelPrefix is the prefix the model's ipConfiguration draws its public IP from ("" when none).
func modelPrefix(c *armcompute.VirtualMachineScaleSetIPConfiguration) string {
	if c.Properties == nil || c.Properties.PublicIPAddressConfiguration == nil || c.Properties.PublicIPAddressConfiguration.Properties == nil ||
		c.Properties.PublicIPAddressConfiguration.Properties.PublicIPPrefix == nil {
		return ""
	}
	return deref(c.Properties.PublicIPAddressConfiguration.Properties.PublicIPPrefix.ID)
}

// ---- ensure, move, release ----

// uniformPrivateRefused is the answer for a Uniform scale-set instance asked to hold a private
// egress IP (a group without cloud.public), before any call.
func uniformPrivateRefused(op string, r instanceRef) error {
	return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "UniformScaleSetInstance",
		Err: fmt.Errorf("%s is an instance of the Uniform scale set %s, whose ipConfigurations take only private addresses the cloud chooses: "+
			"it serves public egress (cloud.public: true; partners allowlist the gateway's public IP prefix) but cannot hold a private egress IP; "+
			"for private egress run gateways on a node pool of standalone VMs (AKS --vm-set-type VirtualMachines)", r.resourceID(), r.vmss)}
}

// mixedPoolRefused is the answer for a move between a Uniform scale-set instance and a VM: the
// public IP would have to change kind (a prefix's address, a standalone public IP).
func mixedPoolRefused(op string) error {
	return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "MixedPoolMove",
		Err: errors.New("an egress IP does not move between a Uniform scale-set instance and a standalone VM; give the gateway's nodeSelector one kind of node pool")}
}

// ensureOnInstance makes the instance hold the cluster's ipConfiguration for ip with a public
// IP from the prefix of (owner's gateway, zone). Steady state: one list of the instance's
// NICs and one public IP read. Otherwise the prefix is read (created the first time: PUT and
// its operation), the instance read, its model written with the ipConfiguration (PUT with
// If-Match, its operation polled to the end), and the NIC and public IP read.
func (p *Provider) ensureOnInstance(ctx context.Context, node providers.NodeRef, inst instanceRef, owner providers.Owner, ip netip.Addr) (*providers.Assignment, error) {
	pfx := prefixRef(inst, owner, zoneOf(node.Zone))
	defer p.lockPrefix(pfx.rg, pfx.name)()
	return p.addToInstance(ctx, node, inst, owner, ip, pfx, nil)
}

// lockPrefix serializes the provider's uses of a prefix: an addition that draws from it and the
// deletion of the prefix once empty never overlap (a move holds it from its removal to its
// addition).
func (p *Provider) lockPrefix(rg, name string) func() {
	return p.lock("prefix/" + strings.ToLower(rg+"/"+name))
}

// addToInstance is ensureOnInstance with the prefix's lock held by the caller. nic is the
// instance's NIC as the caller just read it (nil: read it now).
func (p *Provider) addToInstance(ctx context.Context, node providers.NodeRef, inst instanceRef, owner providers.Owner, ip netip.Addr, pfx prefix, nic *armnetwork.Interface) (*providers.Assignment, error) {
	op := "ensuring " + ip.String() + " on " + node.Name
	name := configName(owner.Cluster, ip)
	defer p.lock(strings.ToLower(inst.resourceID()))()
	if nic == nil {
		var err error
		if nic, err = p.instanceNIC(ctx, inst); err != nil {
			return nil, err
		}
		if a, err := p.uniformAssignment(ctx, node.Name, inst, nic, name, ip, pfx); a != nil || err != nil {
			return a, err
		}
	}
	got, err := p.ensurePrefix(ctx, pfx, owner, deref(nic.Location))
	if err != nil {
		return nil, err
	}
	if got.Properties != nil {
		// The prefix names every public IP drawn from it: one of this ipConfiguration on
		// another instance is the address held by another node.
		for _, ref := range got.Properties.PublicIPAddresses {
			other, _, cfg, _, ok := parseScaleSetID(deref(ref.ID))
			if ok && strings.EqualFold(cfg, name) && !strings.EqualFold(other.resourceID(), inst.resourceID()) {
				return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Code: "HeldElsewhere", Err: fmt.Errorf("%s holds it; move it", other.resourceID())}
			}
		}
	}
	err = p.updateInstance(ctx, inst, func(vm *armcompute.VirtualMachineScaleSetVM) (bool, error) {
		nc := primaryNICConfig(vm)
		if nc == nil || nc.Properties == nil {
			return false, fmt.Errorf("%s: the instance's model has no network interface configuration", op)
		}
		var prim *armcompute.VirtualMachineScaleSetIPConfiguration
		for _, c := range nc.Properties.IPConfigurations {
			if strings.EqualFold(deref(c.Name), name) {
				if strings.EqualFold(modelPrefix(c), pfx.id()) {
					return instanceFailed(vm), nil
				}
				c.Properties.PublicIPAddressConfiguration = publicConfig(owner.Cluster, ip, pfx)
				return true, nil
			}
			if c.Properties != nil && c.Properties.Primary != nil && *c.Properties.Primary {
				prim = c
			}
		}
		if len(nc.Properties.IPConfigurations) >= p.cfg.MaxIPConfigurationsPerInterface {
			return false, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "IPConfigurationLimit", Err: fmt.Errorf("the instance's NIC has %d ipConfigurations", len(nc.Properties.IPConfigurations))}
		}
		props := &armcompute.VirtualMachineScaleSetIPConfigurationProperties{
			Primary: to.Ptr(false), PrivateIPAddressVersion: to.Ptr(armcompute.IPVersionIPv4),
			PublicIPAddressConfiguration: publicConfig(owner.Cluster, ip, pfx),
		}
		if prim != nil && prim.Properties != nil {
			// The primary's subnet and application security groups (so NSG rules written
			// against them cover the new address); no load-balancer pools.
			props.Subnet, props.ApplicationSecurityGroups = prim.Properties.Subnet, prim.Properties.ApplicationSecurityGroups
		}
		nc.Properties.IPConfigurations = append(nc.Properties.IPConfigurations, &armcompute.VirtualMachineScaleSetIPConfiguration{Name: to.Ptr(name), Properties: props})
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if nic, err = p.instanceNIC(ctx, inst); err != nil {
		return nil, err
	}
	a, err := p.uniformAssignment(ctx, node.Name, inst, nic, name, ip, pfx)
	if err == nil && a == nil {
		err = &providers.Error{Kind: providers.KindConflict, Op: op, Code: "NotApplied",
			Err: errors.New("the instance's operation succeeded but its NIC does not show the ipConfiguration with a public IP from the prefix")}
	}
	return a, err
}

// instanceFailed reports an instance whose last operation failed: its model may show changes
// that were never applied, so writing the same content again is not a no-op.
func instanceFailed(vm *armcompute.VirtualMachineScaleSetVM) bool {
	ps := instanceState(vm)
	return ps != nil && (*ps == armnetwork.ProvisioningStateFailed || *ps == "Canceled")
}

func publicConfig(cluster string, ip netip.Addr, pfx prefix) *armcompute.VirtualMachineScaleSetPublicIPAddressConfiguration {
	return &armcompute.VirtualMachineScaleSetPublicIPAddressConfiguration{
		Name: to.Ptr(publicName(cluster, ip)),
		SKU:  &armcompute.PublicIPAddressSKU{Name: to.Ptr(armcompute.PublicIPAddressSKUNameStandard), Tier: to.Ptr(armcompute.PublicIPAddressSKUTierRegional)},
		Properties: &armcompute.VirtualMachineScaleSetPublicIPAddressConfigurationProperties{
			PublicIPPrefix:         &armcompute.SubResource{ID: to.Ptr(pfx.id())},
			PublicIPAddressVersion: to.Ptr(armcompute.IPVersionIPv4),
			// The public IP goes with the ipConfiguration: removing it gives the address back
			// to the prefix.
			DeleteOption: to.Ptr(armcompute.DeleteOptionsDelete),
		},
	}
}

// uniformAssignment is the assignment of the instance's ipConfiguration name as its NIC shows
// it, nil when the NIC has no such ipConfiguration with a public IP from pfx. It reads the
// public IP (one call).
func (p *Provider) uniformAssignment(ctx context.Context, node string, inst instanceRef, nic *armnetwork.Interface, name string, ip netip.Addr, pfx prefix) (*providers.Assignment, error) {
	c := configByName(nic, name)
	if c == nil || c.Properties == nil || c.Properties.PublicIPAddress == nil {
		return nil, nil
	}
	_, nicName, cfg, pipName, ok := parseScaleSetID(deref(c.Properties.PublicIPAddress.ID))
	if !ok || pipName == "" {
		return nil, nil
	}
	resp, err := p.c.PublicIPAddresses.GetVirtualMachineScaleSetPublicIPAddress(ctx, inst.rg, inst.vmss, inst.id, nicName, cfg, pipName, nil)
	if err != nil {
		if ce := classify("reading the public IP of "+deref(c.ID), err); !providers.IsNotFound(ce) {
			return nil, ce
		}
		return nil, nil
	}
	pp := resp.Properties
	if pp == nil || pp.PublicIPPrefix == nil || !strings.EqualFold(deref(pp.PublicIPPrefix.ID), pfx.id()) {
		return nil, nil
	}
	// PublicAllocation as Azure spells the prefix's ID, which garbage collection compares with
	// the listed prefixes' IDs.
	a := &providers.Assignment{IP: ip, Node: node, InstanceID: inst.resourceID(), InterfaceID: deref(nic.ID), Attachment: deref(c.Name),
		PublicNATSource: cfgIP(c), PrivateAddressNotHeld: true, PublicAllocation: deref(pp.PublicIPPrefix.ID), PublicAssociation: deref(c.ID)}
	a.PublicIP, _ = netip.ParseAddr(deref(pp.IPAddress))
	if nic.Properties != nil {
		a.InterfaceMAC = strings.ToLower(strings.ReplaceAll(deref(nic.Properties.MacAddress), "-", ":"))
	}
	if c.Properties.Subnet != nil {
		a.Subnet = deref(c.Properties.Subnet.ID)
	}
	if !a.PublicIP.IsValid() || !a.PublicNATSource.IsValid() {
		return nil, nil
	}
	return a, nil
}

// removeFromInstance removes the ipConfiguration name from the instance's model (PUT and its
// operation); the public IP it drew from its prefix goes with it. Removing one the model does
// not have writes nothing.
func (p *Provider) removeFromInstance(ctx context.Context, inst instanceRef, name string) error {
	defer p.lock(strings.ToLower(inst.resourceID()))()
	err := p.updateInstance(ctx, inst, func(vm *armcompute.VirtualMachineScaleSetVM) (bool, error) {
		nc := primaryNICConfig(vm)
		cs := modelConfigs(nc)
		keep := slices.DeleteFunc(slices.Clone(cs), func(c *armcompute.VirtualMachineScaleSetIPConfiguration) bool {
			return strings.EqualFold(deref(c.Name), name)
		})
		if len(keep) == len(cs) {
			return false, nil
		}
		nc.Properties.IPConfigurations = keep
		return true, nil
	})
	if providers.IsNotFound(err) {
		return nil // the instance is gone, and its model with it
	}
	return err
}

// moveToInstance moves the cluster's ipConfiguration for cur.IP to the instance of to: removed
// from the instance holding it (its operation), then added to to's from the prefix of to's
// zone (break before make: a prefix sized to the zone's addresses has the freed address back).
func (p *Provider) moveToInstance(ctx context.Context, req providers.MoveRequest, inst instanceRef) (*providers.Assignment, error) {
	ip := req.Current.IP
	op := "moving " + ip.String() + " to " + req.To.Name
	if !req.Current.PublicIP.IsValid() && req.Current.PublicAllocation == "" {
		return nil, uniformPrivateRefused(op, inst)
	}
	from, _, _, _, fromUniform := parseScaleSetID(req.Current.InterfaceID)
	if req.Current.InterfaceID != "" && !fromUniform {
		return nil, mixedPoolRefused(op)
	}
	name := configName(req.Owner.Cluster, ip)
	pfx := prefixRef(inst, req.Owner, zoneOf(req.To.Zone))
	nic, err := p.instanceNIC(ctx, inst)
	if err != nil {
		return nil, err
	}
	if a, err := p.uniformAssignment(ctx, req.To.Name, inst, nic, name, ip, pfx); a != nil || err != nil {
		return a, err // held where asked
	}
	// The target's prefix is held from the removal to the addition, so a release of the
	// gateway's last other address does not delete it in between.
	defer p.lockPrefix(pfx.rg, pfx.name)()
	var removedAt time.Time
	if fromUniform && !strings.EqualFold(from.resourceID(), inst.resourceID()) {
		if err := p.removeFromInstance(ctx, from, name); err != nil {
			return nil, err
		}
		removedAt = time.Now()
	}
	a, err := p.addToInstance(ctx, req.To, inst, req.Owner, ip, pfx, nic)
	if err != nil {
		return nil, err
	}
	p.recordMove(ip, removedAt)
	return a, nil
}

// releaseFromInstance removes the cluster's ipConfiguration for ip from the instance whose NIC
// cur names, then deletes the prefix cur's public IP came from when no public IP is drawn from
// it any more.
func (p *Provider) releaseFromInstance(ctx context.Context, cur providers.Assignment, cluster string) error {
	inst, _, _, _, _ := parseScaleSetID(cur.InterfaceID)
	if err := p.removeFromInstance(ctx, inst, configName(cluster, cur.IP)); err != nil {
		return err
	}
	if rg, name, ok := parsePrefixID(cur.PublicAllocation); ok {
		if err := p.deletePrefix(ctx, rg, name, cluster); err != nil && armErrorCode(err) != prefixInUse && codeOf(err) != prefixInUse {
			return err
		}
	}
	return nil
}

// prefixInUse is the code of a prefix that public IPs are still drawn from (ARM's).
const prefixInUse = "InUsePublicIpPrefixCannotBeDeleted"

func codeOf(err error) string {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// ---- public IP prefixes ----

// prefix names a public IP prefix of egressd's.
type prefix struct {
	sub, rg, name string
	zone          string // "" when not zonal
}

func (r prefix) id() string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Network/publicIPPrefixes/%s", r.sub, r.rg, r.name)
}

// prefixRef is the prefix of owner's gateway in zone, in the instance's resource group.
func prefixRef(inst instanceRef, owner providers.Owner, zone string) prefix {
	return prefix{sub: inst.sub, rg: inst.rg, name: prefixName(owner, zone), zone: zone}
}

// ensurePrefix reads pfx, creating it the first time (a Standard IPv4 prefix of the
// configured length, in its zone, tagged for owner; PUT and its operation).
func (p *Provider) ensurePrefix(ctx context.Context, pfx prefix, owner providers.Owner, location string) (*armnetwork.PublicIPPrefix, error) {
	op := "creating public IP prefix " + pfx.name
	got, err := p.readPrefix(ctx, pfx.rg, pfx.name)
	switch {
	case err == nil && !ownedBy(got.Tags, owner.Cluster):
		return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Code: "NotOwned", Err: errors.New("public IP prefix exists without this cluster's tag")}
	case err == nil && (got.Properties == nil || got.Properties.ProvisioningState == nil ||
		(*got.Properties.ProvisioningState != armnetwork.ProvisioningStateFailed && *got.Properties.ProvisioningState != "Canceled")):
		return got, nil
	case err != nil && !providers.IsNotFound(err):
		return nil, err
	}
	if p.cfg.Location != "" {
		location = p.cfg.Location
	}
	want := armnetwork.PublicIPPrefix{
		Location: to.Ptr(location),
		SKU:      &armnetwork.PublicIPPrefixSKU{Name: to.Ptr(armnetwork.PublicIPPrefixSKUNameStandard), Tier: to.Ptr(armnetwork.PublicIPPrefixSKUTierRegional)},
		Properties: &armnetwork.PublicIPPrefixPropertiesFormat{
			PrefixLength:           to.Ptr(int32(p.cfg.PublicIPPrefixLength)),
			PublicIPAddressVersion: to.Ptr(armnetwork.IPVersionIPv4),
		},
		Tags: ownerTags(owner),
	}
	if pfx.zone != "" {
		want.Zones = []*string{to.Ptr(pfx.zone)}
		want.Tags[tagZone] = to.Ptr(pfx.zone)
	}
	poller, err := p.c.PublicIPPrefixes.BeginCreateOrUpdate(ctx, pfx.rg, pfx.name, want, nil)
	resp, err := await(ctx, p, op, poller, err)
	if err != nil {
		return nil, err
	}
	return &resp.PublicIPPrefix, nil
}

// readPrefix reads a prefix once no operation on it runs (busyRetries waits at most).
func (p *Provider) readPrefix(ctx context.Context, rg, name string) (*armnetwork.PublicIPPrefix, error) {
	op := "reading public IP prefix " + name
	return readSettled(ctx, p, op, func() (*armnetwork.PublicIPPrefix, *armnetwork.ProvisioningState, error) {
		got, err := p.c.PublicIPPrefixes.Get(ctx, rg, name, nil)
		if err != nil || got.Properties == nil {
			return &got.PublicIPPrefix, nil, classify(op, err)
		}
		return &got.PublicIPPrefix, got.Properties.ProvisioningState, nil
	})
}

// deletePrefix deletes the cluster's prefix rg/name when no public IP is drawn from it (Azure
// refuses to delete one in use): the gateway's last egress IP in its zone is gone. A prefix
// still in use is left as it is, Conflict InUsePublicIpPrefixCannotBeDeleted; one already gone
// is nil.
func (p *Provider) deletePrefix(ctx context.Context, rg, name, cluster string) error {
	op := "deleting public IP prefix " + name
	defer p.lockPrefix(rg, name)()
	got, err := p.readPrefix(ctx, rg, name)
	if providers.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !ownedBy(got.Tags, cluster) {
		return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: errors.New("public IP prefix not tagged for this cluster")}
	}
	if got.Properties != nil && len(got.Properties.PublicIPAddresses) > 0 {
		// Another egress IP of the gateway and zone still draws from it.
		return &providers.Error{Kind: providers.KindConflict, Op: op, Code: prefixInUse, Err: fmt.Errorf("%d public IPs are drawn from it", len(got.Properties.PublicIPAddresses))}
	}
	poller, err := p.c.PublicIPPrefixes.BeginDelete(ctx, rg, name, nil)
	if err == nil {
		_, err = poller.PollUntilDone(ctx, p.pollOptions())
	}
	if ce := classify(op, err); ce != nil && !providers.IsNotFound(ce) {
		return ce
	}
	return nil
}

// listOwnedPrefixes appends to out the cluster's prefixes in the configured resource group and
// the Uniform instances' ipConfigurations of the cluster drawing from them: one paginated
// prefix list (a prefix names every public IP drawn from it).
func (p *Provider) listOwnedPrefixes(ctx context.Context, cluster string, out []providers.OwnedResource) ([]providers.OwnedResource, error) {
	var prefixes []providers.OwnedResource
	pager := p.c.PublicIPPrefixes.NewListPager(p.cfg.ResourceGroup, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			if ce := classify("listing public IP prefixes", err); ce != nil && providers.IsNotFound(ce) {
				break
			} else {
				return nil, ce
			}
		}
		for _, pf := range page.Value {
			if !ownedBy(pf.Tags, cluster) {
				continue
			}
			owner := providers.Owner{Cluster: cluster, Gateway: deref(pf.Tags[tagOwner])}
			if pf.Properties != nil {
				for _, ref := range pf.Properties.PublicIPAddresses {
					inst, nic, cfg, _, ok := parseScaleSetID(deref(ref.ID))
					ip, mine := ipOfConfigName(cluster, cfg)
					if !ok || !mine {
						continue
					}
					out = append(out, providers.OwnedResource{Kind: providers.ResourcePrivateIP, ID: scaleSetNICID(inst, nic) + "/ipConfigurations/" + cfg,
						IP: ip, Owner: owner, InstanceID: inst.resourceID()})
				}
			}
			// After the ipConfigurations: garbage collection releases those first, then the
			// prefix they emptied.
			prefixes = append(prefixes, providers.OwnedResource{Kind: providers.ResourcePublicIP, ID: deref(pf.ID), Owner: owner})
		}
	}
	return append(out, prefixes...), nil
}

// isUniformRelease reports whether cur names a Uniform instance's NIC.
func isUniformRelease(cur providers.Assignment) bool {
	_, _, _, _, ok := parseScaleSetID(cur.InterfaceID)
	return ok
}
