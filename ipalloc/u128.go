package ipalloc

import (
	"encoding/binary"
	"net/netip"
)

// u128 is an address as a number, so that ranges can be walked and counted without
// materialising them. IPv4 addresses use the low 32 bits.
type u128 struct{ hi, lo uint64 }

func fromAddr(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func toAddr(x u128, is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(x.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
	return netip.AddrFrom16(b)
}

func (x u128) cmp(y u128) int {
	switch {
	case x.hi < y.hi:
		return -1
	case x.hi > y.hi:
		return 1
	case x.lo < y.lo:
		return -1
	case x.lo > y.lo:
		return 1
	}
	return 0
}

func (x u128) less(y u128) bool { return x.cmp(y) < 0 }

func (x u128) add(y u128) u128 {
	lo := x.lo + y.lo
	carry := uint64(0)
	if lo < x.lo {
		carry = 1
	}
	return u128{x.hi + y.hi + carry, lo}
}

func (x u128) sub(y u128) u128 {
	lo := x.lo - y.lo
	borrow := uint64(0)
	if x.lo < y.lo {
		borrow = 1
	}
	return u128{x.hi - y.hi - borrow, lo}
}

func (x u128) addN(n uint64) u128 { return x.add(u128{0, n}) }
func (x u128) subN(n uint64) u128 { return x.sub(u128{0, n}) }
func (x u128) isZero() bool       { return x.hi == 0 && x.lo == 0 }

// saturate returns x as a uint64, or the largest uint64 when it does not fit.
func (x u128) saturate() uint64 {
	if x.hi != 0 {
		return ^uint64(0)
	}
	return x.lo
}

// prefixRange returns the first and last address of p (p must be valid).
func prefixRange(p netip.Prefix) (first, last u128) {
	p = p.Masked()
	first = fromAddr(p.Addr())
	host := p.Addr().BitLen() - p.Bits()
	var mask u128
	switch {
	case host >= 128:
		mask = u128{^uint64(0), ^uint64(0)}
	case host >= 64:
		mask = u128{(uint64(1) << (host - 64)) - 1, ^uint64(0)}
	default:
		mask = u128{0, (uint64(1) << host) - 1}
	}
	return first, first.add(mask)
}

// span is an inclusive range of addresses.
type span struct{ first, last u128 }
