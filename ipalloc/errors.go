package ipalloc

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrExhausted: the pool has no address left that may be handed out.
	ErrExhausted = errors.New("no free address")
	// ErrUnknownSubnet: no pool has this zone and subnet ID.
	ErrUnknownSubnet = errors.New("unknown subnet")
	// ErrOverlap: the new pool overlaps an existing one.
	ErrOverlap = errors.New("overlaps another subnet")
	// ErrConflict: two records claim the same address (see ConflictError).
	ErrConflict = errors.New("address claimed twice")
	// ErrNotAllocated: the address has no lease.
	ErrNotAllocated = errors.New("address not allocated")
	// ErrReserved: the address is one of the subnet's reserved addresses.
	ErrReserved = errors.New("address reserved by the subnet")
	// ErrOutsideSubnet: the address is not in the named subnet, or its pool has another zone
	// or subnet ID than the record says.
	ErrOutsideSubnet = errors.New("address outside the subnet")
	// ErrSubnetInUse: the pool still has leased addresses.
	ErrSubnetInUse = errors.New("subnet has allocated addresses")
	// ErrNoCapacity: no candidate node has a free IP slot left (see CapacityError).
	ErrNoCapacity = errors.New("no gateway node has a free IP slot")
	// ErrInvalid: a malformed argument (invalid address or prefix, empty name...).
	ErrInvalid = errors.New("invalid argument")
)

// SubnetError is an error about one pool, and possibly one address in it.
type SubnetError struct {
	// Op is what was being done: "allocate", "claim", "release", "add subnet"...
	Op     string
	Zone   string
	Subnet string
	// Addr is the address concerned, when there is one.
	Addr netip.Addr
	Err  error
}

func (e *SubnetError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ipalloc: %s: zone %q subnet %q", e.Op, e.Zone, e.Subnet)
	if e.Addr.IsValid() {
		fmt.Fprintf(&b, " address %s", e.Addr)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *SubnetError) Unwrap() error { return e.Err }

// ConflictError reports an address claimed by two different records. Held keeps the address;
// Claim was refused.
type ConflictError struct {
	Addr  netip.Addr
	Held  Record
	Claim Record
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("ipalloc: address %s claimed twice: by %s and by %s", e.Addr, describe(e.Held), describe(e.Claim))
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

func describe(r Record) string {
	s := fmt.Sprintf("owner %q (zone %q subnet %q", r.Owner, r.Zone, r.Subnet)
	if r.Node != "" {
		s += fmt.Sprintf(" node %q", r.Node)
	}
	return s + ")"
}

// CapacityError reports the addresses Place could not put on any node of the zone.
type CapacityError struct {
	Zone     string
	Unplaced []netip.Addr
}

func (e *CapacityError) Error() string {
	return fmt.Sprintf("ipalloc: place: zone %q: %d address(es) unplaced (first %s): %s",
		e.Zone, len(e.Unplaced), e.Unplaced[0], ErrNoCapacity)
}

// Is makes errors.Is(err, ErrNoCapacity) true.
func (e *CapacityError) Is(target error) bool { return target == ErrNoCapacity }

// IsExhausted reports whether err says a pool has no free address.
func IsExhausted(err error) bool { return errors.Is(err, ErrExhausted) }

// IsConflict reports whether err contains an address claimed twice.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsNotAllocated reports whether err says the address had no lease.
func IsNotAllocated(err error) bool { return errors.Is(err, ErrNotAllocated) }

// IsUnknownSubnet reports whether err names a pool that does not exist.
func IsUnknownSubnet(err error) bool { return errors.Is(err, ErrUnknownSubnet) }

// IsNoCapacity reports whether err says some addresses could not be placed.
func IsNoCapacity(err error) bool { return errors.Is(err, ErrNoCapacity) }
