package dataplane

import (
	"bufio"
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultSNATPorts is the kernel's range for SNAT without a port range, for
// a flow from an unprivileged source port: the budget of one egress IP
// toward one destination address, port and protocol.
var DefaultSNATPorts = PortRange{Min: 1024, Max: 65535}

// SNATUsage is how much of each egress IP's port budget the gateway's
// translated connections use, per destination, from one conntrack dump.
type SNATUsage struct {
	// Budget is the ports one egress IP has toward one destination
	// (Config.SNATPorts, else DefaultSNATPorts).
	Budget int
	// Use has one entry per egress IP and destination with at least one
	// connection, the fullest first.
	Use []SNATUse
	// InsertFailed counts connections conntrack refused because their
	// translated tuple was taken (every CPU, since the namespace was
	// created): the drops of an exhausted port range.
	InsertFailed uint64
	// Refused counts, per first-choice egress IP, the new connections of groups with several
	// egress IPs that found every one of them at its budget toward their destination (by the
	// spread chains' counts, docs/datapath.md "SNAT"): sent to their first choice anyway,
	// where conntrack refuses them unless a port freed. Since the Dataplane was created.
	Refused map[netip.Addr]uint64
}

// SNATUse is the connections of one egress IP toward one destination.
type SNATUse struct {
	EgressIP    netip.Addr
	Destination netip.AddrPort
	Proto       uint8
	Ports       int // connections, so source ports, in use
	// Exhausted: this IP is at its budget toward the destination, and so is every other IP
	// its group's new connections overflow to (the spread set: TCP and UDP of a group with
	// several IPs on this gateway). A new connection toward it is refused.
	Exhausted bool
}

// SNATUsage dumps conntrack in the managed namespace and counts the
// connections egressd translated (egressd's mark in the conntrack mark,
// reply destination an egress IP of a served group) per egress IP and
// destination. The dump walks every entry of the table: callers sample it
// (gateway/agent: at most every 15 s).
func (d *Dataplane) SNATUsage() (SNATUsage, error) {
	d.mu.Lock()
	egress := map[netip.Addr]bool{}
	// spread: egress IP → the IPs its group's new connections overflow over (itself included).
	spread := map[netip.Addr][]netip.Addr{}
	if s := d.state; s != nil && s.Gateway != nil {
		ifaceOf := map[netip.Addr]string{}
		for _, a := range s.Gateway.Addresses {
			ifaceOf[a.IP] = a.Interface
		}
		for _, g := range s.Gateway.Groups {
			for _, ip := range slices.Concat(g.EgressIPv4s, g.EgressIPv6s) {
				egress[ip] = true
			}
			if g.PublicSource.IsValid() {
				egress[g.PublicSource] = true // its ports are the public IP's
			}
			for _, fam := range [][]netip.Addr{g.EgressIPv4s, g.EgressIPv6s} {
				var set []netip.Addr
				for _, b := range snatIPs(fam, ifaceOf) {
					a, _ := netip.AddrFromSlice(b)
					set = append(set, a)
				}
				for _, a := range set {
					spread[a] = set
				}
			}
		}
	}
	last := d.nftLast
	refused := maps.Clone(d.refusedBase)
	d.mu.Unlock()
	u := SNATUsage{Budget: cmp.Or(d.cfg.SNATPorts.Size(), DefaultSNATPorts.Size())}
	type key struct {
		ip    netip.Addr
		dst   netip.AddrPort
		proto uint8
	}
	count := map[key]int{}
	err := d.inNS(func() error {
		for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
			flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
			if err != nil {
				return fmt.Errorf("listing conntrack: %w", err)
			}
			for _, f := range flows {
				if !d.cfg.Marks.IsEgressd(f.Mark) {
					continue
				}
				ip, ok := netip.AddrFromSlice(f.Reverse.DstIP)
				src, _ := netip.AddrFromSlice(f.Forward.SrcIP)
				if ip = ip.Unmap(); !ok || !egress[ip] || ip == src.Unmap() {
					continue
				}
				dst, _ := netip.AddrFromSlice(f.Forward.DstIP)
				count[key{ip, netip.AddrPortFrom(dst.Unmap(), f.Forward.DstPort), f.Forward.Protocol}]++
			}
		}
		now, err := last.refused(d.cfg.NFTTable)
		if err != nil && len(last.tryChains()) > 0 {
			return err
		}
		u.Refused = refused
		if u.Refused == nil {
			u.Refused = map[netip.Addr]uint64{}
		}
		for ip, n := range now {
			u.Refused[ip] += n
		}
		u.InsertFailed, err = insertFailed()
		return err
	})
	if err != nil {
		return SNATUsage{}, err
	}
	full := func(k key) bool {
		if count[k] < u.Budget {
			return false
		}
		if k.proto != unix.IPPROTO_TCP && k.proto != unix.IPPROTO_UDP {
			return true // no overflow: the hash alone picks the IP
		}
		for _, ip := range spread[k.ip] {
			if count[key{ip, k.dst, k.proto}] < u.Budget {
				return false
			}
		}
		return true
	}
	for k, n := range count {
		u.Use = append(u.Use, SNATUse{EgressIP: k.ip, Destination: k.dst, Proto: k.proto, Ports: n, Exhausted: full(k)})
	}
	slices.SortFunc(u.Use, func(a, b SNATUse) int {
		return cmp.Or(-cmp.Compare(a.Ports, b.Ports), a.EgressIP.Compare(b.EgressIP), a.Destination.Compare(b.Destination), cmp.Compare(a.Proto, b.Proto))
	})
	return u, nil
}

// forgetTranslations deletes this namespace's conntrack entries that name ip as the original
// or the reply destination: the connections translated to it, and segments to it that this
// node forwarded while it did not hold it. It runs when the address leaves this node and again
// when it is mounted here. Left in place, a translation would outlive the hold: the connection
// moves on with the address (the new holder gives it the same port) and its sequence numbers
// advance there, so when the address comes back to this node (a drain, then a drain of the node
// it moved to, as a rolling upgrade does), conntrack would find the old entry, judge its
// segments out of window, and let them leave untranslated, which breaks it. A forwarded
// destination's segment is worse: its entry holds the tuple the returning translation needs, so
// the pod's next segment leaves with another port and the destination resets the connection
// (TestMoveBackAfterStraySegment). Without an entry, conntrack picks each one up again from its
// next segment, at the same port.
func forgetTranslations(ip netip.Addr) error {
	var filters []netlink.CustomConntrackFilter
	for _, field := range []netlink.ConntrackFilterType{netlink.ConntrackReplyDstIP, netlink.ConntrackOrigDstIP} {
		f := &netlink.ConntrackFilter{}
		if err := f.AddIP(field, ip.AsSlice()); err != nil {
			return fmt.Errorf("forgetting the connections to %s: %w", ip, err)
		}
		filters = append(filters, f)
	}
	fam := netlink.InetFamily(unix.AF_INET)
	if ip.Is6() {
		fam = unix.AF_INET6
	}
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, filters...); err != nil {
		return fmt.Errorf("forgetting the connections to %s: %w", ip, err)
	}
	return nil
}

// insertFailed sums conntrack's insert_failed over every CPU, for the
// namespace of the calling thread.
func insertFailed() (uint64, error) {
	const path = "/proc/thread-self/net/stat/nf_conntrack"
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("reading conntrack statistics: %w", err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, fmt.Errorf("%s: no header", path)
	}
	col := slices.Index(strings.Fields(sc.Text()), "insert_failed")
	if col < 0 {
		return 0, fmt.Errorf("%s: no insert_failed column in %q", path, sc.Text())
	}
	var sum uint64
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if col >= len(fields) {
			return 0, fmt.Errorf("%s: short line %q", path, sc.Text())
		}
		n, err := strconv.ParseUint(fields[col], 16, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		sum += n
	}
	return sum, sc.Err()
}
