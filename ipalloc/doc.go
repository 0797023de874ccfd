// Package ipalloc owns the choice of egress addresses: which address of which subnet an egress
// IP gets, and which gateway node of a zone holds it. It is pure (no I/O, no logging, no
// Kubernetes or cloud imports) so that the coordinator can rebuild it from the EgressIP ledger
// at any time and so that its rules can be proven by table, property and fuzz tests.
//
// # Pools
//
// A pool is a subnet of one zone, identified by (zone, subnet ID): a provider-discovered subnet
// added with [Allocator.AddSubnet] or a static range added with [Allocator.AddRange]. IPv4 and
// IPv6 pools are tracked the same way: only the addresses that are taken are stored, never a
// free list, so a /64 costs no more than a /28. Pools must not overlap, which makes the pool of
// an address unique.
//
// # What is never handed out
//
//   - the subnet's reserved addresses, by [Reservation] profile: [ReserveAWS] and [ReserveAzure]
//     (first four and last), [ReserveGCP] (first two and last two), [ReserveNone], or any
//     custom Reservation{First: n, Last: m};
//   - node primary IPs ([Allocator.SetNodeIPs]);
//   - addresses the cloud reports in use ([Allocator.MarkInUse], [Allocator.SetInUse]);
//   - addresses excluded by the user ([Allocator.Exclude], [Allocator.SetExcluded]);
//   - addresses already leased to an owner.
//
// [Allocator.Allocate] returns the lowest address of the pool that none of these rules forbids.
// The result is a function of the state alone, not of the order of past calls, so an
// allocator rebuilt from the ledger hands out exactly what the original would have.
//
// # Rebuilding from the ledger
//
// At start-up the coordinator passes the existing EgressIP records as plain [Record] values to
// [Allocator.Rebuild], before any Allocate. Records may arrive before their subnet is known;
// they are held and attached when [Allocator.AddSubnet] adds it. Rebuild and [Allocator.Claim]
// accept a record on an address that is excluded, reported in use or a node IP (those are
// facts about an existing assignment, which the coordinator decides what to do with), but
// never one on a reserved address or outside its subnet, and never the same address for two
// different records: that is a [*ConflictError] naming both claimants. The address stays held
// by the first claimant in (IP, zone, subnet, owner, node) order until the coordinator
// releases it; nothing is resolved silently.
//
// # Placement
//
// [Allocator.Place] spreads a zone's egress IPs over its gateway nodes. An address whose
// current node (the Node of its lease, see [Allocator.SetNode]) is among the candidates stays
// there. Every other address, in address order, goes to the node holding the fewest of the
// given addresses, then the one with the most free IP slots, then the first by name; a node
// never receives more addresses than its free slots. Egress IPs are failover units, so an even
// spread keeps the number moved by one node failure small; capacity only breaks ties and bounds
// the result. The result depends only on the input sets, not their order.
//
// # Typical use
//
//	a := ipalloc.New()
//	err := a.Rebuild(records)                          // ledger first
//	err = a.AddSubnet("eu-west-1a", "subnet-1", prefix, ipalloc.ReserveAWS)
//	err = a.SetInUse("eu-west-1a", "subnet-1", cloudAddrs)
//	a.SetNodeIPs(nodePrimaryIPs)
//	ip, err := a.Allocate("eu-west-1a", "subnet-1", "gateway/web")
//	plan, err := a.Place("eu-west-1a", ips, []ipalloc.Node{{Name: "n1", Free: 9}})
//	err = a.SetNode(ip, plan[ip])
//	err = a.Release(ip)
//
// Errors are typed: match them with errors.Is against the Err* values (or the Is* helpers) and
// errors.As against [*SubnetError], [*ConflictError] and [*CapacityError]. Every error about a
// pool names its zone and subnet. An Allocator is safe for concurrent use.
package ipalloc
