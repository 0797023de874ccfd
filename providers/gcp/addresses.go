package gcp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	compute "cloud.google.com/go/compute/apiv1"
	computepb "cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/protobuf/proto"

	"github.com/egressd/egressd/providers"
)

func (p *Provider) getAddress(ctx context.Context, project, region, name string) (*computepb.Address, error) {
	var a *computepb.Address
	err := p.retry(ctx, "getting address "+name, func() error {
		var err error
		a, err = p.c.Addresses.Get(ctx, &computepb.GetAddressRequest{Project: project, Region: region, Address: name})
		return err
	})
	if providers.IsNotFound(err) {
		return nil, nil
	}
	return a, err
}

func (p *Provider) waitRegion(ctx context.Context, op, project, region string, o *compute.Operation) error {
	pb := o.Proto()
	for pb.GetStatus() != computepb.Operation_DONE {
		var next *computepb.Operation
		err := p.retry(ctx, op+": waiting for "+pb.GetName(), func() error {
			var err error
			next, err = p.c.RegionOperations.Wait(ctx, &computepb.WaitRegionOperationRequest{Project: project, Region: region, Operation: pb.GetName()})
			return err
		})
		if err != nil {
			return err
		}
		pb = next
	}
	return opError(op, pb)
}

// ensureAddress inserts the named address or finds it when it already exists (a retry after
// an ambiguous error, another controller replica, a crash). It returns the address as read
// back when read is set or the address pre-existed, and whether this call inserted it.
func (p *Provider) ensureAddress(ctx context.Context, project, region string, want *computepb.Address, read bool, owner providers.Owner) (*computepb.Address, bool, error) {
	name := want.GetName()
	op := "reserving address " + name
	var existed bool
	err := p.retry(ctx, op, func() error {
		o, err := p.c.Addresses.Insert(ctx, &computepb.InsertAddressRequest{Project: project, Region: region, AddressResource: want})
		if isStatus(err, 409) {
			existed = true
			return nil
		}
		if err != nil {
			return err
		}
		return p.waitRegion(ctx, op, project, region, o)
	})
	if err != nil {
		return nil, false, err
	}
	if !existed && !read {
		return want, true, nil
	}
	var a *computepb.Address
	err = p.retry(ctx, op, func() error {
		var err error
		a, err = p.c.Addresses.Get(ctx, &computepb.GetAddressRequest{Project: project, Region: region, Address: name})
		if isStatus(err, 404) {
			// Created (or reported existing) but not visible yet.
			return &providers.Error{Kind: providers.KindConflict, Op: op, Code: errCodeNotVisibleYet, Err: err}
		}
		if err == nil && a.GetStatus() == "RESERVING" {
			// Found while someone's insert operation runs: not usable until RESERVED.
			return &providers.Error{Kind: providers.KindConflict, Op: op, Code: errCodeReserving, Err: fmt.Errorf("address %s is RESERVING", name)}
		}
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if !ownedBy(a.GetLabels(), owner.Cluster) {
		return nil, false, &providers.Error{Kind: providers.KindConflict, Op: op, Code: "AddressNotOwned", Err: fmt.Errorf("address %s exists without this cluster's label", name)}
	}
	return a, !existed, nil
}

// disown gives up an internal reservation this provider inserted for an IP that another
// resource turned out to hold (the alias operation failed IP_IN_USE_BY_ANOTHER_RESOURCE):
// left labelled, it would name that resource as its user, and garbage collection of it would
// remove the other resource's alias. It deletes the reservation, or, when Compute refuses
// (the address is in use), replaces its labels with LabelConflict so that no cluster counts
// it as its own and an operator can find it.
func (p *Provider) disown(ctx context.Context, project, region, name string, owner providers.Owner) error {
	if err := p.deleteAddress(ctx, project, region, name); err == nil {
		return nil
	}
	op := "disowning address " + name
	return p.retry(ctx, op, func() error {
		a, err := p.c.Addresses.Get(ctx, &computepb.GetAddressRequest{Project: project, Region: region, Address: name})
		if isStatus(err, 404) {
			return nil
		}
		if err != nil {
			return err
		}
		o, err := p.c.Addresses.SetLabels(ctx, &computepb.SetLabelsAddressRequest{Project: project, Region: region, Resource: name,
			RegionSetLabelsRequestResource: &computepb.RegionSetLabelsRequest{LabelFingerprint: a.LabelFingerprint,
				Labels: map[string]string{LabelConflict: labelValue(owner.Cluster)}}})
		if err != nil {
			return err
		}
		return p.waitRegion(ctx, op, project, region, o)
	})
}

func (p *Provider) deleteAddress(ctx context.Context, project, region, name string) error {
	op := "deleting address " + name
	return p.retry(ctx, op, func() error {
		o, err := p.c.Addresses.Delete(ctx, &computepb.DeleteAddressRequest{Project: project, Region: region, Address: name})
		if isStatus(err, 404) {
			return nil
		}
		if err != nil {
			return err
		}
		return p.waitRegion(ctx, op, project, region, o)
	})
}

func (p *Provider) assignment(node string, r instanceRef, n *computepb.NetworkInterface, ip netip.Addr, pub *computepb.Address) *providers.Assignment {
	if node == "" {
		node = r.name
	}
	a := &providers.Assignment{
		IP: ip, Node: node, InstanceID: r.id(), InterfaceID: n.GetName(), Subnet: n.GetSubnetwork(),
		Attachment: n.GetName() + ":" + ip.String() + "/32",
	}
	if pub != nil {
		a.PublicIP, _ = netip.ParseAddr(pub.GetAddress())
		a.PublicAllocation = fmt.Sprintf("regions/%s/addresses/%s", r.region(), pub.GetName())
		a.PublicAssociation = n.GetName() + "/" + accessConfigName(ip)
		// An access config translates the interface's primary internal address only, never
		// an alias range: the gateway SNATs public-bound flows to that address.
		a.PublicNATSource, _ = netip.ParseAddr(n.GetNetworkIP())
	}
	return a
}

func checkIP(op string, ip netip.Addr) error {
	if !ip.Is4() {
		return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "IPv6Unsupported", Err: errors.New("GCP alias IP ranges are IPv4 only")}
	}
	return nil
}

// EnsureIP implements providers.Provider. Steady state (already held): one instances.get.
// First time: instances.get, addresses.insert (internal reservation) + regionOperations.wait,
// updateNetworkInterface + zoneOperations.wait; with Public, the external address insert +
// wait + get, instances.get, addAccessConfig + wait.
func (p *Provider) EnsureIP(ctx context.Context, req providers.EnsureRequest) (*providers.Assignment, error) {
	op := "ensuring " + req.IP.String() + " on " + req.Node.Name
	if err := checkIP(op, req.IP); err != nil {
		return nil, err
	}
	r, err := p.ref(req.Node)
	if err != nil {
		return nil, err
	}
	rd, err := p.read(ctx, r)
	if err != nil {
		return nil, err
	}
	inst := rd.inst
	n, err := egressNIC(inst, req.Interface)
	if err != nil {
		return nil, err
	}
	if req.Subnet != "" && req.Subnet != n.GetSubnetwork() && !strings.HasSuffix(n.GetSubnetwork(), "/"+req.Subnet) {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: op, Code: "SubnetMismatch", Err: fmt.Errorf("interface %s is in %s, not %s", n.GetName(), n.GetSubnetwork(), req.Subnet)}
	}
	if req.Public {
		// Refused before any change: one access config per interface.
		if err := accessConfigFree(op, n, req.IP); err != nil {
			return nil, err
		}
	}
	if !aliasHas(n, req.IP) {
		if len(n.GetAliasIpRanges()) >= p.maxAliases {
			return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "AliasIpRangesLimit", Err: fmt.Errorf("interface %s holds %d alias IP ranges", n.GetName(), len(n.GetAliasIpRanges()))}
		}
		res, created, err := p.ensureAddress(ctx, r.project, r.region(), &computepb.Address{
			Name: proto.String(internalName(req.Owner.Cluster, req.IP)), Address: proto.String(req.IP.String()),
			AddressType: proto.String("INTERNAL"), Purpose: proto.String("GCE_ENDPOINT"),
			Subnetwork: proto.String(n.GetSubnetwork()), Labels: labels(req.Owner),
		}, false, req.Owner)
		if err != nil {
			return nil, err
		}
		for _, u := range res.GetUsers() {
			if ur, ok := parseInstanceID(u); ok && ur != r {
				return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Code: "AddressInUse", Err: fmt.Errorf("%s is held by %s (use MoveIP)", req.IP, u)}
			}
		}
		if _, err := p.updateAliases(ctx, r, n.GetName(), rd, addAlias(req.IP, p.maxAliases)); err != nil {
			var pe *providers.Error
			if created && errors.As(err, &pe) && pe.Code == "IP_IN_USE_BY_ANOTHER_RESOURCE" {
				err = errors.Join(err, p.disown(ctx, r.project, r.region(), res.GetName(), req.Owner))
			}
			return nil, err
		}
	}
	var pub *computepb.Address
	if req.Public {
		if pub, err = p.ensurePublic(ctx, r, n, req.IP, req.Owner); err != nil {
			return nil, err
		}
	}
	return p.assignment(req.Node.Name, r, n, req.IP, pub), nil
}

// MoveIP implements providers.Provider. GCP has no atomic reassignment: the alias is removed
// from the holder, then added to the target (a reserved address keeps anyone else from
// taking it in between). The target is read before the removal so that the addition follows
// the removal's operation immediately; the public IP's access config moves after the alias.
func (p *Provider) MoveIP(ctx context.Context, req providers.MoveRequest) (*providers.Assignment, error) {
	ip := req.Current.IP
	op := "moving " + ip.String() + " to " + req.To.Name
	if err := checkIP(op, ip); err != nil {
		return nil, err
	}
	to, err := p.ref(req.To)
	if err != nil {
		return nil, err
	}
	res, err := p.getAddress(ctx, to.project, to.region(), internalName(req.Owner.Cluster, ip))
	if err != nil {
		return nil, err
	}
	if res == nil || !ownedBy(res.GetLabels(), req.Owner.Cluster) {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: fmt.Errorf("%s has no address reservation of this cluster", ip)}
	}
	trd, err := p.read(ctx, to)
	if err != nil {
		return nil, err
	}
	target := trd.inst
	n, err := egressNIC(target, req.Interface)
	if err != nil {
		return nil, err
	}
	if h := findHolder(target, ip); h != nil {
		n = h
	}
	wantPublic := req.Current.PublicIP.IsValid() || req.Current.PublicAllocation != ""
	var pub *computepb.Address
	if wantPublic {
		if pub, err = p.getAddress(ctx, to.project, to.region(), publicName(req.Owner.Cluster, ip)); err != nil {
			return nil, err
		}
	}
	if aliasHas(n, ip) && (pub == nil || natConfig(n, pub.GetAddress()) != nil) {
		return p.assignment(req.To.Name, to, n, ip, pub), nil
	}
	if !aliasHas(n, ip) && len(n.GetAliasIpRanges()) >= p.maxAliases {
		return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "AliasIpRangesLimit", Err: fmt.Errorf("interface %s of %s is full", n.GetName(), to.name)}
	}
	if pub != nil && natConfig(n, pub.GetAddress()) == nil {
		if err := accessConfigFree(op, n, ip); err != nil {
			return nil, err
		}
	}

	// Holders other than the target, from the reservation's users (the cloud's truth) and
	// the recorded assignment (in case the reservation's users lag).
	holders := map[instanceRef]bool{}
	for _, u := range res.GetUsers() {
		if ur, ok := parseInstanceID(u); ok && ur != to {
			holders[ur] = true
		}
	}
	if cr, ok := parseInstanceID(req.Current.InstanceID); ok && cr != to {
		holders[cr] = true
	}
	var pubRemoved, aliasRemoved time.Time
	for h := range holders {
		if pub != nil {
			if err := p.unbindPublic(ctx, h, pub.GetAddress()); err != nil {
				return nil, err
			}
			pubRemoved = time.Now()
		}
		removed, err := p.dropAlias(ctx, h, ip, nil)
		if err != nil {
			return nil, err
		}
		if removed {
			aliasRemoved = time.Now()
		}
	}
	if _, err := p.updateAliases(ctx, to, n.GetName(), trd, addAlias(ip, p.maxAliases)); err != nil {
		return nil, err
	}
	w := MoveWindow{IP: ip}
	if !aliasRemoved.IsZero() {
		w.Private = time.Since(aliasRemoved)
	}
	if pub != nil {
		if err := p.bindPublic(ctx, to, n.GetName(), ip, pub.GetAddress(), pub.GetNetworkTier()); err != nil {
			return nil, err
		}
		if !pubRemoved.IsZero() {
			w.Public = time.Since(pubRemoved)
		}
	}
	p.statsMu.Lock()
	p.last = w
	p.statsMu.Unlock()
	return p.assignment(req.To.Name, to, n, ip, pub), nil
}

// releaseRegion finds the region of a recorded assignment.
func (p *Provider) releaseTarget(cur providers.Assignment) (project, region string, holder *instanceRef) {
	project = p.project
	if r, ok := parseInstanceID(cur.InstanceID); ok {
		return r.project, r.region(), &r
	}
	if s, ok := subnetRef(cur.Subnet); ok {
		return s.project, s.region, nil
	}
	return project, "", nil
}

// ReleaseIP implements providers.Provider: unbinds and deletes the public address, removes
// the alias from whichever instance holds it, and deletes the internal reservation last (it
// is the ownership marker, so a crash part-way leaves something GC can find).
func (p *Provider) ReleaseIP(ctx context.Context, req providers.ReleaseRequest) error {
	ip := req.Current.IP
	op := "releasing " + ip.String()
	if err := checkIP(op, ip); err != nil {
		return err
	}
	project, region, recorded := p.releaseTarget(req.Current)
	if region == "" {
		return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("the assignment names no instance or subnet to find the region by")}
	}
	res, err := p.getAddress(ctx, project, region, internalName(req.Owner.Cluster, ip))
	if err != nil {
		return err
	}
	if res != nil && !ownedBy(res.GetLabels(), req.Owner.Cluster) {
		return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: fmt.Errorf("address %s is not labelled for cluster %s", res.GetName(), req.Owner.Cluster)}
	}
	pub, err := p.getAddress(ctx, project, region, publicName(req.Owner.Cluster, ip))
	if err != nil {
		return err
	}
	if pub != nil && !ownedBy(pub.GetLabels(), req.Owner.Cluster) {
		return &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: fmt.Errorf("address %s is not labelled for cluster %s", pub.GetName(), req.Owner.Cluster)}
	}
	holders := map[instanceRef]bool{}
	if res != nil {
		for _, u := range res.GetUsers() {
			if ur, ok := parseInstanceID(u); ok {
				holders[ur] = true
			}
		}
	}
	if recorded != nil {
		holders[*recorded] = true
	}
	if pub != nil {
		for _, u := range pub.GetUsers() {
			if ur, ok := parseInstanceID(u); ok {
				if err := p.unbindPublic(ctx, ur, pub.GetAddress()); err != nil {
					return err
				}
			}
		}
	}
	for h := range holders {
		var refuse error
		if res == nil {
			// An alias with no reservation of ours was not created by this cluster.
			refuse = &providers.Error{Kind: providers.KindPermission, Op: op, Code: "NotOwned", Err: fmt.Errorf("%s on %s has no reservation of cluster %s", ip, h.id(), req.Owner.Cluster)}
		}
		if _, err := p.dropAlias(ctx, h, ip, refuse); err != nil {
			return err
		}
	}
	if pub != nil {
		if err := p.deleteAddress(ctx, project, region, pub.GetName()); err != nil {
			return err
		}
	}
	if res != nil {
		if err := p.deleteAddress(ctx, project, region, res.GetName()); err != nil {
			return err
		}
	}
	return nil
}
