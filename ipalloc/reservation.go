package ipalloc

import "fmt"

// Reservation says how many addresses at each end of a subnet the cloud keeps for itself
// (network address, router, DNS, broadcast...). Any value is a valid profile; the named ones
// match the clouds' documentation.
type Reservation struct {
	Name string
	// First and Last are how many addresses at the start and at the end are reserved.
	First, Last int
}

// The reservation profiles of the supported clouds.
var (
	// ReserveNone: static ranges, whose every address is usable.
	ReserveNone = Reservation{Name: "none"}
	// ReserveAWS: network, VPC router, DNS, future use, and the last address (v4 and v6).
	ReserveAWS = Reservation{Name: "aws", First: 4, Last: 1}
	// ReserveAzure: network, default gateway, two DNS, and broadcast.
	ReserveAzure = Reservation{Name: "azure", First: 4, Last: 1}
	// ReserveGCP: network, default gateway, second-to-last and broadcast.
	ReserveGCP = Reservation{Name: "gcp", First: 2, Last: 2}
)

// ReservationByName returns the named profile: "none", "aws", "azure" or "gcp".
func ReservationByName(name string) (Reservation, error) {
	for _, r := range []Reservation{ReserveNone, ReserveAWS, ReserveAzure, ReserveGCP} {
		if r.Name == name {
			return r, nil
		}
	}
	return Reservation{}, fmt.Errorf("ipalloc: reservation profile %q: %w", name, ErrInvalid)
}

func (r Reservation) String() string {
	if r.Name != "" {
		return r.Name
	}
	return fmt.Sprintf("first %d, last %d", r.First, r.Last)
}
