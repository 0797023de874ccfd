package dataplane

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf"
)

// strayChain drops TCP that reaches this gateway's own stack addressed to an egress IP egressd
// mounted. The replies of the connections the gateway NATs never get there: conntrack de-NATs
// them at prerouting and they are forwarded to their pod. What does get there is the
// destination's side of a connection this gateway has no conntrack entry for, typically a
// retransmission of a connection whose egress IP just moved here from a failed gateway, before
// the pod's next segment (held on its node until this gateway proved delivery and is listed)
// rebuilt the NAT binding. Left to the stack, it is answered with a reset (no socket has that
// port), which kills the connection the move was meant to save. Dropped, it is retransmitted,
// by which time the pod's segment has taken its port back. The gateway serves nothing over TCP
// on an egress IP it mounted, so nothing else is lost. Addresses egressd did not mount (a
// nodeInterface group's, which may be the node's own) are left alone, and so is UDP (the
// delivery proofs use it).
const strayChain = "egress-ip-strays"

// strayAddrs are the addresses of the egress IPs egressd mounted (addAddresses' result).
func strayAddrs(owned map[bpf.OwnedAddr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(owned))
	for a := range owned {
		out = append(out, a.Prefix.Addr())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// fillStrays adds the input chain that drops stray TCP to m.strays.
func (m nftModel) fillStrays(c *nftables.Conn, t *nftables.Table) error {
	ch := c.AddChain(&nftables.Chain{Table: t, Name: strayChain, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	for _, f := range []struct {
		proto    byte
		name     string
		addrType nftables.SetDatatype
		dstOff   uint32
		dstLen   uint32
		is4      bool
	}{
		{unix.NFPROTO_IPV4, "egress4", nftables.TypeIPAddr, 16, 4, true},
		{unix.NFPROTO_IPV6, "egress6", nftables.TypeIP6Addr, 24, 16, false},
	} {
		set := &nftables.Set{Table: t, Name: f.name, KeyType: f.addrType}
		var els []nftables.SetElement
		for _, ip := range m.strays {
			if ip.Is4() == f.is4 {
				els = append(els, nftables.SetElement{Key: ip.AsSlice()})
			}
		}
		if err := c.AddSet(set, els); err != nil {
			return fmt.Errorf("adding set %s: %w", f.name, err)
		}
		// The protocol first: every packet to this host crosses the chain, and most
		// of a gateway's (the tunnel's) are UDP, which then cost two expressions.
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.dstOff, Len: f.dstLen},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	return nil
}
