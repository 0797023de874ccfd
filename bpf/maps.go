package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// Drop reasons, indexes into Stats.Drops: enum drop_reason in C, through bpf2go.
const (
	DropNoGateway = int(egressdDropReasonDROP_NO_GATEWAY)
	DropNoGroup   = int(egressdDropReasonDROP_NO_GROUP)
	DropNoTunnel  = int(egressdDropReasonDROP_NO_TUNNEL)
	DropEncap     = int(egressdDropReasonDROP_ENCAP)
	DropNotServed = int(egressdDropReasonDROP_NOT_SERVED)
	DropNoReturn  = int(egressdDropReasonDROP_NO_RETURN)
	DropMalformed = int(egressdDropReasonDROP_MALFORMED)
	// DropReservedPort: a pod sent UDP to a reserved port (SetTunnel).
	DropReservedPort = int(egressdDropReasonDROP_RESERVED_PORT)
	// DropForeignNode: a gateway got a tunnelled frame from an address that
	// is no node's (SetSource).
	DropForeignNode = int(egressdDropReasonDROP_FOREIGN_NODE)
	// DropForeignSource: a gateway got a tunnelled frame from a node whose
	// inner source is no pod of that node steered to the group.
	DropForeignSource = int(egressdDropReasonDROP_FOREIGN_SOURCE)
	// DropUnsolicited: a source node got a reply-bit frame for no flow
	// pinned to the gateway that sent it.
	DropUnsolicited = int(egressdDropReasonDROP_UNSOLICITED)
	// DropNoFlow: a steered packet reached the tunnel device of its source
	// node without a pinned flow.
	DropNoFlow = int(egressdDropReasonDROP_NO_FLOW)
	// DropHeld: an established TCP flow whose gateway went away waits for
	// its egress IP to reach a listed gateway (TunnelConfig.Hold).
	DropHeld       = int(egressdDropReasonDROP_HELD)
	NumDropReasons = int(egressdDropReasonDROP_MAX)
)

// DropReasonNames names the drop reasons for metrics.
var DropReasonNames = [NumDropReasons]string{
	"no_gateway", "no_group", "no_tunnel", "encap", "not_served", "no_return", "malformed",
	"reserved_port", "foreign_node", "foreign_source", "unsolicited", "no_flow", "held",
}

// GatewaySelf is the gateway id under which a gateway node counts traffic it
// forwards for others.
const GatewaySelf = 0xffffffff

func addr16(a netip.Addr) [16]byte {
	return a.As16() // IPv4 becomes IPv4-mapped IPv6, as in the C side
}

// be32 is an IPv4 address as the C side stores it (network byte order, in a
// native-endian __u32).
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func fromBE32(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// Endpoint is the classifier's view of a local pod address.
type Endpoint struct {
	PolicySet uint32 // 0: not selected by any policy
	Ifindex   uint32 // host-side interface, used to deliver replies
	// Prober pods may send to the probe port (the second reserved port of
	// SetTunnel): the controller's, which probe every gateway.
	Prober bool
}

const epProber = uint32(egressdEpFlagsEP_PROBER)

func (e Endpoint) value() egressdEndpoint {
	v := egressdEndpoint{PolicySet: e.PolicySet, Ifindex: e.Ifindex}
	if e.Prober {
		v.Flags |= epProber
	}
	return v
}

// SetEndpoint inserts or replaces the entry of a pod address.
func (d *Datapath) SetEndpoint(ip netip.Addr, ep Endpoint) error {
	k := egressdEndpointKey{Addr: addr16(ip.Unmap())}
	v := ep.value()
	if err := d.objs.Endpoints.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("setting endpoint %s: %w", ip, err)
	}
	return nil
}

// DeleteEndpoint removes a pod address; a missing entry is not an error.
func (d *Datapath) DeleteEndpoint(ip netip.Addr) error {
	k := egressdEndpointKey{Addr: addr16(ip.Unmap())}
	if err := d.objs.Endpoints.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting endpoint %s: %w", ip, err)
	}
	return nil
}

// Endpoints returns every endpoint entry.
func (d *Datapath) Endpoints() (map[netip.Addr]Endpoint, error) {
	out := map[netip.Addr]Endpoint{}
	var k egressdEndpointKey
	var v egressdEndpoint
	it := d.objs.Endpoints.Iterate()
	for it.Next(&k, &v) {
		out[netip.AddrFrom16(k.Addr).Unmap()] = Endpoint{PolicySet: v.PolicySet, Ifindex: v.Ifindex, Prober: v.Flags&epProber != 0}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating endpoints: %w", err)
	}
	return out, nil
}

// RuleKey identifies a rule: a destination prefix within a policy set.
type RuleKey struct {
	PolicySet uint32
	Prefix    netip.Prefix
}

// Rule is what a destination prefix maps to.
type Rule struct {
	Group    uint32
	Excluded bool // traffic leaves normally, with the node IP
}

func (r Rule) value() egressdRule {
	v := egressdRule{Group: r.Group}
	if r.Excluded {
		v.Flags = 1
	}
	return v
}

// SetRule inserts or replaces a rule.
func (d *Datapath) SetRule(k RuleKey, r Rule) error {
	v := r.value()
	p := k.Prefix.Masked()
	var err error
	if p.Addr().Is4() {
		key := egressdRule4Key{Prefixlen: uint32(32 + p.Bits()), PolicySet: k.PolicySet, Addr: p.Addr().As4()}
		err = d.objs.Rules4.Update(&key, &v, ebpf.UpdateAny)
	} else {
		key := egressdRule6Key{Prefixlen: uint32(32 + p.Bits()), PolicySet: k.PolicySet, Addr: p.Addr().As16()}
		err = d.objs.Rules6.Update(&key, &v, ebpf.UpdateAny)
	}
	if err != nil {
		return fmt.Errorf("setting rule %d %s: %w", k.PolicySet, p, err)
	}
	return nil
}

// DeleteRule removes a rule; a missing entry is not an error.
func (d *Datapath) DeleteRule(k RuleKey) error {
	p := k.Prefix.Masked()
	var err error
	if p.Addr().Is4() {
		key := egressdRule4Key{Prefixlen: uint32(32 + p.Bits()), PolicySet: k.PolicySet, Addr: p.Addr().As4()}
		err = d.objs.Rules4.Delete(&key)
	} else {
		key := egressdRule6Key{Prefixlen: uint32(32 + p.Bits()), PolicySet: k.PolicySet, Addr: p.Addr().As16()}
		err = d.objs.Rules6.Delete(&key)
	}
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting rule %d %s: %w", k.PolicySet, p, err)
	}
	return nil
}

// Rules returns every rule of both families.
func (d *Datapath) Rules() (map[RuleKey]Rule, error) {
	out := map[RuleKey]Rule{}
	var v egressdRule
	var k4 egressdRule4Key
	it := d.objs.Rules4.Iterate()
	for it.Next(&k4, &v) {
		p := netip.PrefixFrom(netip.AddrFrom4(k4.Addr), int(k4.Prefixlen)-32)
		out[RuleKey{k4.PolicySet, p}] = Rule{Group: v.Group, Excluded: v.Flags&1 != 0}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating rules4: %w", err)
	}
	var k6 egressdRule6Key
	it = d.objs.Rules6.Iterate()
	for it.Next(&k6, &v) {
		p := netip.PrefixFrom(netip.AddrFrom16(k6.Addr), int(k6.Prefixlen)-32)
		out[RuleKey{k6.PolicySet, p}] = Rule{Group: v.Group, Excluded: v.Flags&1 != 0}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating rules6: %w", err)
	}
	return out, nil
}

// Gateway flags in the groups map: enum gw_flags in C, through bpf2go.
const (
	gwHealthy  = uint32(egressdGwFlagsGW_HEALTHY)
	gwLocal    = uint32(egressdGwFlagsGW_LOCAL)
	gwDraining = uint32(egressdGwFlagsGW_DRAINING)
)

// Gateway is one gateway of a group as this node sees it.
type Gateway struct {
	ID       uint32     // unique per gateway node, non-zero
	Underlay netip.Addr // IPv4 tunnel endpoint
	Healthy  bool
	Local    bool // this node: no tunnel hop
	// Draining gateways keep the flows pinned to them while healthy but
	// get no new ones.
	Draining bool
	// Egress is the IPv4 the gateway SNATs the group to (invalid: unknown).
	// A flow remembers its gateway's; when that gateway goes away, the flow
	// moves to the listed gateway holding the same address.
	Egress netip.Addr
}

// SetGroup replaces a group's gateway list in one map update, so the
// classifier sees either the old list or the new one.
func (d *Datapath) SetGroup(id uint32, gws []Gateway) error {
	if err := d.marks.CheckGroup(id); err != nil {
		return err
	}
	if len(gws) > MaxGateways {
		return fmt.Errorf("group %d: %d gateways, at most %d", id, len(gws), MaxGateways)
	}
	var v egressdGroup
	v.Count = uint32(len(gws))
	for i, g := range gws {
		if !g.Underlay.Is4() && !g.Local {
			return fmt.Errorf("group %d gateway %d: underlay %s is not IPv4", id, g.ID, g.Underlay)
		}
		gw := &v.Gateways[i]
		gw.Id = g.ID
		if g.Underlay.Is4() {
			gw.Underlay = be32(g.Underlay)
		}
		if g.Healthy {
			gw.Flags |= gwHealthy
		}
		if g.Local {
			gw.Flags |= gwLocal
		}
		if g.Draining {
			gw.Flags |= gwDraining
		}
		if g.Egress.Is4() {
			gw.Egress = be32(g.Egress)
		}
	}
	if err := d.objs.Groups.Update(&id, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("setting group %d: %w", id, err)
	}
	return nil
}

// DeleteGroup removes a group; a missing entry is not an error.
func (d *Datapath) DeleteGroup(id uint32) error {
	if err := d.objs.Groups.Delete(&id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting group %d: %w", id, err)
	}
	return nil
}

// Groups returns every group.
func (d *Datapath) Groups() (map[uint32][]Gateway, error) {
	out := map[uint32][]Gateway{}
	var k uint32
	var v egressdGroup
	it := d.objs.Groups.Iterate()
	for it.Next(&k, &v) {
		var gws []Gateway
		for i := 0; i < int(v.Count) && i < MaxGateways; i++ {
			g := v.Gateways[i]
			gws = append(gws, Gateway{ID: g.Id, Underlay: fromBE32(g.Underlay),
				Healthy: g.Flags&gwHealthy != 0, Local: g.Flags&gwLocal != 0, Draining: g.Flags&gwDraining != 0})
		}
		out[k] = gws
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating groups: %w", err)
	}
	return out, nil
}

// SetServed makes this node accept tunnelled traffic of a group: the tunnel
// ingress program marks it marks.Layout.Served(id).
func (d *Datapath) SetServed(id uint32) error {
	if err := d.marks.CheckGroup(id); err != nil {
		return err
	}
	v := egressdServedGroup{Mark: d.marks.Served(id)}
	if err := d.objs.Served.Update(&id, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("serving group %d: %w", id, err)
	}
	return nil
}

// DeleteServed stops serving a group; a missing entry is not an error.
func (d *Datapath) DeleteServed(id uint32) error {
	if err := d.objs.Served.Delete(&id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unserving group %d: %w", id, err)
	}
	return nil
}

// Served lists the groups this node serves as a gateway.
func (d *Datapath) Served() ([]uint32, error) {
	var out []uint32
	var k uint32
	var v egressdServedGroup
	it := d.objs.Served.Iterate()
	for it.Next(&k, &v) {
		out = append(out, k)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating served groups: %w", err)
	}
	return out, nil
}

// TunnelConfig is how this node tunnels (SetTunnel).
type TunnelConfig struct {
	// Ifindex of the egressd tunnel device; 0: none.
	Ifindex int
	// NodeIP is this node's underlay IPv4 address: the outer source of every
	// frame it tunnels (receivers admit frames by it, see SetSource).
	NodeIP netip.Addr
	// ReservedPorts are up to two UDP ports pods may never send to,
	// wherever to (the agent passes the tunnel port and the probe port). The
	// first is the tunnel's: the outer destination port of the frames the
	// programs encapsulate themselves (SetNexthop). A
	// pod that reached a gateway's tunnel port could hand it frames with any
	// inner source, from its node's address once its node masquerades them;
	// the classifier drops such packets, counted DropReservedPort. Prober
	// endpoints may send to the second port.
	ReservedPorts []uint16
	// Redirect steers as before v3: the classifier encapsulates and
	// redirects to the tunnel device itself, so no program after it in the
	// tc chain and no netfilter rule of this node sees steered traffic (a
	// CNI's NetworkPolicy does not apply to it). Off: steered packets go on
	// marked, through the stack, to the tunnel device (MarkSteer).
	Redirect bool
	// Hold is how long an established TCP flow whose gateway went away
	// waits, its packets dropped (DropHeld) and retransmitted by TCP, for a
	// listed gateway to hold its egress IP again, before it is sent to
	// another gateway, which breaks it. Rounded up to units of 2^30 ns; 0:
	// not held.
	Hold time.Duration
}

// holdUnit is the unit of the datapath's hold time: bpf_ktime_get_ns() >> 30.
const holdUnit = time.Duration(1 << 30)

// SetTunnel configures tunnelling.
func (d *Datapath) SetTunnel(c TunnelConfig) error {
	if len(c.ReservedPorts) > 2 {
		return fmt.Errorf("%d reserved ports, the datapath holds 2", len(c.ReservedPorts))
	}
	if !c.NodeIP.Is4() {
		return fmt.Errorf("tunnel source %s is not IPv4", c.NodeIP)
	}
	k := uint32(0)
	v := egressdConfig{TunnelIfindex: uint32(c.Ifindex), NodeIp: be32(c.NodeIP)}
	if c.Redirect {
		v.Flags |= uint32(egressdConfigFlagsCFG_REDIRECT)
	}
	if c.Hold < 0 {
		return fmt.Errorf("hold %v is negative", c.Hold)
	}
	v.Hold = uint32((c.Hold + holdUnit - 1) / holdUnit)
	for i, port := range c.ReservedPorts {
		var pb [2]byte
		binary.BigEndian.PutUint16(pb[:], port)
		v.ReservedPorts[i] = binary.NativeEndian.Uint16(pb[:])
	}
	if err := d.objs.Config.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("setting tunnel ifindex: %w", err)
	}
	return nil
}

// Nexthop is how this node reaches a tunnel peer (a gateway, or on a gateway a source node):
// the programs encapsulate a frame to the peer themselves and send it out of Ifindex, once a
// route lookup bound to that device (main table) finds the peer's next hop with its neighbour
// entry resolved. A peer without one, or whose lookup fails, takes the tunnel device's
// encapsulation, which looks its route up for every frame (EncapStats counts which).
type Nexthop struct {
	Ifindex int
}

// SetNexthop records the next hop toward peer (IPv4).
func (d *Datapath) SetNexthop(peer netip.Addr, nh Nexthop) error {
	if !peer.Is4() || nh.Ifindex <= 0 {
		return fmt.Errorf("next hop of %s dev %d: want an IPv4 peer and an interface", peer, nh.Ifindex)
	}
	k := be32(peer)
	v := egressdNexthop{Ifindex: uint32(nh.Ifindex)}
	if err := d.objs.Nexthops.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("setting next hop of %s: %w", peer, err)
	}
	return nil
}

// DeleteNexthop forgets the next hop toward peer; a missing entry is not an error.
func (d *Datapath) DeleteNexthop(peer netip.Addr) error {
	if !peer.Is4() {
		return nil
	}
	k := be32(peer)
	if err := d.objs.Nexthops.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting next hop of %s: %w", peer, err)
	}
	return nil
}

// Nexthops lists the recorded next hops by peer.
func (d *Datapath) Nexthops() (map[netip.Addr]Nexthop, error) {
	out := map[netip.Addr]Nexthop{}
	var k uint32
	var v egressdNexthop
	it := d.objs.Nexthops.Iterate()
	for it.Next(&k, &v) {
		out[fromBE32(k)] = Nexthop{Ifindex: int(v.Ifindex)}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating next hops: %w", err)
	}
	return out, nil
}

// EncapStats says which path carried the frames the programs tunnel, summed over CPUs:
// InProgram were encapsulated by the programs and sent from the underlay device; the others
// took the tunnel device's encapsulation, NoNexthop for a peer without a next hop, NotFit
// for a frame too long for the outer header or the tunnel's MTU (or one the kernel would not
// make room in), and Route by the route lookup's result (BPF_FIB_LKUP_RET_* code: 7,
// NO_NEIGH, while the peer's neighbour is unresolved, which the tunnel device resolves; 4,
// NOT_FWDED, no route on the next hop's device; 5, FWD_DISABLED, forwarding off on it; 15:
// the lookup failed, e.g. the device is gone).
type EncapStats struct {
	InProgram, NoNexthop, NotFit uint64
	Route                        map[int]uint64
}

// Fallback is how many frames took the tunnel device's path.
func (s EncapStats) Fallback() uint64 {
	n := s.NoNexthop + s.NotFit
	for _, c := range s.Route {
		n += c
	}
	return n
}

// EncapStats returns the counters of the encapsulation paths.
func (d *Datapath) EncapStats() (EncapStats, error) {
	s := EncapStats{Route: map[int]uint64{}}
	for i := range uint32(egressdEncapPathENCAP_PATH_MAX) {
		var vs []uint64
		if err := d.objs.EncapStats.Lookup(&i, &vs); err != nil {
			return EncapStats{}, fmt.Errorf("reading encapsulation counters: %w", err)
		}
		var n uint64
		for _, v := range vs {
			n += v
		}
		switch p := egressdEncapPath(i); {
		case p == egressdEncapPathENCAP_SENT:
			s.InProgram = n
		case p == egressdEncapPathENCAP_NO_NEXTHOP:
			s.NoNexthop = n
		case p == egressdEncapPathENCAP_NOT_FIT:
			s.NotFit = n
		case p >= egressdEncapPathENCAP_FIB && n > 0:
			s.Route[int(p-egressdEncapPathENCAP_FIB)] = n
		}
	}
	return s, nil
}

// Source admits tunnelled traffic on a gateway: a frame of Group whose outer
// source is Node (a node's underlay IPv4) and whose inner source is Pod (a
// pod of that node that a policy steers to the group) is forwarded; any
// other is dropped, counted DropForeignSource when Node is a known node and
// DropForeignNode otherwise. A node entry has Group 0 and no Pod: it only
// makes Node known.
type Source struct {
	Node  netip.Addr
	Group uint32
	Pod   netip.Addr
}

func (s Source) key() (egressdSourceKey, error) {
	if !s.Node.Is4() {
		return egressdSourceKey{}, fmt.Errorf("source node %s is not IPv4", s.Node)
	}
	k := egressdSourceKey{Node: be32(s.Node), Group: s.Group}
	switch {
	case s.Group == 0 && s.Pod.IsValid():
		return k, fmt.Errorf("source %s on node %s: a pod entry needs a group", s.Pod, s.Node)
	case s.Group != 0 && !s.Pod.IsValid():
		return k, fmt.Errorf("source of node %s group %d: no pod address", s.Node, s.Group)
	case s.Group > MaxGroup:
		return k, fmt.Errorf("source %s: group %d out of range 1-%d", s.Pod, s.Group, MaxGroup)
	case s.Pod.IsValid():
		k.Addr = addr16(s.Pod.Unmap())
	}
	return k, nil
}

// SetSource admits a source (or makes a node known).
func (d *Datapath) SetSource(s Source) error {
	k, err := s.key()
	if err != nil {
		return err
	}
	v := uint32(1)
	if err := d.objs.Sources.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("admitting source %s of node %s for group %d: %w", s.Pod, s.Node, s.Group, err)
	}
	return nil
}

// DeleteSource removes a source; a missing entry is not an error.
func (d *Datapath) DeleteSource(s Source) error {
	k, err := s.key()
	if err != nil {
		return err
	}
	if err := d.objs.Sources.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("removing source %s of node %s for group %d: %w", s.Pod, s.Node, s.Group, err)
	}
	return nil
}

// Sources returns every source entry, node entries included.
func (d *Datapath) Sources() (map[Source]bool, error) {
	out := map[Source]bool{}
	var k egressdSourceKey
	var v uint32
	it := d.objs.Sources.Iterate()
	for it.Next(&k, &v) {
		s := Source{Node: fromBE32(k.Node), Group: k.Group}
		if k.Group != 0 {
			s.Pod = netip.AddrFrom16(k.Addr).Unmap()
		}
		out[s] = true
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating sources: %w", err)
	}
	return out, nil
}

// ProbeConfig is what the probe reflector (HookProbe) answers.
type ProbeConfig struct {
	// Port is the probe port; 0 turns the reflector off (requests go on to
	// the stack, where a userspace responder may answer).
	Port uint16
	// NodeIP is the only destination answered (the node's underlay IPv4);
	// invalid means any.
	NodeIP netip.Addr
	// Draining sets the draining bit in replies.
	Draining bool
}

// SetProbe configures the probe reflector.
func (d *Datapath) SetProbe(c ProbeConfig) error {
	var v egressdProbeConfig
	if c.NodeIP.IsValid() {
		if !c.NodeIP.Is4() {
			return fmt.Errorf("probe node IP %s is not IPv4", c.NodeIP)
		}
		v.NodeIp = be32(c.NodeIP)
	}
	var pb [2]byte
	binary.BigEndian.PutUint16(pb[:], c.Port)
	v.Port = binary.NativeEndian.Uint16(pb[:])
	if c.Draining {
		v.Flags = 1
	}
	k := uint32(0)
	if err := d.objs.ProbeCfg.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("setting probe config: %w", err)
	}
	return nil
}

// Probe returns the probe reflector's configuration.
func (d *Datapath) Probe() (ProbeConfig, error) {
	var v egressdProbeConfig
	k := uint32(0)
	if err := d.objs.ProbeCfg.Lookup(&k, &v); err != nil {
		return ProbeConfig{}, fmt.Errorf("reading probe config: %w", err)
	}
	var c ProbeConfig
	var pb [2]byte
	binary.NativeEndian.PutUint16(pb[:], v.Port)
	c.Port = binary.BigEndian.Uint16(pb[:])
	if v.NodeIp != 0 {
		c.NodeIP = fromBE32(v.NodeIp)
	}
	c.Draining = v.Flags&1 != 0
	return c, nil
}

// StatsKey identifies a counter: a group and a gateway id (0 when no
// gateway could be chosen, GatewaySelf for traffic a gateway forwards).
type StatsKey struct {
	Group   uint32
	Gateway uint32
}

// Stats are counters summed over CPUs.
type Stats struct {
	Packets uint64
	Bytes   uint64
	Drops   [NumDropReasons]uint64
}

// Stats returns the counters.
func (d *Datapath) Stats() (map[StatsKey]Stats, error) {
	out := map[StatsKey]Stats{}
	var k egressdStatsKey
	var vs []egressdStats
	it := d.objs.Stats.Iterate()
	for it.Next(&k, &vs) {
		var s Stats
		for _, v := range vs {
			s.Packets += v.Packets
			s.Bytes += v.Bytes
			for i := range s.Drops {
				s.Drops[i] += v.Drops[i]
			}
		}
		out[StatsKey{k.Group, k.Gateway}] = s
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating stats: %w", err)
	}
	return out, nil
}

// FlowKey is a flow in its original direction (pod → destination).
type FlowKey struct {
	Src, Dst     netip.Addr
	Sport, Dport uint16 // host order; ICMP echo: Sport is the identifier
	Proto        uint8
}

func (k FlowKey) raw() egressdFlowKey {
	var r egressdFlowKey
	r.Src = addr16(k.Src.Unmap())
	r.Dst = addr16(k.Dst.Unmap())
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], k.Sport)
	r.Sport = binary.NativeEndian.Uint16(b[:])
	binary.BigEndian.PutUint16(b[:], k.Dport)
	r.Dport = binary.NativeEndian.Uint16(b[:])
	r.Proto = k.Proto
	return r
}

// FlowGateway returns the gateway id a flow is pinned to on this node.
func (d *Datapath) FlowGateway(k FlowKey) (uint32, bool, error) {
	rk := k.raw()
	var v egressdFlow
	err := d.objs.Flows.Lookup(&rk, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("looking up flow: %w", err)
	}
	return v.Gateway, true, nil
}

// OwnedAddr is an address the agent added to an interface.
type OwnedAddr struct {
	Prefix  netip.Prefix
	Ifindex int
}

// AddOwnedAddr records that the agent added an address.
func (d *Datapath) AddOwnedAddr(a OwnedAddr) error {
	k := egressdOwnedAddrKey{Addr: addr16(a.Prefix.Addr().Unmap()), Ifindex: uint32(a.Ifindex), Prefixlen: uint32(a.Prefix.Bits())}
	v := uint32(1)
	if err := d.objs.OwnedAddrs.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("recording address %s: %w", a.Prefix, err)
	}
	return nil
}

// DeleteOwnedAddr forgets an address.
func (d *Datapath) DeleteOwnedAddr(a OwnedAddr) error {
	k := egressdOwnedAddrKey{Addr: addr16(a.Prefix.Addr().Unmap()), Ifindex: uint32(a.Ifindex), Prefixlen: uint32(a.Prefix.Bits())}
	if err := d.objs.OwnedAddrs.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("forgetting address %s: %w", a.Prefix, err)
	}
	return nil
}

// OwnedAddrs lists the addresses the agent added.
func (d *Datapath) OwnedAddrs() ([]OwnedAddr, error) {
	var out []OwnedAddr
	var k egressdOwnedAddrKey
	var v uint32
	it := d.objs.OwnedAddrs.Iterate()
	for it.Next(&k, &v) {
		out = append(out, OwnedAddr{
			Prefix:  netip.PrefixFrom(netip.AddrFrom16(k.Addr).Unmap(), int(k.Prefixlen)),
			Ifindex: int(k.Ifindex),
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating owned addresses: %w", err)
	}
	return out, nil
}

// maps are the datapath's maps by their names in the object (and their pins).
func (d *Datapath) maps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		"endpoints": d.objs.Endpoints, "rules4": d.objs.Rules4, "rules6": d.objs.Rules6,
		"groups": d.objs.Groups, "flows": d.objs.Flows, "return_flows": d.objs.ReturnFlows,
		"served": d.objs.Served, "config": d.objs.Config, "stats": d.objs.Stats, "owned_addrs": d.objs.OwnedAddrs,
		"probe_cfg": d.objs.ProbeCfg, "sources": d.objs.Sources, "frags": d.objs.Frags,
		"observe_cfg": d.objs.ObserveCfg, "flow_events": d.objs.FlowEvents, "nexthops": d.objs.Nexthops,
		"encap_stats": d.objs.EncapStats,
	}
}

// MapMemory returns the kernel's memory accounting (memlock) of each map in
// bytes.
func (d *Datapath) MapMemory() (map[string]uint64, error) {
	out := map[string]uint64{}
	for name, m := range d.maps() {
		info, err := m.Info()
		if err != nil {
			return nil, fmt.Errorf("reading info of map %s: %w", name, err)
		}
		if n, ok := info.Memlock(); ok {
			out[name] = n
		}
	}
	return out, nil
}

// Capacity is the size (max_entries) of each map a dataplane state fills,
// read from the loaded maps, so it reflects Limits and maps reused from pins.
type Capacity struct {
	Endpoints, Rules4, Rules6, Groups, Served, Sources uint32
}

// Capacity returns the sizes of the loaded maps.
func (d *Datapath) Capacity() Capacity {
	return Capacity{
		Endpoints: d.objs.Endpoints.MaxEntries(),
		Rules4:    d.objs.Rules4.MaxEntries(),
		Rules6:    d.objs.Rules6.MaxEntries(),
		Groups:    d.objs.Groups.MaxEntries(),
		Served:    d.objs.Served.MaxEntries(),
		Sources:   d.objs.Sources.MaxEntries(),
	}
}

// MapFill is how full one map is.
type MapFill struct {
	Map        string
	Entries    uint32
	MaxEntries uint32
}

// FillMaps are the maps MapFill reports: every map whose overflow loses or refuses state.
var FillMaps = []string{"endpoints", "rules4", "rules6", "groups", "served", "sources", "flows", "return_flows", "frags", "stats"}

// MapFill counts the entries of each map in FillMaps by walking its keys (one syscall per
// entry: about 0.5 µs each here, so tens of milliseconds for a 64k map; call it on an interval,
// never per packet or per Apply).
func (d *Datapath) MapFill() ([]MapFill, error) {
	byName := d.maps()
	out := make([]MapFill, 0, len(FillMaps))
	for _, name := range FillMaps {
		m := byName[name]
		n, err := countKeys(m)
		if err != nil {
			return nil, fmt.Errorf("counting entries of map %s: %w", name, err)
		}
		out = append(out, MapFill{Map: name, Entries: n, MaxEntries: m.MaxEntries()})
	}
	return out, nil
}

// countKeys walks m's keys. A hash map's walk restarts from the first key when the key it
// continues from was deleted meanwhile, so the count is capped at MaxEntries.
func countKeys(m *ebpf.Map) (uint32, error) {
	var n uint32
	var prev any // nil: the first key
	for n < m.MaxEntries() {
		next, err := m.NextKeyBytes(prev)
		if err != nil {
			return n, err
		}
		if next == nil {
			return n, nil
		}
		n++
		prev = next
	}
	return n, nil
}
