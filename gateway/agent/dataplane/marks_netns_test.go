package dataplane

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/bpf/marks"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/test/netns"
)

// Layouts the mark tests run: v4's default, the one docs/datapath.md gives for Calico (the
// bits left by Calico's 0xffff0000 and kube-proxy's 0xc000) and the one for Cilium (the upper
// half; Cilium's magic is 0x0f00).
var (
	calicoMarks = mustMarks(0x00003fff)
	ciliumMarks = mustMarks(0xffff0000)
)

func mustMarks(mask uint32) marks.Layout {
	l, err := marks.New(mask)
	if err != nil {
		panic(err)
	}
	return l
}

// rawFrame is an Ethernet frame (zero MACs) with an IPv4 UDP header from src to dst, for
// running the classifier by hand.
func rawFrame(src, dst netip.Addr, sport, dport uint16) []byte {
	b := make([]byte, 14+20+8+16)
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	ip := b[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], 20+8+16)
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], dport)
	binary.BigEndian.PutUint16(ip[24:], 8+16)
	return b
}

// classify runs node's classifier on a frame and returns the mark it leaves (TC_NEXT only).
func classify(t *testing.T, d *Dataplane, frame []byte) uint32 {
	t.Helper()
	ctx := make([]byte, 12)
	out := make([]byte, 512)
	ret, err := d.dp.Program(bpf.HookPod).Run(&ebpf.RunOptions{Data: frame, Context: ctx, ContextOut: out})
	if err != nil {
		t.Fatalf("running the classifier: %v", err)
	}
	if ret != 0xffffffff {
		t.Fatalf("classifier verdict %#x, want TC_NEXT", ret)
	}
	return binary.NativeEndian.Uint32(out[8:])
}

// ipRules are the (fwmark, mask) of the IPv4 rules at prio to table in a node's namespace.
func ipRules(t *testing.T, n *netns.Node, prio, table int) [][2]uint32 {
	t.Helper()
	rules, err := n.Netlink().RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]uint32
	for _, r := range rules {
		if r.Priority == prio && r.Table == table && r.Mask != nil {
			out = append(out, [2]uint32{r.Mark, *r.Mask})
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no ip rule at priority %d to table %#x in %v", n.Name, prio, table, rules)
	}
	return out
}

// matches reports whether a mark is routed by one of the rules.
func matches(rules [][2]uint32, mark uint32) bool {
	return slices.ContainsFunc(rules, func(r [2]uint32) bool { return mark&r[1] == r[0] })
}

// snatKeys are the marks egressd's nftables table SNATs by on a gateway (the keys of @snat4).
func snatKeys(t *testing.T, n *netns.Node) []uint32 {
	t.Helper()
	var keys []uint32
	err := n.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tbl := &nftables.Table{Name: DefaultNFTTable, Family: nftables.TableFamilyINet}
		set, err := c.GetSetByName(tbl, "snat4")
		if err != nil {
			return err
		}
		els, err := c.GetSetElements(set)
		if err != nil {
			return err
		}
		for _, e := range els {
			keys = append(keys, binary.NativeEndian.Uint32(e.Key))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: reading @snat4: %v", n.Name, err)
	}
	slices.Sort(keys)
	return keys
}

// TestMarkLayoutsNFT ties the three users of a mark layout together on the four-node bed, for
// several layouts: the mark the classifier (C, loaded with the layout) puts on pod a's packet
// is what the steering ip rule (Go) matches; the mark the gateway's tunnel ingress puts on a
// group's packets (served map) is what the group's ip rule matches and, under the SNAT
// lookup's mask, a key of nftables' @snat4 (Local(group)); and traffic flows: a, c and g are
// seen with gw1's egress IP.
func TestMarkLayoutsNFT(t *testing.T) {
	skipUnlessRoot(t)
	for _, l := range []marks.Layout{marks.Default(), calicoMarks, ciliumMarks} {
		t.Run(fmt.Sprintf("%08x", l.Mask), func(t *testing.T) {
			c := newClusterWith(t, func(cfg *Config) { cfg.Marks = l })
			w1, gw1 := c.topo.Node("worker1"), c.topo.Node("gw1")
			a := c.topo.Pod("a")
			expectUDP(t, a, dstG1, c.eg["gw1"][0])
			expectUDP(t, c.topo.Pod("c"), dstG1, c.eg["gw1"][0])
			expectUDP(t, c.topo.Pod("g"), dstG1, c.eg["gw1"][0])

			d := c.dps["worker1"]
			if d.dp.Marks() != l {
				t.Fatalf("datapath loaded with %v, want %v", d.dp.Marks(), l)
			}
			got := classify(t, d, rawFrame(a.IP, dstG1, 40000, 7))
			if got != l.Steered(1) {
				t.Errorf("classifier marked %#x, want Steered(1) %#x", got, l.Steered(1))
			}
			steer := ipRules(t, w1, DefaultRulePriority, DefaultTableBase)
			if !matches(steer, got) {
				t.Errorf("worker1's steering rules %#x do not match the classifier's mark %#x", steer, got)
			}
			for _, r := range steer {
				if r[0]&^l.Mask != 0 || r[1]&^l.Mask != 0 {
					t.Errorf("steering rule fwmark %#x/%#x uses bits outside the mask %#x", r[0], r[1], l.Mask)
				}
			}

			keys := snatKeys(t, gw1)
			if want := []uint32{l.Local(1), l.Local(2)}; !slices.Equal(keys, want) {
				t.Errorf("gw1 @snat4 keys %#x, want Local(1), Local(2) = %#x", keys, want)
			}
			link, err := gw1.Netlink().LinkByName(gw1.Link)
			if err != nil {
				t.Fatal(err)
			}
			groupRules := ipRules(t, gw1, DefaultRulePriority+1, DefaultTableBase+link.Attrs().Index)
			for _, g := range []uint32{1, 2} {
				served := l.Served(g)
				if !matches(groupRules, served) || matches(groupRules, served|l.Reply) {
					t.Errorf("gw1's group rules %#x: the served mark %#x of group %d must match one, its reply not", groupRules, served, g)
				}
				if lookup := served & (l.MagicMask | l.Steer | l.GroupMask); lookup != l.Local(g) || !slices.Contains(keys, lookup) {
					t.Errorf("served mark %#x of group %d looks up %#x in @snat4, which holds %#x", served, g, lookup, keys)
				}
			}
			reply := ipRules(t, gw1, DefaultRulePriority, DefaultTableBase)
			if !matches(reply, l.Magic|l.Reply) || matches(reply, l.Served(1)) {
				t.Errorf("gw1's reply rules %#x: must match the reply mark %#x and not the served mark %#x", reply, l.Magic|l.Reply, l.Served(1))
			}
		})
	}
}

// cniMarks is what a CNI sets on every packet a node receives (not on what comes out of
// egressd's tunnel device, which the CNI does not know), in a raw-priority prerouting chain,
// as Calico's and Cilium's iptables rules set their bits with --set-xmark value/mask.
type cniMarks struct {
	name  string
	mask  uint32
	value uint32
}

var (
	// Calico's default iptables mark mask, plus kube-proxy's masquerade bit.
	calicoBits = cniMarks{"Calico 0xffff0000 + kube-proxy 0x4000", 0xffffc000, 0x5a5a4000}
	// Cilium's magic bits (0x0f00, here 0x0e00), the cluster-id byte of its identity marks
	// and kube-proxy's masquerade bit.
	ciliumBits = cniMarks{"Cilium 0x0f00/0x00ff + kube-proxy 0x4000", 0x0000cfff, 0x00004e5a}
)

// install adds the CNI's table to a node: the marking chain, and a check chain after every
// other postrouting chain that counts egressd's packets (its magic) with the CNI's bits intact
// ("kept") and without them ("lost"). The tunnel's outer packets mostly never cross netfilter
// (the programs encapsulate them and redirect them to the underlay device): watchOuter counts
// them.
func (m cniMarks) install(t *testing.T, n *netns.Node, l marks.Layout) {
	t.Helper()
	rules := fmt.Sprintf(`table inet cnimarks {
	chain pre {
		type filter hook prerouting priority raw; policy accept;
		iifname != %q meta mark set meta mark & %#x | %#x
	}
	chain check {
		type filter hook postrouting priority 300; policy accept;
		meta mark & %#x == %#x meta mark & %#x == %#x counter comment "kept"
		meta mark & %#x == %#x meta mark & %#x != %#x counter comment "lost"
	}
}`, DefaultTunnelDevice, ^m.mask, m.value,
		l.MagicMask, l.Magic, m.mask, m.value,
		l.MagicMask, l.Magic, m.mask, m.value)
	cmd := exec.Command("ip", "netns", "exec", n.Namespace.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: adding the CNI's marking rules: %v\n%s\n%s", n.Name, err, out, rules)
	}
}

// watchOuter counts the VXLAN frames (IPv4, UDP to the tunnel port) n sends out of its
// underlay interface, as a packet socket sees them (at the device, after every program and
// hook that could change the mark, whichever path built the frame: the programs'
// encapsulation or the tunnel device's), by whether skb->mark carries the CNI's bits as the
// CNI set them. A packet socket does not report the mark; a classic BPF filter per count reads
// it (SKF_AD_MARK) and lets through only the frames of its count.
func (m cniMarks) watchOuter(t *testing.T, n *netns.Node) (stop func() (kept, lost uint64)) {
	t.Helper()
	const (
		adOff  = 0xfffff000 // SKF_AD_OFF
		accept = 11
		drop   = 12
	)
	filter := func(keep bool) []unix.SockFilter {
		jmp := func(i int, k uint32, jt, jf int) unix.SockFilter {
			return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: k, Jt: uint8(jt - i - 1), Jf: uint8(jf - i - 1)}
		}
		ld := func(size uint16, k uint32) unix.SockFilter {
			return unix.SockFilter{Code: unix.BPF_LD | size | unix.BPF_ABS, K: k}
		}
		onMatch, otherwise := accept, drop
		if !keep {
			onMatch, otherwise = drop, accept
		}
		return []unix.SockFilter{
			ld(unix.BPF_W, adOff+4), // SKF_AD_PKTTYPE
			jmp(1, unix.PACKET_OUTGOING, 2, drop),
			ld(unix.BPF_H, 12),
			jmp(3, unix.ETH_P_IP, 4, drop),
			ld(unix.BPF_B, 14+9),
			jmp(5, unix.IPPROTO_UDP, 6, drop),
			ld(unix.BPF_H, 14+20+2), // the outer header has no options
			jmp(7, contract.DefaultTunnelPort, 8, drop),
			ld(unix.BPF_W, adOff+20), // SKF_AD_MARK
			{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: m.mask},
			jmp(10, m.value, onMatch, otherwise),
			{Code: unix.BPF_RET | unix.BPF_K, K: 64},
			{Code: unix.BPF_RET | unix.BPF_K, K: 0},
		}
	}
	var pb [2]byte
	binary.BigEndian.PutUint16(pb[:], unix.ETH_P_ALL)
	proto := binary.NativeEndian.Uint16(pb[:])
	var (
		wg     sync.WaitGroup
		done   = make(chan struct{})
		counts [2]atomic.Uint64
	)
	for i, keep := range []bool{true, false} {
		var fd int
		err := n.Do(func() error {
			l, err := n.Netlink().LinkByName(n.Link)
			if err != nil {
				return err
			}
			// Protocol 0 until bound: nothing is queued before the filter is on.
			if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
				return err
			}
			f := filter(keep)
			if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}); err != nil {
				return err
			}
			tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				return err
			}
			return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: l.Attrs().Index})
		})
		if err != nil {
			t.Fatalf("%s: watching outer frames: %v", n.Name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer unix.Close(fd)
			buf := make([]byte, 64)
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, _, err := unix.Recvfrom(fd, buf, 0); err == nil {
					counts[i].Add(1)
				}
			}
		}()
	}
	return func() (uint64, uint64) {
		close(done)
		wg.Wait()
		return counts[0].Load(), counts[1].Load()
	}
}

// counts reads the check chain's counters (packets) by comment.
func (m cniMarks) counts(t *testing.T, n *netns.Node) map[string]uint64 {
	t.Helper()
	out, err := n.Run("nft", "-j", "list", "chain", "inet", "cnimarks", "check")
	if err != nil {
		t.Fatalf("%s: listing the check chain: %v\n%s", n.Name, err, out)
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Comment string `json:"comment"`
				Expr    []struct {
					Counter *struct {
						Packets uint64 `json:"packets"`
					} `json:"counter"`
				} `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("%s: %v\n%s", n.Name, err, out)
	}
	got := map[string]uint64{}
	for _, e := range doc.Nftables {
		if e.Rule == nil {
			continue
		}
		for _, x := range e.Rule.Expr {
			if x.Counter != nil {
				got[e.Rule.Comment] = x.Counter.Packets
			}
		}
	}
	return got
}

// TestCNIMarksKept: with a CNI's mark bits set on every packet of every node (Calico's under
// the Calico layout, Cilium's under the Cilium layout), egressd still steers and SNATs — pods
// on a worker and on the gateway are seen with the egress IP over TCP, UDP and ICMP, IPv4 and
// IPv6 — and every packet of egressd's (in postrouting) and every outer tunnel frame (on the
// underlay device, watchOuter: the programs' encapsulation skips netfilter) leaves each node
// with the CNI's bits as the CNI set them: the classifier, the tunnel programs and nftables
// change only the layout's bits. The default layout under Calico's bits is shown to collide: the CNI's
// bits overwrite egressd's magic and pod a is seen with its node's address.
func TestCNIMarksKept(t *testing.T) {
	skipUnlessRoot(t)
	for _, tc := range []struct {
		cni   cniMarks
		marks marks.Layout
	}{{calicoBits, calicoMarks}, {ciliumBits, ciliumMarks}} {
		t.Run(tc.cni.name, func(t *testing.T) {
			if tc.cni.mask&tc.marks.Mask != 0 {
				t.Fatalf("the CNI's bits %#x overlap the layout %#x: not the case under test", tc.cni.mask, tc.marks.Mask)
			}
			c := newClusterWith(t, func(cfg *Config) { cfg.Marks = tc.marks })
			watched := []string{"worker1", "gw1"}
			var stops []func() (uint64, uint64)
			for _, n := range c.topo.Nodes {
				tc.cni.install(t, n, tc.marks)
			}
			for _, name := range watched {
				stops = append(stops, tc.cni.watchOuter(t, c.topo.Node(name)))
			}
			a, g := c.topo.Pod("a"), c.topo.Pod("g")
			eg1 := c.eg["gw1"]
			expectSeen(t, a, dstG1, eg1[0])
			expectSeen(t, g, dstG1, eg1[0])
			expectSeen(t, a, dstG1v6, eg1[1])
			expectSeen(t, a, dstG2, eg1[0], c.eg["gw2"][0])
			for i, name := range watched {
				got := tc.cni.counts(t, c.topo.Node(name))
				keptOuter, lostOuter := stops[i]()
				t.Logf("%s: %v, outer frames kept %d lost %d", name, got, keptOuter, lostOuter)
				if got["kept"] == 0 || keptOuter == 0 {
					t.Errorf("%s: no packet of egressd's (%d) or of the tunnel (%d) counted with the CNI's bits: the check sees nothing", name, got["kept"], keptOuter)
				}
				if got["lost"] != 0 || lostOuter != 0 {
					t.Errorf("%s: %d packets of egressd's and %d outer tunnel frames lost the CNI's bits %#x/%#x", name, got["lost"], lostOuter, tc.cni.value, tc.cni.mask)
				}
			}
		})
	}
	t.Run("default layout under Calico's bits collides", func(t *testing.T) {
		c := newCluster(t)
		for _, n := range c.topo.Nodes {
			calicoBits.install(t, n, marks.Default())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		got, err := c.topo.Pod("a").UDPEcho(ctx, dstG1)
		if err == nil && got == c.eg["gw1"][0] {
			t.Errorf("pod a seen with the egress IP %s although Calico's bits overwrite egressd's magic: the test cannot see a collision", got)
		}
		t.Logf("pod a → %s under the default layout and Calico's bits: seen as %v (%v)", dstG1, got, err)
	})
}
