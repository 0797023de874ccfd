package coordinator

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"net/netip"
	"slices"
	"time"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/ipalloc"
)

// NodeView is what the coordinator knows of one node when planning a gateway group.
type NodeView struct {
	Name       string
	Zone       string
	UnderlayIP netip.Addr
	// Selected: the node matches the group's nodeSelector.
	Selected bool
	// Ready is the Node's Ready condition; Cordoned is spec.unschedulable.
	Ready    bool
	Cordoned bool
	// AgentAlive: the agent's Lease was renewed recently.
	AgentAlive bool
	// ProbeUp is the coordinator's own probe verdict.
	ProbeUp bool
	// Free is how many more egress IPs the node can take (provider capacity).
	Free int
	// Delivered is what the node's agent proved the fabric delivers to it (its Lease's
	// contract.DeliveredAnnotation); nil when the agent does not prove delivery, and then every
	// address the cloud gave the node counts as delivered.
	Delivered contract.Delivered
}

// IPView is one EgressIP of the group as the ledger has it.
type IPView struct {
	IP   netip.Addr
	Zone string
	// Node is spec.node, where the coordinator wants the address.
	Node string
	// Held is status.node, where the cloud put it; Generation the EgressIP's
	// metadata.generation, which a delivery proof must name.
	Held       string
	Generation int64
}

// PlanInput is everything the planner decides from. It holds no clients: Plan is pure.
type PlanInput struct {
	// Group is the gateway's name: the key of the ActiveStandby election.
	Group string
	Spec  egressv1.EgressGatewaySpec
	Nodes []NodeView
	IPs   []IPView
	// Previous is the group's last written status: when each gateway started draining.
	Previous egressv1.EgressGatewayStatus
	Now      time.Time
	// ProbeGraceUntil: until then, the controller's failed probes of gateways that were not
	// Unhealthy in Previous are still ignored, although some gateway answers again (the
	// controller's path just came back; GatewayReconciler.probeGrace). Zero: no grace.
	ProbeGraceUntil time.Time
}

// ZonePlan is the decision for one zone.
type ZonePlan struct {
	Name     string
	Gateways []egressv1.GatewayNodeStatus
	// Place maps every egress IP of the zone to the node that should hold it ("" when no node
	// of the zone can: the address is kept for the group and placed when one comes back).
	Place map[netip.Addr]string
	// Want is how many new addresses to allocate (ipsPerZone minus existing), Excess how many
	// to release (highest addresses first) after ipsPerZone was lowered.
	Want   int
	Excess []netip.Addr
}

// Plan is the planner's decision for a group.
type Plan struct {
	Zones []ZonePlan
	// Requeue is when the plan changes by itself (a drain grace period ends); zero: never.
	Requeue time.Duration
	// ProbesIgnored names, sorted, the gateways whose failed coordinator probes were ignored
	// because the probes failed for the whole group (controllerProbesFailing); empty otherwise.
	ProbesIgnored []string
}

// gatewayView is a node's standing in the group before placement.
type gatewayView struct {
	NodeView
	state  egressv1.GatewayState
	reason string
	since  time.Time
	// usable: may hold egress IPs and take new flows.
	usable bool
	// keeps: still holds its addresses (draining within the grace period).
	keeps bool
}

// PlanGateway decides, for one group, each gateway's state and where each egress IP goes. It
// uses alloc only to place addresses (ipalloc.Place); alloc must hold the group's leases with
// their current nodes.
func PlanGateway(in PlanInput, alloc *ipalloc.Allocator) (Plan, error) {
	grace := contract.DrainGracePeriod(&in.Spec)
	prevState := map[string]egressv1.GatewayNodeStatus{}
	for _, z := range in.Previous.Zones {
		for _, g := range z.Gateways {
			prevState[g.Node] = g
		}
	}
	holds := map[string]int{}
	for _, ip := range in.IPs {
		if ip.Node != "" {
			holds[ip.Node]++
		}
	}

	var plan Plan
	ignored := controllerProbesFailing(in.Nodes)
	if ignored == nil && in.Now.Before(in.ProbeGraceUntil) {
		ignored = map[string]bool{}
		for _, n := range in.Nodes {
			if p, ok := prevState[n.Name]; ok && !n.ProbeUp && p.State != egressv1.GatewayUnhealthy {
				ignored[n.Name] = true
			}
		}
		plan.Requeue = minPositive(plan.Requeue, in.ProbeGraceUntil.Sub(in.Now))
	}
	for name := range ignored {
		plan.ProbesIgnored = append(plan.ProbesIgnored, name)
	}
	slices.Sort(plan.ProbesIgnored)
	zones := map[string][]*gatewayView{}
	for _, n := range in.Nodes {
		prev, wasGateway := prevState[n.Name]
		if !n.Selected && !wasGateway {
			continue
		}
		g := &gatewayView{NodeView: n}
		switch {
		case !n.Selected || n.Cordoned:
			g.state, g.reason = egressv1.GatewayDraining, egressv1.ReasonCordoned
			if !n.Selected {
				g.reason = egressv1.ReasonLabelRemoved
			}
			g.since = in.Now
			if prev.State == egressv1.GatewayDraining && prev.Since != nil {
				g.since = prev.Since.Time
			}
			left := grace - in.Now.Sub(g.since)
			if left <= 0 {
				if !n.Selected {
					continue // drained and no longer selected: it leaves the group
				}
			} else {
				g.keeps = holds[n.Name] > 0
				plan.Requeue = minPositive(plan.Requeue, left)
			}
		case !n.Ready:
			g.state, g.reason = egressv1.GatewayUnhealthy, egressv1.ReasonNodeNotReady
		case !n.AgentAlive:
			g.state, g.reason = egressv1.GatewayUnhealthy, egressv1.ReasonAgentLeaseExpired
		case !n.ProbeUp && !ignored[n.Name]:
			g.state, g.reason = egressv1.GatewayUnhealthy, egressv1.ReasonProbeFailed
		default:
			g.usable = true
		}
		zones[n.Zone] = append(zones[n.Zone], g)
	}
	ipsByZone := map[string][]IPView{}
	for _, ip := range in.IPs {
		ipsByZone[ip.Zone] = append(ipsByZone[ip.Zone], ip)
		if _, ok := zones[ip.Zone]; !ok {
			zones[ip.Zone] = nil
		}
	}

	names := make([]string, 0, len(zones))
	for z := range zones {
		names = append(names, z)
	}
	slices.Sort(names)
	for _, zone := range names {
		zp, err := planZone(in, zone, zones[zone], ipsByZone[zone], holds, alloc)
		if err != nil {
			return Plan{}, err
		}
		plan.Zones = append(plan.Zones, zp)
	}
	return plan, nil
}

// controllerProbesFailing returns the gateways whose failed coordinator probes are not to be
// believed: those that are otherwise healthy (selected, not cordoned, Node Ready, agent Lease
// fresh) when no node of the group answers the coordinator's probes at all. A probe failing for
// every gateway while every agent still reaches the API server says the controller's own path to
// the probe port is cut (a NetworkPolicy in its namespace, a partition of its node) far more
// often than that every gateway died at once; failing them all would drop all steered traffic
// with no_gateway. One node answering shows the path works, and the others' failures stand. The
// agents' own probes still decide datapath failover between gateways, so a gateway whose agent
// lives but whose datapath is broken for everyone is avoided by the workers, not here.
// Nodes the coordinator does not probe (no underlay address) are no evidence either way.
func controllerProbesFailing(nodes []NodeView) map[string]bool {
	var alive []string
	for _, n := range nodes {
		if !n.UnderlayIP.IsValid() {
			continue
		}
		if n.ProbeUp {
			return nil // the controller's path works: probe failures are the gateways'
		}
		if n.Selected && !n.Cordoned && n.Ready && n.AgentAlive {
			alive = append(alive, n.Name)
		}
	}
	if len(alive) == 0 {
		return nil
	}
	ignored := make(map[string]bool, len(alive))
	for _, name := range alive {
		ignored[name] = true
	}
	return ignored
}

func planZone(in PlanInput, zone string, gws []*gatewayView, ips []IPView, holds map[string]int, alloc *ipalloc.Allocator) (ZonePlan, error) {
	slices.SortFunc(gws, func(a, b *gatewayView) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(ips, func(a, b IPView) int { return a.IP.Compare(b.IP) })

	// maxGatewaysPerZone: prefer usable nodes that already hold addresses, so a cap never
	// moves an address off a healthy gateway.
	usable := []*gatewayView{}
	for _, g := range gws {
		if g.usable {
			usable = append(usable, g)
		}
	}
	slices.SortStableFunc(usable, func(a, b *gatewayView) int { return cmp.Compare(b2i(holds[b.Name] > 0), b2i(holds[a.Name] > 0)) })
	if m := in.Spec.Zones; m != nil && m.MaxGatewaysPerZone != nil && len(usable) > int(*m.MaxGatewaysPerZone) {
		for _, g := range usable[*m.MaxGatewaysPerZone:] {
			g.usable = false
			g.state, g.reason = egressv1.GatewayStandby, egressv1.ReasonOverMaxGatewaysPerZone
		}
		usable = usable[:*m.MaxGatewaysPerZone]
	}

	zp := ZonePlan{Name: zone, Place: map[netip.Addr]string{}}
	keep := map[string]bool{}
	for _, g := range gws {
		if g.keeps {
			keep[g.Name] = true
		}
	}
	var movable []netip.Addr
	for _, ip := range ips {
		if keep[ip.Node] {
			zp.Place[ip.IP] = ip.Node
			continue
		}
		movable = append(movable, ip.IP)
	}

	want := 1
	if c := in.Spec.Addresses.Cloud; c != nil && c.IPsPerZone > 0 {
		want = int(c.IPsPerZone)
	}
	switch in.Spec.Addresses.Source() {
	case egressv1.AddressSourceStatic:
		want = len(ips) // static pools define the set; nothing to allocate or trim here
	case egressv1.AddressSourceNodeInterface:
		want = 0 // each gateway's own address; nothing to allocate
	}
	if len(ips) > want {
		// Release the highest addresses; they are the most recently allocated.
		for _, ip := range ips[want:] {
			zp.Excess = append(zp.Excess, ip.IP)
			movable = slices.DeleteFunc(movable, func(a netip.Addr) bool { return a == ip.IP })
			delete(zp.Place, ip.IP)
		}
	}
	if len(usable) > 0 && len(ips) < want {
		zp.Want = want - len(ips)
	}

	switch {
	case len(usable) == 0:
		for _, ip := range movable {
			zp.Place[ip] = "" // no survivor in the zone: keep the address, unplaced
		}
	case in.Spec.Mode == egressv1.ModeActiveStandby:
		active := activeNode(in, usable, ips)
		for _, ip := range movable {
			zp.Place[ip] = active
		}
	default:
		candidates := make([]ipalloc.Node, 0, len(usable))
		for _, g := range usable {
			free := g.Free
			if free < 0 {
				free = len(movable) // unknown capacity: let the cloud say no
			}
			candidates = append(candidates, ipalloc.Node{Name: g.Name, Free: free})
		}
		placed, err := alloc.Place(zone, movable, candidates)
		if err != nil && !ipalloc.IsNoCapacity(err) {
			return ZonePlan{}, err
		}
		for _, ip := range movable {
			zp.Place[ip] = placed[ip] // "" when no capacity: reported as unplaced
		}
		if in.Spec.Failback == egressv1.FailbackImmediate {
			rebalance(zp.Place, usable)
		}
	}

	// A usable gateway is Active once it serves an address placed on it: for cloud addresses,
	// once the cloud holds it there and the node's agent proved the fabric delivers it (a cloud
	// applies a move after its call returns: listing the node earlier sends new flows to a
	// gateway that can only drop them). Static addresses are announced by the holder itself.
	placed, serving := map[string]bool{}, map[string]bool{}
	view := map[netip.Addr]IPView{}
	for _, ip := range ips {
		view[ip.IP] = ip
	}
	delivered := map[string]contract.Delivered{}
	for _, g := range gws {
		delivered[g.Name] = g.Delivered
	}
	for ip, node := range zp.Place {
		if node == "" {
			continue
		}
		placed[node] = true
		v := view[ip]
		if in.Spec.Addresses.Source() != egressv1.AddressSourceCloud ||
			v.Node == node && v.Held == node && (delivered[node] == nil || delivered[node].Proves(ip, v.Generation)) {
			serving[node] = true
		}
	}
	for _, g := range gws {
		st := egressv1.GatewayNodeStatus{Node: g.Name, State: g.state, Reason: g.reason}
		if g.UnderlayIP.IsValid() {
			st.UnderlayIP = g.UnderlayIP.String()
		}
		if g.usable {
			st.State = egressv1.GatewayStandby
			st.Reason = egressv1.ReasonNoEgressIP
			switch {
			// nodeInterface gateways egress with their own interface address: no EgressIP to hold.
			case serving[g.Name] || in.Spec.Addresses.Source() == egressv1.AddressSourceNodeInterface:
				st.State, st.Reason = egressv1.GatewayActive, ""
			case placed[g.Name]:
				st.Reason = egressv1.ReasonAwaitingDelivery
			}
		}
		since := in.Now
		if st.State == egressv1.GatewayDraining {
			since = g.since
		} else if p := previousOf(in.Previous, g.Name); p != nil && p.State == st.State && p.Since != nil {
			since = p.Since.Time
		}
		st.Since = timePtr(since)
		zp.Gateways = append(zp.Gateways, st)
	}
	return zp, nil
}

// activeNode picks the one active gateway of an ActiveStandby zone: the current holder while it
// is usable (failback Never), else the election's winner among the usable nodes (which is also
// where Immediate failback returns).
func activeNode(in PlanInput, usable []*gatewayView, ips []IPView) string {
	names := make([]string, len(usable))
	for i, g := range usable {
		names[i] = g.Name
	}
	if in.Spec.Failback != egressv1.FailbackImmediate {
		for _, ip := range ips {
			if slices.Contains(names, ip.Node) {
				return ip.Node
			}
		}
	}
	return ElectActive(in.Group, names)
}

// ElectActive is the ActiveStandby election, as MetalLB's speaker elects the node announcing a
// service: candidates ranked by sha256(node name + "#" + group), the first wins (ties, which
// need a hash collision, by name). The ranking of two nodes is the same whoever else is a
// candidate, so a node joining or leaving moves only the groups it wins or held; and since the
// key includes the group, groups sharing a set of nodes spread their active role across them
// instead of all electing the alphabetically first node (DESIGN.md §1). "" when there is no
// candidate.
func ElectActive(group string, candidates []string) string {
	best, bestSum := "", [sha256.Size]byte{}
	for _, n := range candidates {
		sum := sha256.Sum256([]byte(n + "#" + group))
		if c := bytes.Compare(sum[:], bestSum[:]); best == "" || c < 0 || (c == 0 && n < best) {
			best, bestSum = n, sum
		}
	}
	return best
}

// rebalance moves addresses from the most loaded usable gateway to the least loaded while they
// differ by two or more, so a recovered gateway takes its share back (failback Immediate).
func rebalance(place map[netip.Addr]string, usable []*gatewayView) {
	for {
		count := map[string][]netip.Addr{}
		for _, g := range usable {
			count[g.Name] = nil
		}
		for ip, n := range place {
			if _, ok := count[n]; ok {
				count[n] = append(count[n], ip)
			}
		}
		var most, least string
		for _, g := range usable {
			n := g.Name
			if most == "" || len(count[n]) > len(count[most]) {
				most = n
			}
			if least == "" || len(count[n]) < len(count[least]) {
				least = n
			}
		}
		if len(count[most])-len(count[least]) < 2 {
			return
		}
		moving := slices.MaxFunc(count[most], func(a, b netip.Addr) int { return a.Compare(b) })
		place[moving] = least
	}
}

func previousOf(st egressv1.EgressGatewayStatus, node string) *egressv1.GatewayNodeStatus {
	for i := range st.Zones {
		for j := range st.Zones[i].Gateways {
			if st.Zones[i].Gateways[j].Node == node {
				return &st.Zones[i].Gateways[j]
			}
		}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// minPositive is the smaller of two durations, ignoring those that are not positive.
func minPositive(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}
