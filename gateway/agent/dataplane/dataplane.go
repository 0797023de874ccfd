package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/bpf/marks"
	"github.com/egressd/egressd/gateway/contract"
)

// Defaults of Config.
const (
	DefaultTunnelDevice = "egressd0"
	// DefaultRulePriority is the ip rule preference of egressd's policy
	// routing rules (before the main table's 32766).
	DefaultRulePriority = 17400
	// DefaultTableBase is the first routing table egressd owns: the
	// return table itself, then one table per egress interface at
	// DefaultTableBase+ifindex.
	DefaultTableBase = 0xe60000
	// DefaultNFTTable is the name of egressd's nftables table (family inet).
	DefaultNFTTable = "egressd"
	// vxlanOverhead is outer IPv4 + UDP + VXLAN + inner Ethernet.
	vxlanOverhead = 50
)

// DefaultInterfacePatterns match the host side of pod interfaces of common
// CNIs (Cilium, AWS VPC CNI, Calico, bridge/ptp, Azure, GKE).
var DefaultInterfacePatterns = []string{"lxc*", "eni*", "cali*", "veth*", "azv*", "gke*"}

// Config is fixed for a Dataplane's lifetime.
type Config struct {
	// NetNS is the path of the network namespace to manage (e.g.
	// /run/netns/x). Empty: the namespace of the calling process.
	NetNS string
	// PinRoot is egressd's bpffs directory; empty means bpf.DefaultPinRoot.
	PinRoot string
	// TunnelDevice names the VXLAN device; empty means DefaultTunnelDevice.
	TunnelDevice string
	// TunnelPort is the VXLAN UDP port; 0 means
	// contract.DefaultTunnelPort. All nodes must agree.
	TunnelPort uint16
	// InterfacePatterns are shell patterns (path.Match) of pod interface
	// names; nil means DefaultInterfacePatterns.
	InterfacePatterns []string
	// RulePriority, TableBase and NFTTable: see the defaults.
	RulePriority int
	TableBase    int
	NFTTable     string
	// Clsact attaches with tc clsact filters instead of tcx links (for
	// kernels before 6.6).
	Clsact bool
	// Redirect steers by redirecting from the classifier straight to the
	// tunnel device, skipping the rest of the tc chain and the node's
	// netfilter (and so a CNI's NetworkPolicy) for steered traffic: the
	// design before v3, faster per packet, for CNIs that bypass the stack
	// themselves (docs/datapath.md#networkpolicy). Off (the default):
	// steered packets cross the stack like any other.
	Redirect bool
	// HoldEstablished is how long an established TCP flow whose gateway
	// went away waits for a listed gateway to hold its egress IP again
	// (the zone's survivor, once the cloud moved the address) before it
	// is sent to another gateway, which breaks it (bpf.TunnelConfig.Hold).
	// Zero means DefaultHoldEstablished; negative: never held.
	HoldEstablished time.Duration
	// Limits sizes the bpf maps.
	Limits bpf.Limits
	// SNATPorts bounds the source ports a gateway translates flows to, on
	// each egress IP: the port budget of one egress IP toward one destination
	// address, port and protocol. Zero: the kernel's choice (1024-65535 for a
	// flow from an unprivileged port, 64512 ports).
	SNATPorts PortRange
	// Marks is where egressd's bits sit in the packet mark, for the programs,
	// the nftables rules and the ip rules alike; the zero value is
	// marks.Default. Bits outside Marks.Mask (a CNI's) are kept. Group
	// ids past Marks.MaxGroup are refused.
	Marks marks.Layout
}

// PortRange is an inclusive range of ports; the zero value is unset.
type PortRange struct {
	Min, Max uint16
}

// Size is the number of ports in the range; 0 when unset.
func (r PortRange) Size() int {
	if r.Min == 0 {
		return 0
	}
	return int(r.Max) - int(r.Min) + 1
}

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// ParsePortRange reads "min-max" (1 <= min <= max <= 65535); "" is unset.
func ParsePortRange(s string) (PortRange, error) {
	if s == "" {
		return PortRange{}, nil
	}
	var r PortRange
	if n, err := fmt.Sscanf(s, "%d-%d", &r.Min, &r.Max); err != nil || n != 2 || fmt.Sprintf("%d-%d", r.Min, r.Max) != s {
		return PortRange{}, fmt.Errorf("port range %q: want min-max, e.g. 1024-65535", s)
	}
	if err := r.validate(); err != nil {
		return PortRange{}, err
	}
	return r, nil
}

func (r PortRange) validate() error {
	if r != (PortRange{}) && (r.Min == 0 || r.Min > r.Max) {
		return fmt.Errorf("port range %s: want 1 <= min <= max", r)
	}
	return nil
}

func (c *Config) defaults() {
	if c.TunnelDevice == "" {
		c.TunnelDevice = DefaultTunnelDevice
	}
	if c.TunnelPort == 0 {
		c.TunnelPort = contract.DefaultTunnelPort
	}
	if c.InterfacePatterns == nil {
		c.InterfacePatterns = DefaultInterfacePatterns
	}
	if c.RulePriority == 0 {
		c.RulePriority = DefaultRulePriority
	}
	if c.TableBase == 0 {
		c.TableBase = DefaultTableBase
	}
	if c.NFTTable == "" {
		c.NFTTable = DefaultNFTTable
	}
	c.Marks = c.Marks.OrDefault()
	switch {
	case c.HoldEstablished == 0:
		c.HoldEstablished = DefaultHoldEstablished
	case c.HoldEstablished < 0:
		c.HoldEstablished = 0
	}
}

// DefaultHoldEstablished covers a cloud move: detection, the call, and the fabric applying it
// (EC2's reassignment and GCE's alias operations take seconds; an Azure NIC update often
// longer, docs/datapath.md). An established connection whose address finds no holder within
// it is sent to another gateway and breaks, as before the hold.
const DefaultHoldEstablished = 60 * time.Second

// Dataplane owns the node-local datapath. Its methods are safe for
// concurrent use.
type Dataplane struct {
	cfg Config

	mu      sync.Mutex
	dp      *bpf.Datapath
	state   *State // last applied
	nftHash string
	nftLast nftModel // the table nftHash describes
	// refusedBase: SNATUsage.Refused counted by tables since replaced.
	refusedBase map[netip.Addr]uint64
	// probeIfindex is the only interface the probe reflector is attached
	// to (0: none) once probeKnown.
	probeKnown   bool
	probeIfindex int
	// othersRemoved: the datapath an agent of another bpf.Version pinned
	// (an upgrade) is gone.
	othersRemoved bool
}

// New returns a Dataplane. It touches nothing: the first Apply loads the
// programs (reusing pinned maps and links) and builds the rest.
func New(cfg Config) *Dataplane {
	cfg.defaults()
	return &Dataplane{cfg: cfg}
}

// inNS runs fn on a thread switched into the configured network namespace.
// Sockets created there (netlink, nftables) stay in that namespace.
func (d *Dataplane) inNS(fn func() error) error {
	if d.cfg.NetNS == "" {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("getting current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(d.cfg.NetNS)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("opening netns %s: %w", d.cfg.NetNS, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering netns %s: %w", d.cfg.NetNS, err)
	}
	defer func() {
		if err := netns.Set(orig); err == nil {
			// Only a thread back in its own namespace may be reused.
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

func (d *Dataplane) load() error {
	if d.dp != nil {
		return nil
	}
	dp, err := bpf.Load(bpf.Options{PinRoot: d.cfg.PinRoot, Limits: d.cfg.Limits, Marks: d.cfg.Marks})
	if err != nil {
		return err
	}
	// Flow events are on only while this process observes (ObserveFlows): an agent that
	// died observing left them on in the pinned map.
	if err := dp.SetObserve(bpf.ObserveConfig{}); err != nil {
		_ = dp.Close()
		return err
	}
	d.dp = dp
	return nil
}

// Apply makes the node's datapath match s. Order matters so that no update
// opens a window where matched traffic leaks with the node IP or is
// dropped: gateway plumbing first, then groups, then rules, then endpoints;
// stale rules and groups go last; the probe reflector after all of them.
// A state that does not fit the maps fails with a *CapacityError before
// anything is touched.
func (d *Dataplane) Apply(ctx context.Context, s State) error {
	if err := s.validate(d.cfg.Marks); err != nil {
		return fmt.Errorf("validating state: %w", err)
	}
	if err := d.cfg.SNATPorts.validate(); err != nil {
		return fmt.Errorf("SNAT ports: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.load(); err != nil {
		return err
	}
	return d.inNS(func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Before the first write: a state that does not fit fails whole.
		p, err := d.planMaps(&s)
		if err != nil {
			return err
		}
		if err := d.ensureTunnel(s.NodeIP, s.ProbePort); err != nil {
			return err
		}
		tun, err := netlink.LinkByName(d.cfg.TunnelDevice)
		if err != nil {
			return fmt.Errorf("finding tunnel device: %w", err)
		}
		// Before the groups: a new gateway's first packets are encapsulated
		// by the programs (until then the tunnel device does it).
		if err := d.applyNexthops(&s, p, tun.Attrs().Index); err != nil {
			return err
		}
		if err := d.applyGateway(s.Gateway, p, steerFamilies(&s)); err != nil {
			return err
		}
		if err := d.applyMaps(&s, p); err != nil {
			return err
		}
		if err := d.syncPodLinks(&s); err != nil {
			return err
		}
		// Last: the node answers probes from the datapath only once the
		// rest of it is in place.
		if err := d.applyProbe(&s); err != nil {
			return err
		}
		cp := s
		d.state = &cp
		// After an upgrade the previous version's programs stay attached
		// (and keep steering with their frozen maps) until removed: now
		// that this version's datapath is whole, detach them.
		if !d.othersRemoved {
			if err := bpf.RemoveOtherVersions(d.cfg.PinRoot); err != nil {
				return err
			}
			d.othersRemoved = true
		}
		return nil
	})
}

// steerFamilies are the address families a source node steers through the
// tunnel: IPv4 whenever a policy set points at a group, IPv6 when one has an
// IPv6 destination (a node with IPv6 disabled refuses v6 rules and routes).
func steerFamilies(s *State) []int {
	var v4, v6 bool
	for _, ps := range s.PolicySets {
		for _, d := range ps.Destinations {
			v4 = true
			v6 = v6 || d.Prefix.Addr().Is6()
		}
	}
	var out []int
	if v4 {
		out = append(out, netlink.FAMILY_V4)
	}
	if v6 {
		out = append(out, netlink.FAMILY_V6)
	}
	return out
}

// applyMaps writes groups, rules and endpoints. The order keeps every
// endpoint pointing at a complete policy set, even when a write fails half
// way (a kernel error: planMaps has ruled out a full map):
//  1. endpoints of departed pods are deleted first, so a pod IP that is gone
//     never keeps classifying traffic, and a later failure cannot leave it
//     behind for a new pod that reuses the IP;
//  2. groups, then rules are upserted, so every set an endpoint will point
//     at is complete before any endpoint points at it;
//  3. endpoints are upserted (a reused IP moves to its new set here);
//  4. only then stale rules and groups go: no endpoint points at them any
//     more, and a failure before this step leaves them in place, still
//     complete, for the endpoints that were not moved yet.
func (d *Dataplane) applyMaps(s *State, p *plan) error {
	dp := d.dp
	wantEP := d.wantEndpoints(s)
	for ip := range p.haveEP {
		if _, ok := wantEP[ip]; !ok {
			if err := dp.DeleteEndpoint(ip); err != nil {
				return err
			}
		}
	}
	// Groups.
	for _, g := range s.Groups {
		gws := make([]bpf.Gateway, 0, len(g.Gateways))
		for _, gw := range g.Gateways {
			gws = append(gws, bpf.Gateway{ID: gw.ID, Underlay: gw.NodeIP, Healthy: gw.Healthy, Draining: gw.Draining,
				Local: gw.NodeIP == s.NodeIP, Egress: gw.EgressIPv4})
		}
		if err := dp.SetGroup(g.ID, gws); err != nil {
			return err
		}
	}
	// Rules: upsert every desired rule before deleting stale ones, so a
	// prefix present before and after is never missing.
	want, have := p.wantRules, p.haveRules
	for k, r := range want {
		if old, ok := have[k]; ok && old == r {
			continue
		}
		if err := dp.SetRule(k, r); err != nil {
			return err
		}
	}
	for ip, ep := range wantEP {
		if old, ok := p.haveEP[ip]; ok && old == ep {
			continue
		}
		if err := dp.SetEndpoint(ip, ep); err != nil {
			return err
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			if err := dp.DeleteRule(k); err != nil {
				return err
			}
		}
	}
	wantG := map[uint32]bool{}
	for _, g := range s.Groups {
		wantG[g.ID] = true
	}
	for id := range p.haveG {
		if !wantG[id] {
			if err := dp.DeleteGroup(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// wantEndpoints is the endpoint map s asks for, with each pod's host-side
// interface resolved in the managed namespace.
func (d *Dataplane) wantEndpoints(s *State) map[netip.Addr]bpf.Endpoint {
	wantEP := map[netip.Addr]bpf.Endpoint{}
	for _, p := range s.Pods {
		ifindex := 0
		if p.Interface != "" {
			if l, err := netlink.LinkByName(p.Interface); err == nil {
				ifindex = l.Attrs().Index
			}
		} else if len(p.IPs) > 0 {
			if rs, err := netlink.RouteGet(p.IPs[0].AsSlice()); err == nil && len(rs) > 0 {
				ifindex = rs[0].LinkIndex
			}
		}
		for _, ip := range p.IPs {
			wantEP[ip.Unmap()] = bpf.Endpoint{PolicySet: p.PolicySet, Ifindex: uint32(ifindex), Prober: p.Prober}
		}
	}
	return wantEP
}

func (d *Dataplane) matches(name string) bool {
	for _, p := range d.cfg.InterfacePatterns {
		if ok, _ := filepath.Match(p, name); ok {
			return true
		}
	}
	return false
}

func (d *Dataplane) attach(h bpf.Hook, ifindex int, name string) error {
	if d.cfg.Clsact {
		return d.dp.AttachClsact(h, ifindex)
	}
	return d.dp.AttachTCX(h, ifindex, name)
}

// syncPodLinks attaches the classifier to every pod interface and drops
// links of interfaces that are gone.
func (d *Dataplane) syncPodLinks(s *State) error {
	explicit := map[string]bool{}
	for _, p := range s.Pods {
		if p.Interface != "" {
			explicit[p.Interface] = true
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	present := map[string]int{}
	for _, l := range links {
		name := l.Attrs().Name
		if name == d.cfg.TunnelDevice || !explicit[name] && !d.matches(name) {
			continue
		}
		present[name] = l.Attrs().Index
		if err := d.attach(bpf.HookPod, l.Attrs().Index, name); err != nil {
			return err
		}
	}
	if d.cfg.Clsact {
		return nil
	}
	atts, err := d.dp.Attachments()
	if err != nil {
		return err
	}
	for _, a := range atts {
		if a.Hook != bpf.HookPod {
			continue
		}
		if idx, ok := present[a.Interface]; !ok || idx != a.Ifindex {
			if err := d.dp.DetachTCX(bpf.HookPod, a.Interface); err != nil {
				return err
			}
		}
	}
	return nil
}

// Run watches links in the managed namespace and attaches the classifier to
// new pod interfaces as soon as they appear, until ctx ends. Apply must have
// run once before.
func (d *Dataplane) Run(ctx context.Context) error {
	ch := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	opts := netlink.LinkSubscribeOptions{ErrorCallback: func(error) {}}
	if d.cfg.NetNS != "" {
		h, err := netns.GetFromPath(d.cfg.NetNS)
		if err != nil {
			return fmt.Errorf("opening netns %s: %w", d.cfg.NetNS, err)
		}
		defer h.Close()
		opts.Namespace = &h
	}
	if err := netlink.LinkSubscribeWithOptions(ch, done, opts); err != nil {
		return fmt.Errorf("subscribing to link updates: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-ch:
			if !ok {
				return errors.New("link subscription closed")
			}
			if err := d.onLink(u); err != nil {
				return err
			}
		}
	}
}

func (d *Dataplane) onLink(u netlink.LinkUpdate) error {
	name := u.Link.Attrs().Name
	if name == d.cfg.TunnelDevice || !d.matches(name) {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return nil
	}
	return d.inNS(func() error {
		if u.Header.Type == 17 /* RTM_DELLINK */ {
			if d.cfg.Clsact {
				return nil
			}
			return d.dp.DetachTCX(bpf.HookPod, name)
		}
		return d.attach(bpf.HookPod, u.Link.Attrs().Index, name)
	})
}

// Stats returns the datapath counters.
func (d *Dataplane) Stats() (map[bpf.StatsKey]bpf.Stats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return nil, errors.New("datapath not loaded")
	}
	return d.dp.Stats()
}

// MapFill reports how full the datapath's maps are (bpf.Datapath.MapFill: it walks every key,
// tens of milliseconds for a full 64k map).
func (d *Dataplane) MapFill() ([]bpf.MapFill, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return nil, errors.New("datapath not loaded")
	}
	return d.dp.MapFill()
}

// Close releases file descriptors and leaves the datapath running, as an
// agent does when it exits to be restarted.
func (d *Dataplane) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return nil
	}
	err := d.dp.Close()
	d.dp = nil
	return err
}

// Remove tears the datapath down: links and filters, pinned maps, the
// tunnel device, the nftables table, policy rules and routes, and the egress
// addresses egressd added. It also cleans up after a crashed agent it never
// talked to.
func (d *Dataplane) Remove(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	if d.dp == nil {
		// Needed to read which addresses egressd added.
		if err := d.load(); err != nil {
			errs = append(errs, err)
		}
	}
	err := d.inNS(func() error {
		var errs []error
		if d.dp != nil {
			owned, err := d.dp.OwnedAddrs()
			if err != nil {
				errs = append(errs, err)
			}
			for _, a := range owned {
				if err := delAddr(a); err != nil {
					errs = append(errs, err)
				}
			}
		}
		errs = append(errs, d.removeRouting(), d.removeNFT(), d.removeTunnel())
		if d.cfg.Clsact {
			// Pod interfaces and the underlay interface (wherever the
			// node IP was): DetachClsact only removes egressd's filters.
			links, _ := netlink.LinkList()
			for _, l := range links {
				if _, err := bpf.DetachClsact(l.Attrs().Index); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return errors.Join(errs...)
	})
	errs = append(errs, err)
	if d.dp != nil {
		errs = append(errs, d.dp.Close())
		d.dp = nil
	}
	errs = append(errs, bpf.Remove(d.cfg.PinRoot))
	d.state = nil
	d.nftHash = ""
	d.probeKnown, d.probeIfindex = false, 0
	return errors.Join(errs...)
}

func delAddr(a bpf.OwnedAddr) error {
	l, err := netlink.LinkByIndex(a.Ifindex)
	if err != nil {
		return nil // interface gone, address gone with it
	}
	ipn := &net.IPNet{IP: a.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(a.Prefix.Bits(), a.Prefix.Addr().BitLen())}
	if err := netlink.AddrDel(l, &netlink.Addr{IPNet: ipn}); err != nil && !errors.Is(err, errAddrNotAvail) {
		return fmt.Errorf("removing %s from %s: %w", a.Prefix, l.Attrs().Name, err)
	}
	return nil
}
