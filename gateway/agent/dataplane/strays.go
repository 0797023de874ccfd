package dataplane

import (
	"fmt"
	"maps"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// strayChain drops TCP that reaches this gateway's own stack addressed to one of its egress
// IPs. The replies of the connections the gateway NATs never get there: conntrack de-NATs them
// at prerouting and they are forwarded to their pod. What does get there is the destination's
// side of a connection this gateway has no conntrack entry for, typically a retransmission
// of a connection whose egress IP just moved here from a failed gateway, before the pod's
// next segment (held on its node until the move is served) rebuilt the NAT binding. Left to
// the stack, it is answered with a reset (no socket has that port), which kills the
// connection the move was meant to save, and the conntrack entry the reset leaves would make
// the pod's segment SNAT to another port. Dropped, it is retransmitted, by which time the
// pod's segment has taken its port back. The gateway serves nothing over TCP on an egress IP,
// so nothing else is lost; UDP is left alone (the delivery proofs use it).
const strayChain = "egress-ip-strays"

// fillStrays adds the input chain that drops stray TCP to the egress IPs of m.
func (m nftModel) fillStrays(c *nftables.Conn, t *nftables.Table) error {
	ch := c.AddChain(&nftables.Chain{Table: t, Name: strayChain, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	for _, f := range []struct {
		proto    byte
		name     string
		addrType nftables.SetDatatype
		dstOff   uint32
		dstLen   uint32
		elems    map[uint32][][]byte
	}{
		{unix.NFPROTO_IPV4, "egress4", nftables.TypeIPAddr, 16, 4, m.snat4},
		{unix.NFPROTO_IPV6, "egress6", nftables.TypeIP6Addr, 24, 16, m.snat6},
	} {
		set := &nftables.Set{Table: t, Name: f.name, KeyType: f.addrType}
		seen := map[string]bool{}
		var els []nftables.SetElement
		for _, mark := range slices.Sorted(maps.Keys(f.elems)) {
			for _, ip := range f.elems[mark] {
				if !seen[string(ip)] {
					seen[string(ip)] = true
					els = append(els, nftables.SetElement{Key: ip})
				}
			}
		}
		if err := c.AddSet(set, els); err != nil {
			return fmt.Errorf("adding set %s: %w", f.name, err)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.proto}},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.dstOff, Len: f.dstLen},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	return nil
}
