package netns

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// HostileTable is the nftables table (family inet) holding, on every node, the rules real
// clusters carry and egressd must get past:
//
//	chain postrouting { type nat hook postrouting priority srcnat;
//	    ip saddr <podCIDR> ip daddr != <non-masquerade CIDRs> masquerade
//	    ip6 saddr <podCIDR6> ip6 daddr != <non-masquerade CIDRs> masquerade }
//	chain forward { type filter hook forward priority filter; ct state invalid drop }
//
// the first as a CNI masquerades off-cluster pod traffic to the node IP (Cilium, Calico,
// flannel), the second as kube-proxy drops conntrack-INVALID packets in FORWARD.
const HostileTable = "cni_hostile"

func (t *Topology) addHostileRules(n *Node) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(n.handle)))
	if err != nil {
		return fmt.Errorf("nftables in %s: %w", n.Namespace.Name, err)
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: HostileTable})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: tbl, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})

	srcs := []netip.Prefix{n.PodCIDR}
	if t.v6() {
		srcs = append(srcs, n.PodCIDR6)
	}
	for _, src := range srcs {
		c.AddRule(&nftables.Rule{Table: tbl, Chain: post, Exprs: masqueradeExprs(src, t.Spec.NonMasqueradeCIDRs)})
	}
	c.AddRule(&nftables.Rule{Table: tbl, Chain: fwd, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitINVALID), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("adding hostile rules in %s: %w", n.Namespace.Name, err)
	}
	return nil
}

// masqueradeExprs builds "saddr in src, daddr outside every same-family prefix of keep:
// masquerade".
func masqueradeExprs(src netip.Prefix, keep []netip.Prefix) []expr.Any {
	proto, saddrOff, daddrOff, alen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(16), uint32(4)
	if src.Addr().Is6() {
		proto, saddrOff, daddrOff, alen = unix.NFPROTO_IPV6, 8, 24, 16
	}
	ex := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	ex = append(ex, prefixMatch(saddrOff, alen, src, expr.CmpOpEq)...)
	for _, k := range keep {
		if k.Addr().Is6() == src.Addr().Is6() {
			ex = append(ex, prefixMatch(daddrOff, alen, k, expr.CmpOpNeq)...)
		}
	}
	return append(ex, &expr.Masq{})
}

func prefixMatch(off, alen uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	mask := make([]byte, alen)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: alen},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: alen, Mask: mask, Xor: make([]byte, alen)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}
