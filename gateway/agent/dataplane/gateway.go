package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf"
)

// applyGateway sets up (or, with a nil role, removes) the gateway side:
// egress addresses, policy routing, the nftables table, the sources and the
// served map. New pieces are added before the served map accepts traffic for
// them; stale ones are removed after. A new source is admitted before a
// group it uses is served; a stale one goes only after the groups that are
// no longer served, so no frame of a served group meets a half-written map.
func (d *Dataplane) applyGateway(role *GatewayRole, p *plan, steerFamilies []int) error {
	if role == nil {
		role = &GatewayRole{}
	}
	ifindex := map[string]int{}
	for _, a := range role.Addresses {
		if _, ok := ifindex[a.Interface]; ok {
			continue
		}
		l, err := netlink.LinkByName(a.Interface)
		if err != nil {
			return fmt.Errorf("finding egress interface %s: %w", a.Interface, err)
		}
		ifindex[a.Interface] = l.Attrs().Index
	}
	wantAddr, add, err := d.planAddresses(role, ifindex)
	if err != nil {
		return err
	}
	// The stray chain lists a new address before it is mounted: a destination's segment that
	// reaches it in between would otherwise be answered with a reset.
	tun, err := netlink.LinkByName(d.cfg.TunnelDevice)
	if err != nil {
		return fmt.Errorf("finding tunnel device: %w", err)
	}
	m := d.nftModel(role, tun.Attrs().MTU)
	m.strays = strayAddrs(wantAddr)
	if err := d.applyNFT(m); err != nil {
		return err
	}
	if err := d.mountAddresses(add); err != nil {
		return err
	}
	if err := d.applyRouting(role, ifindex, steerFamilies); err != nil {
		return err
	}
	for src := range p.wantSources {
		if !p.haveSources[src] {
			if err := d.dp.SetSource(src); err != nil {
				return err
			}
		}
	}
	want := map[uint32]bool{}
	for _, g := range role.Groups {
		want[g.Group] = true
		if err := d.dp.SetServed(g.Group); err != nil {
			return err
		}
	}
	served, err := d.dp.Served()
	if err != nil {
		return err
	}
	for _, id := range served {
		if !want[id] {
			if err := d.dp.DeleteServed(id); err != nil {
				return err
			}
		}
	}
	for src := range p.haveSources {
		if !p.wantSources[src] {
			if err := d.dp.DeleteSource(src); err != nil {
				return err
			}
		}
	}
	// Stale addresses last.
	owned, err := d.dp.OwnedAddrs()
	if err != nil {
		return err
	}
	for _, a := range owned {
		if !wantAddr[a] {
			if err := delAddr(a); err != nil {
				return err
			}
			if err := forgetTranslations(a.Prefix.Addr()); err != nil {
				return err
			}
			if err := d.dp.DeleteOwnedAddr(a); err != nil {
				return err
			}
		}
	}
	return nil
}

func hostPrefix(ip netip.Addr) netip.Prefix {
	return netip.PrefixFrom(ip, ip.BitLen())
}

// pendingAddr is an egress address to mount: ip on link, recorded as owned.
type pendingAddr struct {
	ip    netip.Addr
	iface string
	link  netlink.Link
	owned bpf.OwnedAddr
}

// planAddresses sorts role's addresses into want, every address egressd owns once the new ones
// are mounted (those it mounted before included), and add, the ones to mount. An address the
// interface has that egressd did not add is in neither: never claim foreign ones.
func (d *Dataplane) planAddresses(role *GatewayRole, ifindex map[string]int) (map[bpf.OwnedAddr]bool, []pendingAddr, error) {
	want := map[bpf.OwnedAddr]bool{}
	var add []pendingAddr
	owned, err := d.dp.OwnedAddrs()
	if err != nil {
		return nil, nil, err
	}
	for _, a := range role.Addresses {
		idx := ifindex[a.Interface]
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			return nil, nil, fmt.Errorf("finding %s: %w", a.Interface, err)
		}
		fam := netlink.FAMILY_V4
		if a.IP.Is6() {
			fam = netlink.FAMILY_V6
		}
		have, err := netlink.AddrList(l, fam)
		if err != nil {
			return nil, nil, fmt.Errorf("listing addresses of %s: %w", a.Interface, err)
		}
		present := false
		for _, h := range have {
			if ip, ok := netip.AddrFromSlice(h.IP); ok && ip.Unmap() == a.IP {
				present = true
			}
		}
		oa := bpf.OwnedAddr{Prefix: hostPrefix(a.IP), Ifindex: idx}
		switch {
		case !present:
			add = append(add, pendingAddr{ip: a.IP, iface: a.Interface, link: l, owned: oa})
			want[oa] = true
		case contains(owned, oa):
			want[oa] = true
		}
	}
	return want, add, nil
}

// mountAddresses adds the planned addresses. Ownership is recorded first: a crash between the
// two steps leaves a record to clean, never an unrecorded address. Once an address is mounted,
// the conntrack entries that name it are forgotten (forgetTranslations): segments that reached
// this node for it while another node held it were forwarded and left entries behind, and one
// for a destination's segment takes the reply tuple of the pod's translation that is about to
// come back here. None forms after: the stray chain drops TCP to it before conntrack confirms
// an entry, and no worker sends here before this node has proven delivery.
func (d *Dataplane) mountAddresses(add []pendingAddr) error {
	for _, a := range add {
		if err := d.dp.AddOwnedAddr(a.owned); err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.ip.AsSlice(), Mask: net.CIDRMask(a.owned.Prefix.Bits(), a.owned.Prefix.Bits())}}
		if a.ip.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(a.link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding %s to %s: %w", a.ip, a.iface, err)
		}
		if err := forgetTranslations(a.ip); err != nil {
			return err
		}
	}
	return nil
}

func contains(s []bpf.OwnedAddr, a bpf.OwnedAddr) bool {
	for _, x := range s {
		if x == a {
			return true
		}
	}
	return false
}

type ruleID struct {
	family int
	prio   int
	mark   uint32
	mask   uint32
	table  int
}

type routeID struct {
	table int
	dst   string
}

func allRoutes(family int) *net.IPNet {
	if family == netlink.FAMILY_V6 {
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

// applyRouting keeps egressd's policy rules and tables: a source node's
// steered packets (steerFamilies) and a gateway's replies marked by nftables
// go to the tunnel table (default route into the tunnel device); each served
// group's traffic goes to the table of the interface holding its egress IP,
// a copy of that interface's main-table routes.
func (d *Dataplane) applyRouting(role *GatewayRole, ifindex map[string]int, steerFamilies []int) error {
	wantRules := map[ruleID]bool{}
	var wantRoutes []netlink.Route
	tun, err := netlink.LinkByName(d.cfg.TunnelDevice)
	if err != nil {
		return fmt.Errorf("finding tunnel device: %w", err)
	}
	m := d.cfg.Marks
	tunnelTable := func(fam int) {
		wantRoutes = append(wantRoutes, netlink.Route{Table: d.cfg.TableBase, Dst: allRoutes(fam), LinkIndex: tun.Attrs().Index, Scope: netlink.SCOPE_LINK, Family: fam})
	}
	for _, fam := range steerFamilies {
		wantRules[ruleID{fam, d.cfg.RulePriority, m.Magic | m.Steer, m.MagicMask | m.Steer, d.cfg.TableBase}] = true
		tunnelTable(fam)
	}
	if len(role.Groups) > 0 {
		// IPv6 replies exist only where a group is served with an IPv6 egress IP (without one,
		// IPv6 traffic is dropped here); a node with IPv6 disabled refuses v6 rules and routes.
		families := []int{netlink.FAMILY_V4}
		for _, g := range role.Groups {
			if g.EgressIPv6().IsValid() {
				families = append(families, netlink.FAMILY_V6)
				break
			}
		}
		for _, fam := range families {
			wantRules[ruleID{fam, d.cfg.RulePriority, m.Magic | m.Reply, m.MagicMask | m.Reply | m.Tunnel, d.cfg.TableBase}] = true
			if !slices.Contains(steerFamilies, fam) {
				tunnelTable(fam)
			}
		}
	}
	ifaceOf := map[netip.Addr]EgressAddress{}
	for _, a := range role.Addresses {
		ifaceOf[a.IP] = a
	}
	tables := map[[2]int]EgressAddress{} // (family, ifindex)
	for _, g := range role.Groups {
		for _, ip := range []netip.Addr{g.EgressIPv4(), g.EgressIPv6()} {
			if !ip.IsValid() {
				continue
			}
			a := ifaceOf[ip]
			fam := netlink.FAMILY_V4
			if ip.Is6() {
				fam = netlink.FAMILY_V6
			}
			idx := ifindex[a.Interface]
			wantRules[ruleID{fam, d.cfg.RulePriority + 1, m.Local(g.Group), m.MagicMask | m.Reply | m.Steer | m.GroupMask, d.cfg.TableBase + idx}] = true
			tables[[2]int{fam, idx}] = a
		}
	}
	for k, a := range tables {
		fam, idx := k[0], k[1]
		table := d.cfg.TableBase + idx
		main, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN, LinkIndex: idx},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
		if err != nil {
			return fmt.Errorf("listing routes of %s: %w", a.Interface, err)
		}
		for _, r := range main {
			if fam == netlink.FAMILY_V6 && r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() {
				continue
			}
			if a.NextHop.IsValid() && (r.Dst == nil || r.Dst.IP.IsUnspecified()) {
				continue // replaced by the configured next hop
			}
			wantRoutes = append(wantRoutes, netlink.Route{Table: table, Dst: r.Dst, Gw: r.Gw, LinkIndex: idx, Scope: r.Scope, Flags: r.Flags, Family: fam})
		}
		if a.NextHop.IsValid() {
			wantRoutes = append(wantRoutes, netlink.Route{Table: table, Dst: allRoutes(fam), Gw: a.NextHop.AsSlice(), LinkIndex: idx, Family: fam})
		}
	}
	for i := range wantRoutes {
		r := &wantRoutes[i]
		if r.Dst == nil {
			r.Dst = allRoutes(r.Family)
		}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("adding route %s table %d: %w", r.Dst, r.Table, err)
		}
	}
	for id := range wantRules {
		r := netlink.NewRule()
		r.Family = id.family
		r.Priority = id.prio
		r.Mark = id.mark
		mask := id.mask
		r.Mask = &mask
		r.Table = id.table
		if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding rule fwmark %#x table %d: %w", id.mark, id.table, err)
		}
	}
	// Stale rules, then stale routes.
	if err := d.pruneRules(wantRules); err != nil {
		return err
	}
	wantRoute := map[routeID]bool{}
	for _, r := range wantRoutes {
		wantRoute[routeID{r.Table, r.Dst.String()}] = true
	}
	return d.pruneRoutes(wantRoute)
}

func (d *Dataplane) ownsTable(t int) bool {
	return t >= d.cfg.TableBase && t < d.cfg.TableBase+1<<20
}

func (d *Dataplane) pruneRules(want map[ruleID]bool) error {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := netlink.RuleList(fam)
		if err != nil {
			return fmt.Errorf("listing rules: %w", err)
		}
		for _, r := range rules {
			if (r.Priority != d.cfg.RulePriority && r.Priority != d.cfg.RulePriority+1) || !d.ownsTable(r.Table) {
				continue
			}
			var mask uint32
			if r.Mask != nil {
				mask = *r.Mask
			}
			if want[ruleID{fam, r.Priority, r.Mark, mask, r.Table}] {
				continue
			}
			r.Family = fam
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("removing rule fwmark %#x table %d: %w", r.Mark, r.Table, err)
			}
		}
	}
	return nil
}

func (d *Dataplane) pruneRoutes(want map[routeID]bool) error {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range routes {
			if !d.ownsTable(r.Table) {
				continue
			}
			dst := r.Dst
			if dst == nil {
				dst = allRoutes(fam)
			}
			if want[routeID{r.Table, dst.String()}] {
				continue
			}
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("removing route %s table %d: %w", dst, r.Table, err)
			}
		}
	}
	return nil
}

func (d *Dataplane) removeRouting() error {
	return errors.Join(d.pruneRules(nil), d.pruneRoutes(nil))
}
