package dataplane

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf/marks"
)

// mtuOverhead of the inner headers: MSS = tunnel MTU - IP header - TCP header.
const (
	tcpIPv4Overhead = 40
	tcpIPv6Overhead = 60
)

func ne32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

// markIs matches packets whose mark, masked with mask, is value (register 1).
func markIs(mask, value uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(mask), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ne32(value)},
	}
}

// ifname is an interface name as nftables compares it (IFNAMSIZ bytes, NUL padded).
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func be16(v uint16) []byte {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, v)
	return b
}

// nftModel is the content of egressd's table, kept comparable so an
// unchanged state does not rewrite the table. Every node has the table: its
// steered packets need the source-side rules; a gateway adds its SNAT maps.
type nftModel struct {
	tunnel       string              // the tunnel device: the only way out for steered packets
	snat4, snat6 map[uint32][][]byte // mark (marks.Local(group)) → egress IPs, the lowest first
	snatPorts    PortRange           // zero: the kernel's choice
	mss4, mss6   uint16
	marks        marks.Layout // every mark below comes from it
	// public4: mark → the source public-bound IPv4 flows are SNATed to, and the private
	// destinations that keep the egress IPs (ServedGroup.PublicSource).
	public4 map[uint32]publicSNAT
	strays  []netip.Addr // the egress IPs egressd mounted, sorted (strays.go)
}

type publicSNAT struct {
	source  netip.Addr
	private []netip.Prefix
}

func (m nftModel) key() string {
	var ks []string
	for k, v := range m.snat4 {
		ks = append(ks, fmt.Sprintf("4/%x/%x", k, v))
	}
	for k, v := range m.snat6 {
		ks = append(ks, fmt.Sprintf("6/%x/%x", k, v))
	}
	for k, v := range m.public4 {
		ks = append(ks, fmt.Sprintf("p4/%x/%s/%v", k, v.source, v.private))
	}
	slices.Sort(ks)
	return fmt.Sprint(m.tunnel, ks, m.snatPorts, m.mss4, m.mss6, m.marks, m.strays)
}

// snatSeed seeds the jhash that picks a flow's egress IP. Fixed, so that
// every gateway holding the same IPs for a group picks the same one for a
// flow, across restarts.
const snatSeed = 0x65677264

// snatIPs are the egress IPs a group's new flows of one family are spread
// over: the lowest one and the others on its interface (the group's policy
// route sends the family out of that interface; an IP on another one would
// leave through the wrong link).
func snatIPs(ips []netip.Addr, ifaceOf map[netip.Addr]string) [][]byte {
	if len(ips) == 0 {
		return nil
	}
	first := lowest(ips)
	out := [][]byte{first.AsSlice()}
	for _, ip := range ips {
		if ip != first && ifaceOf[ip] == ifaceOf[first] {
			out = append(out, ip.AsSlice())
		}
	}
	return out
}

// nftModel is the table for a node with role (nil on a worker).
func (d *Dataplane) nftModel(role *GatewayRole, tunnelMTU int) nftModel {
	m := nftModel{tunnel: d.cfg.TunnelDevice, snat4: map[uint32][][]byte{}, snat6: map[uint32][][]byte{}, public4: map[uint32]publicSNAT{},
		snatPorts: d.cfg.SNATPorts, mss4: uint16(tunnelMTU - tcpIPv4Overhead), mss6: uint16(tunnelMTU - tcpIPv6Overhead), marks: d.cfg.Marks}
	if role == nil {
		return m
	}
	ifaceOf := map[netip.Addr]string{}
	for _, a := range role.Addresses {
		ifaceOf[a.IP] = a.Interface
	}
	for _, g := range role.Groups {
		mark := d.cfg.Marks.Local(g.Group)
		if ips := snatIPs(g.EgressIPv4s, ifaceOf); ips != nil {
			m.snat4[mark] = ips
			if g.PublicSource.Is4() {
				m.public4[mark] = publicSNAT{source: g.PublicSource, private: slices.Clone(g.Private)}
			}
		}
		if ips := snatIPs(g.EgressIPv6s, ifaceOf); ips != nil {
			m.snat6[mark] = ips
		}
	}
	return m
}

// applyNFT replaces egressd's table in one netlink transaction: the kernel
// swaps old for new atomically, and NAT bindings live in conntrack, so
// established flows are not disturbed.
//
// Rewriting the table zeroes its counters: the refusals the old table counted are kept in
// d.refusedBase first (those counted between the read and the swap are lost).
func (d *Dataplane) applyNFT(m nftModel) error {
	if d.nftHash == m.key() {
		return nil
	}
	d.keepRefused()
	if err := d.replaceNFT("writing", m.fill); err != nil {
		return err
	}
	d.nftHash, d.nftLast = m.key(), m
	return nil
}

// keepRefused adds the refusals the current table counted to d.refusedBase.
func (d *Dataplane) keepRefused() {
	if d.nftHash == "" {
		return
	}
	n, err := d.nftLast.refused(d.cfg.NFTTable)
	if err != nil {
		return // the table is gone or unreadable: nothing to keep
	}
	if d.refusedBase == nil {
		d.refusedBase = map[netip.Addr]uint64{}
	}
	for ip, v := range n {
		d.refusedBase[ip] += v
	}
}

// tryChains are the chains of new connections (tryChain): name → first-choice egress IP.
func (m nftModel) tryChains() map[string]netip.Addr {
	out := map[string]netip.Addr{}
	for fam, elems := range map[string]map[uint32][][]byte{"snat4": m.snat4, "snat6": m.snat6} {
		for mark, ips := range elems {
			if len(ips) < 2 {
				continue
			}
			for i, ip := range ips {
				a, _ := netip.AddrFromSlice(ip)
				out[tryChainName(fmt.Sprintf("%s-%d", fam, m.marks.GroupOf(mark)), i)] = a
			}
		}
	}
	return out
}

// refused reads the counters of the last rule of every try chain of table (in the calling
// thread's namespace): the new connections that found every egress IP of their group full,
// by first-choice IP.
func (m nftModel) refused(table string) (map[netip.Addr]uint64, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	out := map[netip.Addr]uint64{}
	for name, ip := range m.tryChains() {
		rules, err := c.GetRules(t, &nftables.Chain{Table: t, Name: name})
		if err != nil {
			return nil, fmt.Errorf("reading chain %s: %w", name, err)
		}
		out[ip] += 0
		if len(rules) == 0 {
			continue
		}
		for _, e := range rules[len(rules)-1].Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				out[ip] += ctr.Packets
			}
		}
	}
	return out, nil
}

func (d *Dataplane) removeNFT() error {
	d.keepRefused()
	if err := d.replaceNFT("removing", nil); err != nil {
		return err
	}
	d.nftHash = ""
	return nil
}

// replaceNFT deletes egressd's table and, when fill is set, adds it again with what fill puts
// in it, in one batch.
func (d *Dataplane) replaceNFT(verb string, fill func(*nftables.Conn, *nftables.Table) error) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	t := &nftables.Table{Name: d.cfg.NFTTable, Family: nftables.TableFamilyINet}
	// Add-then-delete makes the delete succeed whether or not the table
	// existed, all inside this one batch.
	c.AddTable(t)
	c.DelTable(t)
	if fill != nil {
		c.AddTable(t)
		if err := fill(c, t); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("%s nftables table %s: %w", verb, d.cfg.NFTTable, err)
	}
	return nil
}

// setMarkBits is "key set key & ~mask | value" on the meta or ct mark (register 1): it
// replaces egressd's bits (mark.Mask) and keeps everyone else's.
func setMarkBits(ct bool, mask, value uint32) []expr.Any {
	load, store := expr.Any(&expr.Meta{Key: expr.MetaKeyMARK, Register: 1}), expr.Any(&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true})
	if ct {
		load, store = &expr.Ct{Key: expr.CtKeyMARK, Register: 1}, &expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true}
	}
	return []expr.Any{load, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(^mask), Xor: ne32(value)}, store}
}

// fill adds the sets, chains and rules of m to table t.
func (m nftModel) fill(c *nftables.Conn, t *nftables.Table) error {
	mk := m.marks
	type family struct {
		proto    byte
		name     string
		addrType nftables.SetDatatype
		srcOff   uint32 // the source address in the network header
		srcLen   uint32
		elems    map[uint32][][]byte
		single   *nftables.Set // mark → egress IP: groups with one IP
		spread   *nftables.Set // mark → jump to the group's chain: groups with several
	}
	fams := []*family{
		{proto: unix.NFPROTO_IPV4, name: "snat4", addrType: nftables.TypeIPAddr, srcOff: 12, srcLen: 4, elems: m.snat4},
		{proto: unix.NFPROTO_IPV6, name: "snat6", addrType: nftables.TypeIP6Addr, srcOff: 8, srcLen: 16, elems: m.snat6},
	}
	for _, f := range fams {
		var single, spread []nftables.SetElement
		sf := spreadFamily{name: f.name, proto: f.proto, addrType: f.addrType, srcOff: f.srcOff, dstOff: f.srcOff + f.srcLen, addrLen: f.srcLen,
			ports: portsSet(t, f.name, f.addrType)}
		if err := c.AddSet(sf.ports, nil); err != nil {
			return fmt.Errorf("adding set %s: %w", sf.ports.Name, err)
		}
		marks := slices.Sorted(maps.Keys(f.elems))
		for _, mark := range marks {
			ips := f.elems[mark]
			if len(ips) == 1 {
				single = append(single, nftables.SetElement{Key: ne32(mark), Val: ips[0]})
				continue
			}
			chain, err := m.spreadChain(c, t, sf, mark, ips)
			if err != nil {
				return err
			}
			spread = append(spread, nftables.SetElement{Key: ne32(mark), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}})
		}
		f.single = &nftables.Set{Table: t, Name: f.name, IsMap: true, KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, DataType: f.addrType}
		f.spread = &nftables.Set{Table: t, Name: f.name + "-spread", IsMap: true, KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict}
		for _, s := range []struct {
			set *nftables.Set
			els []nftables.SetElement
		}{{f.single, single}, {f.spread, spread}} {
			if err := c.AddSet(s.set, s.els); err != nil {
				return fmt.Errorf("adding set %s: %w", s.set.Name, err)
			}
		}
	}

	pre := c.AddChain(&nftables.Chain{Table: t, Name: "prerouting", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle})
	// Remember egressd's mark in conntrack for the whole connection: its magic and whether it
	// came through the tunnel or is steered into it (what the rules below read; not the
	// group). Only egressd's bits of the ct mark change: a CNI's (the AWS VPC CNI's 0x80)
	// stay. Every packet of the node crosses this chain, egressd's or not, so one rule
	// (three expressions) sends only packets with egressd's magic to the three that write
	// the ct mark. Those run on every packet of a marked connection: the kernel compares
	// before it writes (nft_ct_set_eval), so an unchanged ct mark costs the expressions
	// only, no write and no conntrack event; a kind that changes mid-connection (a local
	// gateway's flow moved to a remote one) is written on the next packet.
	ctmark := c.AddChain(&nftables.Chain{Table: t, Name: "ctmark"})
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: append(markIs(mk.MagicMask, mk.Magic),
		&expr.Verdict{Kind: expr.VerdictJump, Chain: ctmark.Name})})
	for _, kind := range []uint32{mk.Magic | mk.Tunnel, mk.Magic | mk.Steer, mk.Magic} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ctmark, Exprs: append(markIs(mk.MagicMask|mk.Tunnel|mk.Steer|mk.Reply, kind),
			setMarkBits(true, mk.Mask, kind)...)})
	}
	// Replies of tunnelled flows (already de-NATed by conntrack at this
	// hook's later stage for routing purposes) are marked so policy
	// routing sends them to the tunnel device.
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: append([]expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(mk.MagicMask | mk.Tunnel), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ne32(mk.Magic | mk.Tunnel)},
	}, setMarkBits(false, mk.Mask, mk.Magic|mk.Reply)...)})

	fwd := c.AddChain(&nftables.Chain{Table: t, Name: "forward", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityMangle})
	// Clamp the MSS of SYN and SYN-ACK of tunnelled flows (on the gateway) and steered ones
	// (on the source node) so that segments fit the tunnel in both directions. Every
	// forwarded packet of the node crosses this chain: one rule lets only a TCP SYN (SYN set,
	// RST clear) on to the rules that read the ct mark, so any other packet costs two
	// expressions (UDP) or five (TCP) instead of the fourteen of the four clamp rules.
	mss := c.AddChain(&nftables.Chain{Table: t, Name: "mss"})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x06}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: mss.Name},
	}})
	for _, fam := range []struct {
		proto byte
		mss   uint16
		bit   uint32
	}{
		{unix.NFPROTO_IPV4, m.mss4, mk.Tunnel}, {unix.NFPROTO_IPV6, m.mss6, mk.Tunnel},
		{unix.NFPROTO_IPV4, m.mss4, mk.Steer}, {unix.NFPROTO_IPV6, m.mss6, mk.Steer},
	} {
		c.AddRule(&nftables.Rule{Table: t, Chain: mss, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam.proto}},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(mk.MagicMask | fam.bit), Xor: ne32(0)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ne32(mk.Magic | fam.bit)},
			&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: 2, Offset: 2, Len: 2, DestRegister: 1},
			&expr.Cmp{Op: expr.CmpOpGt, Register: 1, Data: be16(fam.mss)},
			&expr.Immediate{Register: 1, Data: be16(fam.mss)},
			&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: 2, Offset: 2, Len: 2, SourceRegister: 1},
		}})
	}

	// A steered packet leaves only through the tunnel device: if a route
	// sends it anywhere else (a rule or table removed under egressd), it is
	// dropped, never sent with the node IP.
	leak := c.AddChain(&nftables.Chain{Table: t, Name: "steer-leak", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityFilter})
	c.AddRule(&nftables.Rule{Table: t, Chain: leak, Exprs: append(markIs(mk.MagicMask|mk.Steer, mk.Magic|mk.Steer),
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(m.tunnel)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)})

	post := c.AddChain(&nftables.Chain{Table: t, Name: "postrouting", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityNATSource - 1)})
	for _, fam := range []struct {
		proto  byte
		srcOff uint32
		srcLen uint32
	}{{unix.NFPROTO_IPV4, 12, 4}, {unix.NFPROTO_IPV6, 8, 16}} {
		// A steered packet keeps its pod source through the tunnel: an
		// identity SNAT binds its connection before srcnat (100), so a
		// CNI's masquerade never rewrites it to the node IP.
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam.proto}},
		}
		exprs = append(exprs, markIs(mk.MagicMask|mk.Steer, mk.Magic|mk.Steer)...)
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: append(exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.srcOff, Len: fam.srcLen},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(fam.proto), RegAddrMin: 1},
		)})
	}
	// Public-bound flows of a group whose public IP the cloud translates from another address
	// (GCP: the interface's primary address) are SNATed to that address: the group's chain
	// returns for a private destination (the egress IPs below take it) and translates the rest.
	for _, mark := range slices.Sorted(maps.Keys(m.public4)) {
		chain := m.publicChain(c, t, mark, m.public4[mark])
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(mk.MagicMask | mk.Steer | mk.GroupMask), Xor: ne32(0)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ne32(mark)},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: chain},
		}})
	}
	for _, f := range fams {
		// SNAT to the group's egress IPs. Running before srcnat (100)
		// means a CNI's masquerade never gets to this connection. A group
		// with several IPs jumps to its chain, which picks one per flow; one
		// with a single IP is translated here. A lookup that finds no group
		// ends the rule and the packet goes on to the next.
		match := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.proto}},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(mk.MagicMask | mk.Steer | mk.GroupMask), Xor: ne32(0)},
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: append(slices.Clone(match),
			&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: f.spread.Name, SetID: f.spread.ID},
		)})
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: append(append(match,
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: f.single.Name, SetID: f.single.ID}),
			m.snatTo(f.proto)...,
		)})
	}
	// Marked traffic without an egress IP for its family is dropped, never
	// sent with the node IP.
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: append(markIs(mk.MagicMask|mk.Reply|mk.Steer, mk.Magic),
		&expr.Verdict{Kind: expr.VerdictDrop},
	)})
	return m.fillStrays(c, t)
}

// Registers of the spread chains: nftables' 32-bit registers (NFT_REG32_00
// is 8), so the source address and port sit next to each other for the hash.
const (
	reg32Src = 8
	regPorts = 2 // and 3: the port range of snatTo
)

// snatTo translates the source to the address in register 1, within the
// configured port range if any: the kernel keeps the flow's source port when
// it is free on that address and in the range, and otherwise searches the
// range for a free one.
func (m nftModel) snatTo(proto byte) []expr.Any {
	nat := &expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(proto), RegAddrMin: 1}
	if m.snatPorts.Min == 0 {
		return []expr.Any{nat}
	}
	nat.RegProtoMin, nat.RegProtoMax = regPorts, regPorts+1
	return []expr.Any{
		&expr.Immediate{Register: regPorts, Data: be16(m.snatPorts.Min)},
		&expr.Immediate{Register: regPorts + 1, Data: be16(m.snatPorts.Max)},
		nat,
	}
}

// publicChain adds the chain that SNATs a group's public-bound IPv4 flows to p.source: a
// destination inside one of p.private returns (to the egress IP rules), any other is
// translated. NAT chains see only a connection's first packet, so the prefix rules cost
// nothing per packet after it.
func (m nftModel) publicChain(c *nftables.Conn, t *nftables.Table, mark uint32, p publicSNAT) string {
	name := fmt.Sprintf("public4-%d", m.marks.GroupOf(mark))
	ch := c.AddChain(&nftables.Chain{Table: t, Name: name})
	for _, pr := range p.private {
		mask := net.CIDRMask(pr.Bits(), 32)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: pr.Masked().Addr().AsSlice()},
			&expr.Verdict{Kind: expr.VerdictReturn},
		}})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append([]expr.Any{
		&expr.Immediate{Register: 1, Data: p.source.AsSlice()},
	}, m.snatTo(unix.NFPROTO_IPV4)...)})
	return name
}

// snatPortsSetSize bounds the elements of @snat4-ports / @snat6-ports: (egress IP,
// destination) pairs with a connection. A pair past it is not counted, so its connections take
// their first choice (the hash alone), as before the overflow.
const snatPortsSetSize = 65536

// portsSet is the dynamic set whose elements count, per egress IP and destination (address,
// port, protocol), the TCP and UDP connections the spread chains sent there: one conntrack
// list per element (nft_connlimit), from which closed connections are dropped lazily.
func portsSet(t *nftables.Table, fam string, addrType nftables.SetDatatype) *nftables.Set {
	return &nftables.Set{Table: t, Name: fam + "-ports", Dynamic: true, Concatenation: true, Size: snatPortsSetSize,
		KeyType: nftables.MustConcatSetType(addrType, addrType, nftables.TypeInetService, nftables.TypeInetProto)}
}

// countIn adds the connection to the count of the egress IP in register 1 toward its
// destination in ports, and goes on with the rule while that count, the connection included,
// is at most limit (nft_connlimit: the connection is counted whether or not the rule goes on).
// The key is egress IP . destination address . port . protocol, one 32-bit register per field
// after the addresses.
func countIn(ports *nftables.Set, dstOff, addrLen uint32, limit uint32) []expr.Any {
	dst := reg32Src + addrLen/4
	return []expr.Any{
		&expr.Payload{DestRegister: dst, Base: expr.PayloadBaseNetworkHeader, Offset: dstOff, Len: addrLen},
		&expr.Payload{DestRegister: dst + addrLen/4, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: dst + addrLen/4 + 1},
		&expr.Dynset{SrcRegKey: reg32Src, SetName: ports.Name, SetID: ports.ID, Operation: unix.NFT_DYNSET_OP_ADD,
			Exprs: []expr.Any{&expr.Connlimit{Count: limit}}},
	}
}

// l4Is matches the transport protocol.
func l4Is(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// tcpSYNOnly matches a TCP segment with SYN set and ACK clear: a connection's opening (or its
// retransmission), never a segment conntrack picks up mid-stream.
func tcpSYNOnly() []expr.Any {
	return append(l4Is(unix.IPPROTO_TCP),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	)
}

// spreadFamily is what a family's spread chains read: where the addresses sit in the network
// header and the set that counts ports.
type spreadFamily struct {
	name     string
	proto    byte
	addrType nftables.SetDatatype
	srcOff   uint32
	dstOff   uint32
	addrLen  uint32
	ports    *nftables.Set
}

// spreadChain adds the chains (and maps) that pick one of a group's egress IPs per flow.
//
// The first choice is jhash(source address . source port) mod len(ips), with a fixed seed: it
// depends on the flow's tuple only, so a connection's retransmitted SYN and any gateway holding
// the same IPs pick the same address, which is what a connection conntrack picks up mid-stream
// on a new holder needs (docs/datapath.md, "Connections across a move"). A new connection (a
// TCP SYN without ACK, or UDP) jumps to the chain of its first choice h, which tries h, h+1, …
// in turn and takes the first whose count of connections toward the destination (address,
// port, protocol) is below the port budget, and h when all are full (conntrack then refuses it
// unless a port freed; the rule's counter is the exhaustion count). Any other TCP segment (a
// connection picked up mid-stream) takes its first choice and is counted there. Other protocols
// take the first choice uncounted. A packet without a transport header to hash (none reaches
// NAT: conntrack reassembles fragments) takes the lowest IP.
func (m nftModel) spreadChain(c *nftables.Conn, t *nftables.Table, f spreadFamily, mark uint32, ips [][]byte) (string, error) {
	name := fmt.Sprintf("%s-%d", f.name, m.marks.GroupOf(mark))
	set := &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, DataType: f.addrType}
	tries := &nftables.Set{Table: t, Name: name + "-new", IsMap: true, KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict}
	els := make([]nftables.SetElement, len(ips))
	var tryEls []nftables.SetElement
	for i, ip := range ips {
		els[i] = nftables.SetElement{Key: ne32(uint32(i)), Val: ip}
		tryEls = append(tryEls, nftables.SetElement{Key: ne32(uint32(i)),
			VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: m.tryChain(c, t, f, name, i, ips)}})
	}
	for _, s := range []struct {
		set *nftables.Set
		els []nftables.SetElement
	}{{set, els}, {tries, tryEls}} {
		if err := c.AddSet(s.set, s.els); err != nil {
			return "", fmt.Errorf("adding set %s: %w", s.set.Name, err)
		}
	}
	ch := c.AddChain(&nftables.Chain{Table: t, Name: name})
	portReg := reg32Src + f.addrLen/4
	hash := []expr.Any{
		&expr.Payload{DestRegister: reg32Src, Base: expr.PayloadBaseNetworkHeader, Offset: f.srcOff, Len: f.addrLen},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Hash{SourceRegister: reg32Src, DestRegister: 1, Length: f.addrLen + 2, Modulus: uint32(len(ips)), Seed: snatSeed, Type: expr.HashTypeJenkins},
	}
	for _, isNew := range [][]expr.Any{tcpSYNOnly(), l4Is(unix.IPPROTO_UDP)} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: slices.Concat(isNew, hash, []expr.Any{
			&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: tries.Name, SetID: tries.ID},
		})})
	}
	lookup := &expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: slices.Concat(l4Is(unix.IPPROTO_TCP), hash, []expr.Any{lookup},
		countIn(f.ports, f.dstOff, f.addrLen, ^uint32(0)), m.snatTo(f.proto))})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: slices.Concat(hash, []expr.Any{lookup}, m.snatTo(f.proto))})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append([]expr.Any{
		&expr.Immediate{Register: 1, Data: ips[0]},
	}, m.snatTo(f.proto)...)})
	return name, nil
}

func tryChainName(group string, first int) string { return fmt.Sprintf("%s-new%d", group, first) }

// tryChain adds the chain of a new connection whose first choice is ips[first]: the first IP
// from there on (wrapping) with a free port toward the destination by its count, else the
// first choice, counted (the exhaustion counter that SNATExhausted reads).
func (m nftModel) tryChain(c *nftables.Conn, t *nftables.Table, f spreadFamily, group string, first int, ips [][]byte) string {
	ch := c.AddChain(&nftables.Chain{Table: t, Name: tryChainName(group, first)})
	budget := uint32(cmp.Or(m.snatPorts.Size(), DefaultSNATPorts.Size()))
	for k := range ips {
		ip := ips[(first+k)%len(ips)]
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: slices.Concat([]expr.Any{
			&expr.Immediate{Register: 1, Data: ip},
		}, countIn(f.ports, f.dstOff, f.addrLen, budget), m.snatTo(f.proto))})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: slices.Concat([]expr.Any{
		&expr.Counter{},
		&expr.Immediate{Register: 1, Data: ips[first]},
	}, m.snatTo(f.proto))})
	return ch.Name
}
