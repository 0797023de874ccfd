package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/ipalloc"
	"github.com/egressd/egressd/providers"
)

// ledgerAlloc is the allocator rebuilt from the EgressIP ledger, with the subnets registered
// with it. The gateway controller allocates and places with it; the EgressIP controller gives
// addresses back.
type ledgerAlloc struct {
	*ipalloc.Allocator

	mu sync.Mutex
	// loaded: rebuilt from every EgressIP.
	loaded bool
	// subnets registered, by zone/subnet.
	subnets map[string]bool
}

func newLedgerAlloc() *ledgerAlloc {
	return &ledgerAlloc{Allocator: ipalloc.New(), subnets: map[string]bool{}}
}

// load rebuilds the allocator from every EgressIP, once, before anything is allocated.
// Records claiming one address twice are reported and left to the operator: nothing is
// resolved silently.
func (a *ledgerAlloc) load(ctx context.Context, reader client.Reader) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.loaded {
		return nil
	}
	var list egressv1.EgressIPList
	if err := reader.List(ctx, &list); err != nil {
		return fmt.Errorf("listing the EgressIP ledger: %w", err)
	}
	records := make([]ipalloc.Record, 0, len(list.Items))
	for _, e := range list.Items {
		ip, err := netip.ParseAddr(e.Spec.IP)
		if err != nil {
			continue // the schema makes this impossible; nothing to reclaim
		}
		records = append(records, ipalloc.Record{IP: ip, Zone: e.Spec.Zone, Subnet: e.Spec.Subnet, Owner: e.Spec.Gateway, Node: e.Spec.Node})
	}
	if err := a.Rebuild(records); err != nil {
		var conflict *ipalloc.ConflictError
		if !errors.As(err, &conflict) {
			return fmt.Errorf("rebuilding the allocator from %d EgressIPs: %w", len(records), err)
		}
		// Conflicts are reported on the objects' gateways by the reconcile that meets them;
		// the allocator keeps the first claimant.
	}
	a.loaded = true
	return nil
}

// addSubnet registers a subnet once.
func (a *ledgerAlloc) addSubnet(zone, subnet string, cidr netip.Prefix, res ipalloc.Reservation) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.addSubnetLocked(zone, subnet, cidr, res)
}

func (a *ledgerAlloc) addSubnetLocked(zone, subnet string, cidr netip.Prefix, res ipalloc.Reservation) error {
	key := zone + "/" + subnet
	if a.subnets[key] {
		return nil
	}
	if err := a.AddSubnet(zone, subnet, cidr, res); err != nil {
		return err
	}
	a.subnets[key] = true
	return nil
}

// registerSubnets tells the allocator about a node's subnets and the addresses its interfaces
// already hold.
func (a *ledgerAlloc) registerSubnets(providerType string, info *providers.NodeInfo) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	res, err := ipalloc.ReservationByName(providerType)
	if err != nil {
		res = ipalloc.ReserveNone
	}
	var errs []error
	for _, s := range info.Subnets {
		zone := s.Zone
		if zone == "" {
			zone = info.Zone
		}
		if err := a.addSubnetLocked(zone, s.ID, s.CIDR, res); err != nil {
			errs = append(errs, err)
			continue
		}
		if len(s.Reserved) > 0 {
			errs = append(errs, a.MarkInUse(zone, s.ID, s.Reserved...))
		}
	}
	for _, itf := range info.Interfaces {
		for _, ip := range append([]netip.Addr{itf.PrimaryIP}, itf.SecondaryIPs...) {
			if !ip.IsValid() {
				continue
			}
			if _, leased := a.Lookup(ip); leased {
				continue
			}
			if a.subnets[info.Zone+"/"+itf.SubnetID] {
				errs = append(errs, a.MarkInUse(info.Zone, itf.SubnetID, ip))
			}
		}
	}
	return errors.Join(errs...)
}
