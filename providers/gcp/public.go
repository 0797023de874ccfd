package gcp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	computepb "cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/protobuf/proto"

	"github.com/egressd/egressd/providers"
)

func accessConfigName(ip netip.Addr) string {
	return accessConfigPrefix + strings.ReplaceAll(ip.String(), ".", "-")
}

func natConfig(n *computepb.NetworkInterface, natIP string) *computepb.AccessConfig {
	for _, ac := range n.GetAccessConfigs() {
		if ac.GetNatIP() == natIP {
			return ac
		}
	}
	return nil
}

// accessConfigFree checks that interface n can take the access config of egress IP ip: it has
// none, or has that one already. GCE allows one IPv4 access config per interface, so a node's
// own external IP (the ephemeral one GKE gives public nodes, or any other) or another egress
// IP's public address leaves no room. egressd never replaces the node's own: the node's
// traffic from its primary address (kubelet, image pulls, every pod the CNI masquerades)
// would then leave with the egress IP, and the ephemeral address could not be restored (a new
// ephemeral access config gets a new address). The coordinator places the address on another
// gateway (CapacityExhausted).
func accessConfigFree(op string, n *computepb.NetworkInterface, ip netip.Addr) error {
	for _, ac := range n.GetAccessConfigs() {
		if ac.GetName() == accessConfigName(ip) {
			continue
		}
		what := "the node's own external IP"
		if strings.HasPrefix(ac.GetName(), accessConfigPrefix) {
			what = "another egress IP's public address"
		}
		return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "AccessConfigInUse",
			Err: fmt.Errorf("interface %s already has access config %q (%s, %s); GCE allows one per interface: create public-egress gateway nodes without an external IP (GKE: a node pool with --enable-private-nodes)",
				n.GetName(), ac.GetName(), ac.GetNatIP(), what)}
	}
	return nil
}

// accessConfigLagWindow bounds how long bindPublic reads again after GCE refuses an access
// config (400) that its read said the interface had room for: long enough for a lagging read
// to show an access config added moments ago, short enough that a request GCE really refuses
// fails in seconds rather than the whole retry budget.
const accessConfigLagWindow = 5 * time.Second

// bindPublic binds natIP to the instance's NIC through an access config. A NIC has at most
// one access config: when it has another one, the node cannot take this public IP.
func (p *Provider) bindPublic(ctx context.Context, r instanceRef, nicName string, ip netip.Addr, natIP, tier string) error {
	defer p.lock(r.key())()
	op := "binding " + natIP + " to " + r.id() + " " + nicName
	var refusedSince time.Time // the first 400 of addAccessConfig after a read that showed room
	return p.retry(ctx, op, func() error {
		inst, err := p.c.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name})
		if err != nil {
			return err
		}
		n := nicByName(inst, nicName)
		if n == nil {
			return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("no such interface")}
		}
		if natConfig(n, natIP) != nil {
			return nil
		}
		if err := accessConfigFree(op, n, ip); err != nil {
			return err
		}
		ac := &computepb.AccessConfig{Name: proto.String(accessConfigName(ip)), Type: proto.String("ONE_TO_ONE_NAT"), NatIP: proto.String(natIP)}
		if tier != "" {
			ac.NetworkTier = proto.String(tier)
		}
		o, err := p.c.Instances.AddAccessConfig(ctx, &computepb.AddAccessConfigInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name, NetworkInterface: nicName, AccessConfigResource: ac})
		p.bump(r.key())
		if isStatus(err, 400) {
			// The read just showed the interface with room for this access config, and GCE
			// refused it as invalid: most likely the read was older than the interface (an
			// access config added moments ago, by this provider's lost answer or by someone
			// else). Read again for accessConfigLagWindow; every step re-reads, so a config
			// that is there ends the step (ours) or refuses it (accessConfigFree). A 400 that
			// outlasts the window is GCE's answer, passed on with its message: the decision
			// rests on the status and the interface's state, never on the message's text.
			if refusedSince.IsZero() {
				refusedSince = time.Now()
			}
			if time.Since(refusedSince) < accessConfigLagWindow {
				return &providers.Error{Kind: providers.KindConflict, Op: op, Code: errCodeNotVisibleYet, Err: err}
			}
		}
		if err != nil {
			return err
		}
		return p.waitZone(ctx, op, r, o)
	})
}

// unbindPublic removes the access config carrying natIP from the instance, if any.
func (p *Provider) unbindPublic(ctx context.Context, r instanceRef, natIP string) error {
	defer p.lock(r.key())()
	op := "unbinding " + natIP + " from " + r.id()
	return p.retry(ctx, op, func() error {
		inst, err := p.c.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name})
		if isStatus(err, 404) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, n := range inst.GetNetworkInterfaces() {
			ac := natConfig(n, natIP)
			if ac == nil {
				continue
			}
			o, err := p.c.Instances.DeleteAccessConfig(ctx, &computepb.DeleteAccessConfigInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name, NetworkInterface: n.GetName(), AccessConfig: ac.GetName()})
			p.bump(r.key())
			if err != nil {
				return err
			}
			return p.waitZone(ctx, op, r, o)
		}
		return nil
	})
}

// ensurePublic reserves (or finds) the IP's external address and binds it to the NIC.
func (p *Provider) ensurePublic(ctx context.Context, r instanceRef, n *computepb.NetworkInterface, ip netip.Addr, owner providers.Owner) (*computepb.Address, error) {
	// Steady state: the interface already carries egressd's access config; no address call.
	for _, ac := range n.GetAccessConfigs() {
		if ac.GetName() == accessConfigName(ip) && ac.GetNatIP() != "" {
			return &computepb.Address{Name: proto.String(publicName(owner.Cluster, ip)), Address: ac.NatIP, NetworkTier: ac.NetworkTier}, nil
		}
	}
	want := &computepb.Address{
		Name: proto.String(publicName(owner.Cluster, ip)), AddressType: proto.String("EXTERNAL"),
		NetworkTier: proto.String("PREMIUM"), Labels: labels(owner),
	}
	a, _, err := p.ensureAddress(ctx, r.project, r.region(), want, true, owner)
	if err != nil {
		return nil, err
	}
	if natConfig(n, a.GetAddress()) != nil {
		return a, nil
	}
	for _, u := range a.GetUsers() {
		if ur, ok := parseInstanceID(u); ok && ur != r {
			return nil, &providers.Error{Kind: providers.KindConflict, Op: "binding public IP of " + ip.String(), Code: "AddressInUse", Err: fmt.Errorf("%s is used by %s", a.GetAddress(), u)}
		}
	}
	if err := p.bindPublic(ctx, r, n.GetName(), ip, a.GetAddress(), a.GetNetworkTier()); err != nil {
		return nil, err
	}
	return a, nil
}
