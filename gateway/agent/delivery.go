package agent

import (
	"context"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
)

// Delivery proofs (docs/control-plane.md, "Delivery"). A cloud answers a move before its network
// applies it: EC2 remaps a reassigned private address asynchronously, an Azure NIC update runs
// for tens of seconds, a GCE alias update is an operation. Until the fabric delivers the address
// to this node, packets sent from it are dropped by the cloud's source check and replies to it
// reach the old holder. So a gateway mounts a cloud address as soon as the cloud gives it the
// address, but SNATs to it only once it has proven delivery: a probe sent from the address to
// another gateway's responder came back. The proof goes into the agent's Lease
// (contract.DeliveredAnnotation), and the coordinator lists the node Active for the address
// only then, so workers send it no new flow it could only drop.

// deliveryProbeInterval is how often a proof in progress probes its peers: the proof lands
// within this of the fabric delivering the address.
const deliveryProbeInterval = 100 * time.Millisecond

// deliveryRetry is how long a proof whose socket could not be opened waits to try again (the
// address may not be mounted yet).
const deliveryRetry = 200 * time.Millisecond

type deliveryRun struct {
	gen     int64
	prober  *probe.Prober
	cancel  context.CancelFunc
	started time.Time
}

// deliveries holds the agent's proofs and the probes making new ones.
type deliveries struct {
	mu     sync.Mutex
	proven contract.Delivered
	runs   map[netip.Addr]*deliveryRun
	// changed wakes the heartbeat to publish the proofs at once.
	changed chan struct{}
}

func newDeliveries() *deliveries {
	return &deliveries{proven: contract.Delivered{}, runs: map[netip.Addr]*deliveryRun{}, changed: make(chan struct{}, 1)}
}

// snapshot returns a copy of the proofs, for Inputs.Delivered and the Lease.
func (d *deliveries) snapshot() contract.Delivered {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.proven)
}

func (d *deliveries) kick() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// seed takes the proofs a previous agent process published: a restart does not change what the
// fabric delivers, and the first update prunes those of addresses no longer held here.
func (d *deliveries) seed(p contract.Delivered) {
	d.mu.Lock()
	defer d.mu.Unlock()
	maps.Copy(d.proven, p)
}

// heldGenerations maps each egress IP the cloud gave this node to its EgressIP's generation.
func heldGenerations(node string, eips []egressv1.EgressIP) map[netip.Addr]int64 {
	held := map[netip.Addr]int64{}
	for i := range eips {
		e := &eips[i]
		if e.Status.Node != node {
			continue
		}
		if ip, err := netip.ParseAddr(e.Spec.IP); err == nil {
			held[ip.Unmap()] = e.Generation
		}
	}
	return held
}

// update forgets the proofs of addresses this node no longer holds (or holds at a newer
// generation: moved away and back), stops probes no longer needed and starts those of checks,
// after the state that mounts their addresses was applied. signal is called when a proof is
// made or a socket must be retried.
func (d *deliveries) update(ctx context.Context, logger logr.Logger, held map[netip.Addr]int64, checks []DeliveryCheck,
	listen func(network, address string) (net.PacketConn, error), signal func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	pruned := false
	for ip, gen := range d.proven {
		if g, ok := held[ip]; !ok || g != gen {
			delete(d.proven, ip)
			pruned = true
		}
	}
	if pruned {
		d.kick()
	}
	want := map[netip.Addr]DeliveryCheck{}
	for _, c := range checks {
		want[c.IP] = c
	}
	for ip, r := range d.runs {
		if c, ok := want[ip]; !ok || c.Generation != r.gen || len(c.Peers) == 0 {
			r.cancel()
			delete(d.runs, ip)
		}
	}
	for _, c := range checks {
		if len(c.Peers) == 0 {
			if g, ok := d.proven[c.IP]; !ok || g != c.Generation {
				d.proven[c.IP] = c.Generation
				why := "no other gateway to prove an egress IP's delivery with"
				if c.IP.Is6() {
					why = "delivery probes are IPv4 only"
				}
				logger.Info(why+": serving it on the cloud's word", "egressIP", c.IP, "generation", c.Generation)
				d.kick()
			}
			continue
		}
		targets := make([]probe.Target, len(c.Peers))
		for i, p := range c.Peers {
			targets[i] = probe.Target{Addr: p, Interval: deliveryProbeInterval, FailureThreshold: 1}
		}
		if r, ok := d.runs[c.IP]; ok {
			r.prober.SetTargets(targets)
			continue
		}
		conn, err := listen("udp4", netip.AddrPortFrom(c.IP, 0).String())
		if err != nil {
			logger.Error(err, "opening a delivery probe socket; retrying", "egressIP", c.IP, "retryIn", deliveryRetry)
			time.AfterFunc(deliveryRetry, signal)
			continue
		}
		rctx, cancel := context.WithCancel(ctx)
		r := &deliveryRun{gen: c.Generation, cancel: cancel, started: time.Now()}
		ip, gen := c.IP, c.Generation
		r.prober = probe.NewProber(conn, probe.Options{StartDown: true, OnChange: func(s probe.Status) {
			if !s.Up {
				return
			}
			d.mu.Lock()
			cur, ok := d.runs[ip]
			if !ok || cur != r {
				d.mu.Unlock()
				return
			}
			d.proven[ip] = gen
			delete(d.runs, ip)
			d.mu.Unlock()
			cancel()
			logger.Info("egress IP delivered to this node", "egressIP", ip, "generation", gen, "peer", s.Addr,
				"took", time.Since(r.started).Round(time.Millisecond))
			// Published once the Apply that serves the address is done (Agent.published),
			// which kicks the heartbeat: publishing now could list this node Active, and
			// send it new flows, before its datapath SNATs to the address.
			signal()
		}})
		r.prober.SetTargets(targets)
		d.runs[c.IP] = r
		logger.Info("proving an egress IP's delivery before serving it", "egressIP", c.IP, "generation", c.Generation,
			"peers", c.Peers)
		go func() { _ = r.prober.Run(rctx) }()
	}
}

// stop ends every probe in progress.
func (d *deliveries) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for ip, r := range d.runs {
		r.cancel()
		delete(d.runs, ip)
	}
}

// published returns the proofs the Lease carries: those of addresses the last applied state
// serves. A proof is made before the state that serves its address is applied, and the
// coordinator lists this node Active for the address as soon as the Lease carries it; so it is
// published only after that Apply (sync kicks the heartbeat then). A restarted agent's seeded
// proofs are published with its first state, which serves their addresses.
func (a *Agent) published() contract.Delivered {
	a.mu.Lock()
	served := servedIPs(a.applied)
	a.mu.Unlock()
	p := a.delivery.snapshot()
	maps.DeleteFunc(p, func(ip netip.Addr, _ int64) bool { return !served[ip] })
	return p
}

// servedIPs are the egress IPs a state's gateway role SNATs to.
func servedIPs(s *dataplane.State) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	if s == nil || s.Gateway == nil {
		return out
	}
	for _, g := range s.Gateway.Groups {
		for _, ip := range slices.Concat(g.EgressIPv4s, g.EgressIPv6s) {
			out[ip] = true
		}
	}
	return out
}

// pending lists the addresses whose proof is in progress (metrics, tests).
func (d *deliveries) pending() []netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.SortedFunc(maps.Keys(d.runs), netip.Addr.Compare)
}

// seedDeliveries reads the proofs this node's previous agent published in its Lease.
func (a *Agent) seedDeliveries(ctx context.Context, logger logr.Logger) {
	lease := &coordinationv1.Lease{}
	key := types.NamespacedName{Namespace: a.cfg.Namespace, Name: contract.AgentLeaseName(a.cfg.NodeName)}
	if err := a.reader.Get(ctx, key, lease); err != nil {
		return // none yet, or unreadable: proofs are made again
	}
	p, err := contract.ParseDelivered(lease.Annotations[contract.DeliveredAnnotation])
	if err != nil {
		logger.Error(err, "ignoring the delivery proofs of the previous agent")
		return
	}
	a.delivery.seed(p)
}
