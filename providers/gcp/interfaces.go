package gcp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	compute "cloud.google.com/go/compute/apiv1"
	computepb "cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/protobuf/proto"

	"github.com/egressd/egressd/providers"
)

func (p *Provider) gen(key string) uint64 {
	p.locksMu.Lock()
	defer p.locksMu.Unlock()
	return p.gens[key]
}

func (p *Provider) bump(key string) {
	p.locksMu.Lock()
	p.gens[key]++
	p.locksMu.Unlock()
}

// cachedRead is an instance read with the generation it was taken at.
type cachedRead struct {
	inst *computepb.Instance
	gen  uint64
}

func (p *Provider) read(ctx context.Context, r instanceRef) (cachedRead, error) {
	g := p.gen(r.key())
	inst, err := p.getInstance(ctx, r)
	return cachedRead{inst, g}, err
}

func (p *Provider) lock(key string) func() {
	p.locksMu.Lock()
	m := p.locks[key]
	if m == nil {
		m = &sync.Mutex{}
		p.locks[key] = m
	}
	p.locksMu.Unlock()
	m.Lock()
	return m.Unlock
}

func (p *Provider) getInstance(ctx context.Context, r instanceRef) (*computepb.Instance, error) {
	var inst *computepb.Instance
	err := p.retry(ctx, "getting instance "+r.id(), func() error {
		var err error
		inst, err = p.c.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name})
		return err
	})
	return inst, err
}

func (p *Provider) waitZone(ctx context.Context, op string, r instanceRef, o *compute.Operation) error {
	pb := o.Proto()
	for pb.GetStatus() != computepb.Operation_DONE {
		var next *computepb.Operation
		err := p.retry(ctx, op+": waiting for "+pb.GetName(), func() error {
			var err error
			next, err = p.c.ZoneOperations.Wait(ctx, &computepb.WaitZoneOperationRequest{Project: r.project, Zone: r.zone, Operation: pb.GetName()})
			return err
		})
		if err != nil {
			return err
		}
		pb = next
	}
	return opError(op, pb)
}

func nicByName(inst *computepb.Instance, name string) *computepb.NetworkInterface {
	for _, n := range inst.GetNetworkInterfaces() {
		if n.GetName() == name {
			return n
		}
	}
	return nil
}

// egressNIC picks the interface for egress IPs: nic0, or with a dedicated interface the last
// one (GCE cannot hot-add interfaces; a dedicated one must exist when the node is created).
func egressNIC(inst *computepb.Instance, mode providers.InterfaceMode) (*computepb.NetworkInterface, error) {
	nics := inst.GetNetworkInterfaces()
	if len(nics) == 0 {
		return nil, fmt.Errorf("instance %s has no network interface", inst.GetName())
	}
	if mode == providers.InterfaceDedicated {
		if len(nics) < 2 {
			return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: "choosing a dedicated interface on " + inst.GetName(), Code: "DedicatedInterfaceMissing",
				Err: errors.New("GCE cannot attach interfaces to a running instance; create the node with a second NIC")}
		}
		return nics[len(nics)-1], nil
	}
	return nics[0], nil
}

func aliasHas(n *computepb.NetworkInterface, ip netip.Addr) bool {
	for _, a := range n.GetAliasIpRanges() {
		if pr, err := parseRange(a.GetIpCidrRange()); err == nil && pr.Bits() == 32 && pr.Addr() == ip {
			return true
		}
	}
	return false
}

func parseRange(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}

// findHolder returns the interface of inst holding ip, or nil.
func findHolder(inst *computepb.Instance, ip netip.Addr) *computepb.NetworkInterface {
	for _, n := range inst.GetNetworkInterfaces() {
		if aliasHas(n, ip) {
			return n
		}
	}
	return nil
}

// updateAliases is the read-modify-write of one NIC's alias ranges, serialised per instance:
// it reads the instance (or uses cached for the first attempt), lets change compute the new
// list, sends it with the fingerprint it read and waits for the zone operation. A 412 (the
// NIC changed under us) re-reads and tries again within the retry budget. It returns the
// instance as last read.
func (p *Provider) updateAliases(ctx context.Context, r instanceRef, nicName string, cached cachedRead,
	change func(n *computepb.NetworkInterface) ([]*computepb.AliasIpRange, bool, error)) (*computepb.Instance, error) {
	defer p.lock(r.key())()
	op := "updating alias IP ranges of " + r.id() + " " + nicName
	inst := cached.inst
	if cached.gen != p.gen(r.key()) {
		inst = nil // we changed the instance since this read
	}
	err := p.retry(ctx, op, func() error {
		if inst == nil {
			var err error
			inst, err = p.c.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: r.project, Zone: r.zone, Instance: r.name})
			if err != nil {
				return err
			}
		}
		n := nicByName(inst, nicName)
		if n == nil {
			return &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("no such interface")}
		}
		ranges, changed, err := change(n)
		if err != nil || !changed {
			return err
		}
		o, err := p.c.Instances.UpdateNetworkInterface(ctx, &computepb.UpdateNetworkInterfaceInstanceRequest{
			Project: r.project, Zone: r.zone, Instance: r.name, NetworkInterface: nicName,
			NetworkInterfaceResource: &computepb.NetworkInterface{Fingerprint: n.Fingerprint, AliasIpRanges: ranges},
		})
		inst = nil // whatever happens next, the cached read is stale
		p.bump(r.key())
		if err != nil {
			return err
		}
		return p.waitZone(ctx, op, r, o)
	})
	return inst, err
}

// dropAlias removes ip's alias range from instance h when h still exists and holds it, and
// reports whether it did. When it would remove one and refuse is not nil, it returns refuse
// instead and changes nothing.
func (p *Provider) dropAlias(ctx context.Context, h instanceRef, ip netip.Addr, refuse error) (bool, error) {
	hrd, err := p.read(ctx, h)
	if providers.IsNotFound(err) {
		return false, nil // the node is gone, and its alias with it
	}
	if err != nil {
		return false, err
	}
	hn := findHolder(hrd.inst, ip)
	if hn == nil {
		return false, nil
	}
	if refuse != nil {
		return false, refuse
	}
	if _, err := p.updateAliases(ctx, h, hn.GetName(), hrd, removeAlias(ip)); err != nil {
		return false, err
	}
	return true, nil
}

func addAlias(ip netip.Addr, max int) func(n *computepb.NetworkInterface) ([]*computepb.AliasIpRange, bool, error) {
	return func(n *computepb.NetworkInterface) ([]*computepb.AliasIpRange, bool, error) {
		if aliasHas(n, ip) {
			return nil, false, nil
		}
		if len(n.GetAliasIpRanges()) >= max {
			return nil, false, &providers.Error{Kind: providers.KindCapacityExhausted, Op: "adding alias " + ip.String(), Code: "AliasIpRangesLimit",
				Err: fmt.Errorf("interface %s already has %d alias IP ranges", n.GetName(), len(n.GetAliasIpRanges()))}
		}
		out := append([]*computepb.AliasIpRange(nil), n.GetAliasIpRanges()...)
		out = append(out, &computepb.AliasIpRange{IpCidrRange: proto.String(ip.String() + "/32")})
		return out, true, nil
	}
}

func removeAlias(ip netip.Addr) func(n *computepb.NetworkInterface) ([]*computepb.AliasIpRange, bool, error) {
	return func(n *computepb.NetworkInterface) ([]*computepb.AliasIpRange, bool, error) {
		if !aliasHas(n, ip) {
			return nil, false, nil
		}
		var out []*computepb.AliasIpRange
		for _, a := range n.GetAliasIpRanges() {
			if pr, err := parseRange(a.GetIpCidrRange()); err == nil && pr.Bits() == 32 && pr.Addr() == ip {
				continue
			}
			out = append(out, a)
		}
		return out, true, nil
	}
}
