// Package marks owns egressd's packet mark layout: which bits of the 32-bit mark carry which
// field, chosen on each node from one mask. The datapath (bpf), the dataplane's nftables and ip
// rules and the coordinator (which group ids fit) all take it from here. Pure: no system calls.
package marks

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// Layout is where egressd's fields sit in the 32-bit packet mark (skb->mark, nftables'
// meta mark and ct mark, ip rule fwmark). It is the one source of the layout: the loader
// writes it into the programs' read-only globals (mark_* in egressd.c), and the dataplane
// builds its nftables rules and ip rules from it. Every bit egressd sets, clears or compares
// is in Mask; bits outside it (a CNI's, kube-proxy's) are left as they are.
//
// Build one with New or ParseMask; the zero value means Default to the
// datapath and the dataplane. Marks never leave the node (the group travels in the VNI), so nodes may use
// different layouts.
type Layout struct {
	// Mask is every bit of the layout: MagicMask | Tunnel | Reply | Steer | GroupMask.
	Mask uint32
	// Magic, under MagicMask, is on every mark egressd sets: it tells egressd's marks apart
	// from unmarked packets.
	Magic, MagicMask uint32
	// Tunnel is set (by the tunnel ingress program, kept in the ct mark) on packets that came
	// through the tunnel: their replies must be re-encapsulated to the source node.
	Tunnel uint32
	// Reply is set (by nftables, from the ct mark) on replies to re-encapsulate; policy routing
	// sends them to the tunnel device.
	Reply uint32
	// Steer is set by the classifier on a source node's packets to tunnel to a gateway: policy
	// routing sends them to the tunnel device.
	Steer uint32
	// GroupMask is the contiguous field that carries the group id, shifted up by GroupShift.
	GroupMask  uint32
	GroupShift uint8
}

// DefaultMask is the mask of the layout egressd used before it was configurable (datapath
// v4): magic 0x6e in the top byte, the flags in bits 21-23, the group in the low 16 bits. It
// overlaps Calico's default mark mask (0xffff0000) and, for groups past 255, Cilium's magic
// bits (0x0f00) and kube-proxy's (0xc000): see docs/datapath.md#packet-marks.
const DefaultMask = 0xffe0ffff

// magicPattern is spread over the magic bits, lowest first ('n' for egressd, 0x6e).
const magicPattern = 0x6e

// MaxGroup is the largest group id any layout carries: the API's 1-65535 (the VNI holds more).
const MaxGroup = 0xffff

// Bits a layout needs besides the group field: three flags and a magic of at least two bits
// (so that no single stray bit of another program reads as egressd's mark).
const (
	markFlagBits      = 3
	minMagicBits      = 2
	maxGroupBits      = 16 // group ids are 1-65535 (MaxGroup)
	minMarkMaskBits   = markFlagBits + minMagicBits + 1
	markFlagsAndMagic = markFlagBits + minMagicBits
)

// Default is New(DefaultMask).
func Default() Layout {
	l, err := New(DefaultMask)
	if err != nil {
		panic(err) // a constant that must build: TestMarkLayout checks it
	}
	return l
}

// New lays egressd's fields out over the set bits of mask, which egressd then owns
// on the node:
//   - the group id takes the lowest run of contiguous bits, at most 16, leaving at least 5
//     bits of the mask above it;
//   - Steer, Reply and Tunnel take the next three set bits, lowest first;
//   - the magic takes every bit left, with the value 0x6e spread over them from the lowest
//     up (so at most the eight lowest magic bits are ever set).
//
// DefaultMask gives the layout of datapath v4. A mask with fewer than 6 bits, or whose
// magic bits would all be zero, is refused with an error that names it.
func New(mask uint32) (Layout, error) {
	n := bits.OnesCount32(mask)
	if n < minMarkMaskBits {
		return Layout{}, fmt.Errorf("mark mask 0x%08x has %d bits; egressd needs at least %d (3 flags, a 2-bit magic, 1 group bit)",
			mask, n, minMarkMaskBits)
	}
	shift := bits.TrailingZeros32(mask)
	width := bits.TrailingZeros32(^(mask >> shift))
	width = min(width, maxGroupBits, n-markFlagsAndMagic)
	l := Layout{Mask: mask, GroupShift: uint8(shift), GroupMask: uint32(1<<width-1) << shift}
	rest := mask &^ l.GroupMask
	take := func() uint32 {
		b := rest & -rest
		rest &^= b
		return b
	}
	l.Steer, l.Reply, l.Tunnel = take(), take(), take()
	l.MagicMask = rest
	for p := uint32(magicPattern); rest != 0 && p != 0; p >>= 1 {
		b := take()
		if p&1 != 0 {
			l.Magic |= b
		}
	}
	if err := l.Validate(); err != nil {
		return Layout{}, err
	}
	return l, nil
}

// ParseMask reads a mark mask as a flag or chart value gives it ("0xffe0ffff", or
// decimal) and lays it out with New; "" is DefaultMask.
func ParseMask(s string) (Layout, error) {
	if s == "" {
		return Default(), nil
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 0, 32)
	if err != nil {
		return Layout{}, fmt.Errorf("mark mask %q: want a 32-bit number such as 0xffe0ffff", s)
	}
	return New(uint32(v))
}

// Validate checks a layout, whether New built it or not: one bit per flag, a
// non-zero magic inside its mask, a contiguous group field of at least one bit, no two fields
// sharing a bit, and Mask the union of them all.
func (l Layout) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		bit  uint32
	}{{"tunnel", l.Tunnel}, {"reply", l.Reply}, {"steer", l.Steer}} {
		if bits.OnesCount32(f.bit) != 1 {
			errs = append(errs, fmt.Errorf("%s flag 0x%08x is not one bit", f.name, f.bit))
		}
	}
	if l.Magic == 0 || l.Magic&^l.MagicMask != 0 {
		errs = append(errs, fmt.Errorf("magic 0x%08x is zero or outside its mask 0x%08x", l.Magic, l.MagicMask))
	}
	if bits.OnesCount32(l.MagicMask) < minMagicBits {
		errs = append(errs, fmt.Errorf("magic mask 0x%08x has fewer than %d bits", l.MagicMask, minMagicBits))
	}
	if l.GroupShift > 31 || l.GroupMask == 0 || l.GroupMask>>l.GroupShift&1 == 0 ||
		(l.GroupMask>>l.GroupShift)&(l.GroupMask>>l.GroupShift+1) != 0 {
		errs = append(errs, fmt.Errorf("group field 0x%08x is not a contiguous run of bits starting at bit %d", l.GroupMask, l.GroupShift))
	}
	fields := []struct {
		name string
		bits uint32
	}{{"magic", l.MagicMask}, {"tunnel", l.Tunnel}, {"reply", l.Reply}, {"steer", l.Steer}, {"group", l.GroupMask}}
	var union uint32
	for i, a := range fields {
		for _, b := range fields[i+1:] {
			if a.bits&b.bits != 0 {
				errs = append(errs, fmt.Errorf("%s bits 0x%08x and %s bits 0x%08x overlap", a.name, a.bits, b.name, b.bits))
			}
		}
		union |= a.bits
	}
	if union != l.Mask {
		errs = append(errs, fmt.Errorf("mask 0x%08x is not the union of the fields (0x%08x)", l.Mask, union))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mark layout of mask 0x%08x: %w", l.Mask, err)
	}
	return nil
}

// OrDefault is l, or Default for the zero value.
func (l Layout) OrDefault() Layout {
	if l == (Layout{}) {
		return Default()
	}
	return l
}

// MaxGroup is the largest group id the layout's group field carries (at most MaxGroup).
func (l Layout) MaxGroup() uint32 {
	return min(l.GroupMask>>l.GroupShift, MaxGroup)
}

// CheckGroup refuses a group id the layout cannot carry: a mark would cut it to another
// group's.
func (l Layout) CheckGroup(id uint32) error {
	if id == 0 || id > l.MaxGroup() {
		return fmt.Errorf("group id %d out of range 1-%d of mark mask 0x%08x (%d group bits)",
			id, l.MaxGroup(), l.Mask, bits.OnesCount32(l.GroupMask))
	}
	return nil
}

// Group is the group field holding id (cut to the field: callers check ids with CheckGroup).
func (l Layout) Group(id uint32) uint32 { return id << l.GroupShift & l.GroupMask }

// GroupOf reads the group id from a mark.
func (l Layout) GroupOf(mark uint32) uint32 { return mark & l.GroupMask >> l.GroupShift }

// Local is the mark of a group's packets that this node, their gateway, SNATs itself (the
// classifier's mark for a local gateway): the key of the SNAT maps.
func (l Layout) Local(id uint32) uint32 { return l.Magic | l.Group(id) }

// Steered is the classifier's mark on a packet of group id to tunnel to a gateway.
func (l Layout) Steered(id uint32) uint32 { return l.Magic | l.Steer | l.Group(id) }

// Served is the mark a gateway puts on a tunnelled packet of group id.
func (l Layout) Served(id uint32) uint32 { return l.Magic | l.Tunnel | l.Group(id) }

// IsEgressd reports whether a mark carries egressd's magic.
func (l Layout) IsEgressd(mark uint32) bool { return mark&l.MagicMask == l.Magic }

// String is the layout for logs and errors.
func (l Layout) String() string {
	return fmt.Sprintf("mask 0x%08x: magic 0x%08x/0x%08x, tunnel 0x%08x, reply 0x%08x, steer 0x%08x, group 0x%08x (ids 1-%d)",
		l.Mask, l.Magic, l.MagicMask, l.Tunnel, l.Reply, l.Steer, l.GroupMask, l.MaxGroup())
}
