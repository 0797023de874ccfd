package dataplane

import (
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
func (d *Dataplane) applyNFT(m nftModel) error {
	if d.nftHash == m.key() {
		return nil
	}
	if err := d.replaceNFT("writing", m.fill); err != nil {
		return err
	}
	d.nftHash = m.key()
	return nil
}

func (d *Dataplane) removeNFT() error {
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
		marks := slices.Sorted(maps.Keys(f.elems))
		for _, mark := range marks {
			ips := f.elems[mark]
			if len(ips) == 1 {
				single = append(single, nftables.SetElement{Key: ne32(mark), Val: ips[0]})
				continue
			}
			chain, err := m.spreadChain(c, t, f.name, f.proto, f.addrType, f.srcOff, f.srcLen, mark, ips)
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

// spreadChain adds the chain (and its map) that picks one of a group's
// egress IPs per flow: jhash(source address . source port) mod len(ips)
// indexes the map. The choice depends on the flow's tuple only, so a
// connection's retransmitted SYN and any gateway holding the same IPs pick
// the same address. A packet without a transport header to hash (none
// reaches NAT: conntrack reassembles fragments) takes the lowest IP.
func (m nftModel) spreadChain(c *nftables.Conn, t *nftables.Table, fam string, proto byte, addrType nftables.SetDatatype,
	srcOff, srcLen uint32, mark uint32, ips [][]byte) (string, error) {
	name := fmt.Sprintf("%s-%d", fam, m.marks.GroupOf(mark))
	set := &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, DataType: addrType}
	els := make([]nftables.SetElement, len(ips))
	for i, ip := range ips {
		els[i] = nftables.SetElement{Key: ne32(uint32(i)), Val: ip}
	}
	if err := c.AddSet(set, els); err != nil {
		return "", fmt.Errorf("adding set %s: %w", name, err)
	}
	ch := c.AddChain(&nftables.Chain{Table: t, Name: name})
	portReg := reg32Src + srcLen/4
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append([]expr.Any{
		&expr.Payload{DestRegister: reg32Src, Base: expr.PayloadBaseNetworkHeader, Offset: srcOff, Len: srcLen},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Hash{SourceRegister: reg32Src, DestRegister: 1, Length: srcLen + 2, Modulus: uint32(len(ips)), Seed: snatSeed, Type: expr.HashTypeJenkins},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
	}, m.snatTo(proto)...)})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append([]expr.Any{
		&expr.Immediate{Register: 1, Data: ips[0]},
	}, m.snatTo(proto)...)})
	return name, nil
}
