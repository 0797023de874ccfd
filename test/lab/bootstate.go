package lab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// bootState is what a node's namespace holds when it boots, before any agent ran: the links,
// addresses, routes, policy rules, permanent neighbours and nftables ruleset that netns.Build
// and the lab configured (the underlay address and default routes, loopback and the instance
// metadata address on lo, the pods' veths with their /32 routes and fe80::1, the pod CIDR
// routes to same-zone nodes, the CNI's masquerade and kube-proxy's INVALID-drop tables). A
// cold reboot wipes everything else and restores exactly this, as a VM boots into its image
// and its CNI and kube-proxy lay down their configuration again.
type bootState struct {
	links  []string            // link names
	addrs  map[string][]string // link name → addresses (CIDR form)
	routes map[string]netlink.Route
	rules  map[string]bool
	neighs map[string]netlink.Neigh // permanent entries
	nft    string                   // `nft list ruleset`
}

// fallbackDevices are the per-namespace devices the kernel creates by itself when a tunnel
// module loads; they cannot be deleted and are no agent's doing.
var fallbackDevices = []string{"sit0", "ip6tnl0", "tunl0", "gre0", "gretap0", "erspan0", "ip_vti0",
	"ip6_vti0", "ip6gre0", "ip6erspan0"}

func routeKey(r netlink.Route) string {
	return fmt.Sprintf("t%d %v via %v dev %d type %d metric %d src %v", r.Table, r.Dst, r.Gw, r.LinkIndex,
		r.Type, r.Priority, r.Src)
}

func ruleKey(r netlink.Rule) string {
	mask := uint32(0)
	if r.Mask != nil {
		mask = *r.Mask
	}
	return fmt.Sprintf("f%d p%d t%d mark %#x/%#x src %v dst %v iif %q oif %q not %v goto %d type %d proto %d",
		r.Family, r.Priority, r.Table, r.Mark, mask, r.Src, r.Dst, r.IifName, r.OifName, r.Invert, r.Goto,
		r.Type, r.IPProto)
}

func neighKey(n netlink.Neigh) string {
	return fmt.Sprintf("%d %v %v", n.LinkIndex, n.IP, n.Flags)
}

// allRoutes lists the routes of every table but local (the kernel keeps local in step with the
// addresses).
func allRoutes(h *netlink.Handle) ([]netlink.Route, error) {
	rs, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(rs, func(r netlink.Route) bool { return r.Table == unix.RT_TABLE_LOCAL }), nil
}

// nodeHandle opens a netlink handle of the lab's own in the node's namespace (the node's shared
// handle also serves the tests).
func nodeHandle(n *Node) (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(n.Handle())
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n.Namespace.Name, err)
	}
	return h, nil
}

// snapshotBoot records the node's boot state.
func snapshotBoot(n *Node) (*bootState, error) {
	h, err := nodeHandle(n)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	b := &bootState{addrs: map[string][]string{}, routes: map[string]netlink.Route{}, rules: map[string]bool{},
		neighs: map[string]netlink.Neigh{}}
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links of %s: %w", n.Name, err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		b.links = append(b.links, name)
		as, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s on %s: %w", name, n.Name, err)
		}
		for _, a := range as {
			b.addrs[name] = append(b.addrs[name], a.IPNet.String())
		}
		ns, err := h.NeighList(l.Attrs().Index, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing neighbours of %s on %s: %w", name, n.Name, err)
		}
		for _, ne := range ns {
			if ne.State&netlink.NUD_PERMANENT != 0 {
				b.neighs[neighKey(ne)] = ne
			}
		}
	}
	rs, err := allRoutes(h)
	if err != nil {
		return nil, fmt.Errorf("listing routes of %s: %w", n.Name, err)
	}
	for _, r := range rs {
		b.routes[routeKey(r)] = r
	}
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing rules of %s: %w", n.Name, err)
	}
	for _, r := range rules {
		b.rules[ruleKey(r)] = true
	}
	out, err := n.Run("nft", "list", "ruleset")
	if err != nil {
		return nil, err
	}
	b.nft = string(out)
	return b, nil
}

// wipeNode removes everything of the node's state that a reboot loses and its boot state does
// not hold: the node's bpffs pins, BPF programs attached to its links (tcx, tc, XDP), every
// nftables table, conntrack, links, addresses, routes, rules and permanent neighbours the agent
// added. The agent must not run.
func (l *Lab) wipeNode(n *Node, boot *bootState) error {
	var errs []error
	// Pins first: the tcx links live as long as their pin or their last descriptor.
	if l.bpffs != "" {
		dir := filepath.Join(l.bpffs, n.Name)
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s's pins: %w", n.Name, err))
		}
	}
	h, err := nodeHandle(n)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("listing links of %s: %w", n.Name, err))...)
	}
	// BPF on links, in the namespace (tcx queries take an ifindex of the caller's namespace).
	errs = append(errs, n.Do(func() error { return detachBPF(h, links) }))
	if _, err := n.Run("nft", "flush", "ruleset"); err != nil {
		errs = append(errs, err)
	}
	if err := h.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		errs = append(errs, fmt.Errorf("flushing conntrack of %s: %w", n.Name, err))
	}
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing rules of %s: %w", n.Name, err))
	}
	for _, r := range rules {
		if !boot.rules[ruleKey(r)] {
			if err := h.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("deleting %s on %s: %w", r, n.Name, err))
			}
		}
	}
	kept := map[string]bool{}
	for _, name := range boot.links {
		kept[name] = true
	}
	for _, lk := range links {
		name := lk.Attrs().Name
		if kept[name] || slices.Contains(fallbackDevices, name) {
			continue
		}
		if err := h.LinkDel(lk); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("deleting link %s on %s: %w", name, n.Name, err))
		}
	}
	routes, err := allRoutes(h)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing routes of %s: %w", n.Name, err))
	}
	for _, r := range routes {
		if _, ok := boot.routes[routeKey(r)]; !ok {
			if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("deleting route %s on %s: %w", r, n.Name, err))
			}
		}
	}
	for _, lk := range links {
		name := lk.Attrs().Name
		if !kept[name] {
			continue
		}
		as, err := h.AddrList(lk, netlink.FAMILY_ALL)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing addresses of %s on %s: %w", name, n.Name, err))
			continue
		}
		for _, a := range as {
			if slices.Contains(boot.addrs[name], a.IPNet.String()) || a.IP.IsLinkLocalUnicast() && a.IP.To4() == nil {
				continue // booted with it, or the kernel's own IPv6 link-local
			}
			if err := h.AddrDel(lk, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("deleting %s from %s on %s: %w", a.IPNet, name, n.Name, err))
			}
		}
		ns, err := h.NeighList(lk.Attrs().Index, netlink.FAMILY_ALL)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing neighbours of %s on %s: %w", name, n.Name, err))
			continue
		}
		for _, ne := range ns {
			if _, ok := boot.neighs[neighKey(ne)]; ok || ne.State&netlink.NUD_NOARP != 0 {
				continue
			}
			if err := h.NeighDel(&ne); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("deleting neighbour %s on %s: %w", ne.IP, n.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// detachBPF detaches every tcx program (through its link), removes clsact and ingress qdiscs
// (tc programs) and XDP programs from links. It runs in the links' namespace (Namespace.Do).
func detachBPF(h *netlink.Handle, links []netlink.Link) error {
	var errs []error
	for _, lk := range links {
		idx, name := lk.Attrs().Index, lk.Attrs().Name
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: at})
			if err != nil {
				if !errors.Is(err, ebpf.ErrNotSupported) {
					errs = append(errs, fmt.Errorf("querying tcx programs on %s: %w", name, err))
				}
				continue
			}
			for _, p := range res.Programs {
				id, ok := p.LinkID()
				if !ok {
					errs = append(errs, fmt.Errorf("tcx program %d on %s has no link to detach", p.ID, name))
					continue
				}
				bl, err := link.NewFromID(id)
				if err != nil {
					if !errors.Is(err, os.ErrNotExist) {
						errs = append(errs, fmt.Errorf("opening tcx link %d on %s: %w", id, name, err))
					}
					continue
				}
				if err := bl.Detach(); err != nil {
					errs = append(errs, fmt.Errorf("detaching tcx link %d on %s: %w", id, name, err))
				}
				bl.Close()
			}
		}
		qs, err := h.QdiscList(lk)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing qdiscs of %s: %w", name, err))
		}
		for _, q := range qs {
			if t := q.Type(); t == "clsact" || t == "ingress" {
				if err := h.QdiscDel(q); err != nil {
					errs = append(errs, fmt.Errorf("deleting the %s qdisc of %s: %w", t, name, err))
				}
			}
		}
		if x := lk.Attrs().Xdp; x != nil && x.Attached {
			if err := netlink.LinkSetXdpFd(lk, -1); err != nil {
				errs = append(errs, fmt.Errorf("detaching XDP from %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// bootNode restores the node's boot state after wipeNode: every booted link up, its addresses,
// routes, rules, permanent neighbours and nftables ruleset back (what is still there stays).
func (l *Lab) bootNode(n *Node, boot *bootState) error {
	var errs []error
	h, err := nodeHandle(n)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, name := range boot.links {
		lk, err := h.LinkByName(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("finding %s on %s: %w", name, n.Name, err))
			continue
		}
		if lk.Attrs().Flags&net.FlagUp == 0 {
			if err := h.LinkSetUp(lk); err != nil {
				errs = append(errs, fmt.Errorf("setting %s up on %s: %w", name, n.Name, err))
			}
		}
		for _, s := range boot.addrs[name] {
			a, err := netlink.ParseAddr(s)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if a.IP.IsLinkLocalUnicast() && a.IP.To4() == nil {
				continue // the kernel's own
			}
			if a.IP.To4() == nil {
				a.Flags = unix.IFA_F_NODAD
			}
			if err := h.AddrAdd(lk, a); err != nil && !errors.Is(err, unix.EEXIST) {
				errs = append(errs, fmt.Errorf("adding %s to %s on %s: %w", s, name, n.Name, err))
			}
		}
	}
	for _, ne := range boot.neighs {
		if err := h.NeighSet(&ne); err != nil {
			errs = append(errs, fmt.Errorf("restoring neighbour %s on %s: %w", ne.IP, n.Name, err))
		}
	}
	routes, err := allRoutes(h)
	if err != nil {
		errs = append(errs, err)
	}
	have := map[string]bool{}
	for _, r := range routes {
		have[routeKey(r)] = true
	}
	for k, r := range boot.routes {
		if have[k] || r.Protocol == unix.RTPROT_KERNEL {
			continue // there, or the kernel's own (back with its address)
		}
		if err := h.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf("restoring route %s on %s: %w", r, n.Name, err))
		}
	}
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		errs = append(errs, err)
	}
	haveRule := map[string]bool{}
	for _, r := range rules {
		haveRule[ruleKey(r)] = true
	}
	for k := range boot.rules {
		if !haveRule[k] {
			// Only the kernel's default rules boot, and a wipe never deletes those.
			errs = append(errs, fmt.Errorf("boot rule %s missing on %s", k, n.Name))
		}
	}
	if strings.TrimSpace(boot.nft) != "" {
		if err := n.ApplyNFT(filepath.Join(l.workDir, "nft-boot-"+n.Name+".nft"), "flush ruleset\n"+boot.nft); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s's nftables ruleset: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}
