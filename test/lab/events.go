package lab

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	"github.com/egressd/egressd/test/envtest"
)

// Kinds of event the lab plays (Event.Kind, Incident.Kind).
const (
	// KindReboot: a warm reboot (Crash, Restore): the node's state survives in its namespace.
	KindReboot = "reboot"
	// KindColdReboot: ColdCrash, Restore: every node state is lost, as a VM reboot loses it.
	KindColdReboot = "cold-reboot"
	// KindAgentCrash: only the agent dies (SIGKILL); the node and its datapath stay up.
	KindAgentCrash = "agent-crash"
	// KindPartition: the node is cut from the fabric and from the API server, alive.
	KindPartition = "partition"
	// KindZoneLoss: every node of one or more zones cold-crashes at once.
	KindZoneLoss = "zone-loss"
	// KindDrain: the gateway label is removed (planned maintenance, DESIGN.md §5).
	KindDrain = "drain"
	// KindControllerCrash: egressd-controller is SIGKILLed in the middle of a cloud move.
	KindControllerCrash = "controller-crash"
	// KindAPIServerRestart: kube-apiserver stops and starts again on the same etcd.
	KindAPIServerRestart = "apiserver-restart"
)

// Incident is one event as played: the instant of its first destructive action (At: the
// first SIGKILL, unplugged port or removed label, the moment the measurement anchors on), the
// nodes and zones it hit, and when it was undone (zero while it lasts).
type Incident struct {
	Kind       string
	Nodes      []string
	Zones      []string
	At         time.Time
	RestoredAt time.Time
}

// Event returns the incident as the report's Event, named name.
func (i Incident) Event(name string) Event {
	return Event{Name: name, Kind: i.Kind, Nodes: slices.Clone(i.Nodes), At: i.At, RestoredAt: i.RestoredAt}
}

// extraMargin is what the long variants add to the timer they must outlast.
const extraMargin = 5 * time.Second

// ShortDown is the short variant's down time: under NotReadyAfter and under the agent Lease's
// validity, so neither the node lifecycle nor the coordinator's Lease check fires; only the
// coordinator's probes see the event.
func (l *Lab) ShortDown() time.Duration {
	return min(l.Config.NotReadyAfter, contract.AgentLeaseDuration) / 2
}

// LongDown is the long variant's down time: past NotReadyAfter (the Node turns NotReady) and
// past the agent Lease's validity (contract.AgentLeaseDuration, 10 s: the coordinator marks
// the agent dead), plus extraMargin for the coordinator to act on both.
func (l *Lab) LongDown() time.Duration {
	return max(l.Config.NotReadyAfter, contract.AgentLeaseDuration) + extraMargin
}

func (l *Lab) nodes(names []string) ([]*Node, error) {
	if len(names) == 0 {
		return nil, errors.New("no node named")
	}
	nodes := make([]*Node, 0, len(names))
	for _, name := range names {
		n := l.Node(name)
		if n == nil {
			return nil, fmt.Errorf("no node %q", name)
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

func zonesOf(nodes []*Node) []string {
	var zs []string
	for _, n := range nodes {
		if !slices.Contains(zs, n.Zone.Name) {
			zs = append(zs, n.Zone.Name)
		}
	}
	slices.Sort(zs)
	return zs
}

func namesOf(nodes []*Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Name
	}
	return out
}

// Crash takes nodes down at once as a warm reboot or a power loss with a persistent
// namespace does: the node's fabric port is unplugged and its agent killed, so neither its
// datapath nor its probe responder answers, but its pinned BPF maps, nftables tables,
// addresses, routes and conntrack stay for the agent to find when Restore starts it. After
// Config.NotReadyAfter, unless Restore came first, the Nodes turn NotReady as the node
// lifecycle controller would mark them. ColdCrash is the reboot that loses all of it.
func (l *Lab) Crash(ctx context.Context, names ...string) error {
	_, err := l.crash(names, KindReboot, false)
	return err
}

// ColdCrash takes nodes down as a VM reboot does: at one instant every agent gets SIGKILL and
// every fabric port is unplugged; once the agents are gone each node's state is wiped (its
// bpffs pins and the tcx links they held, every nftables table, conntrack, and every link,
// address, route, rule and permanent neighbour its boot state does not hold). The Nodes turn
// NotReady after Config.NotReadyAfter. Restore boots them.
func (l *Lab) ColdCrash(ctx context.Context, names ...string) (Incident, error) {
	return l.crash(names, KindColdReboot, true)
}

func (l *Lab) crash(names []string, kind string, cold bool) (Incident, error) {
	nodes, err := l.nodes(names)
	if err != nil {
		return Incident{}, err
	}
	var errs []error
	// Signal every agent and cut every port first, then wait for the agents: waiting node by
	// node staggered "three at once" by the reaping.
	at := time.Now()
	l.mu.Lock()
	agents := make([]*process, len(nodes))
	for i, n := range nodes {
		agents[i] = n.agent
		if cold {
			n.agent.kill()
		}
	}
	l.mu.Unlock()
	for _, n := range nodes {
		if err := l.setFabricPort(n, false); err != nil {
			errs = append(errs, err)
		}
		n.downSince(at)
	}
	for _, a := range agents {
		a.stop(syscall.SIGKILL, 5*time.Second)
	}
	if cold {
		for _, n := range nodes {
			errs = append(errs, l.wipe(n))
		}
	}
	l.notReadyAfter(nodes, at)
	return Incident{Kind: kind, Nodes: namesOf(nodes), Zones: zonesOf(nodes), At: at}, errors.Join(errs...)
}

// wipe clears a cold-crashed node's state and marks it for booting on Restore.
func (l *Lab) wipe(n *Node) error {
	n.down.mu.Lock()
	boot := n.down.boot
	if boot == nil {
		// A lab without control plane: nothing ran on the node before, so now is its boot.
		b, err := snapshotBoot(n)
		if err != nil {
			n.down.mu.Unlock()
			return fmt.Errorf("recording %s's boot state: %w", n.Name, err)
		}
		n.down.boot, boot = b, b
	}
	n.down.wiped = true
	n.down.mu.Unlock()
	if err := l.wipeNode(n, boot); err != nil {
		return fmt.Errorf("wiping %s: %w", n.Name, err)
	}
	return nil
}

// notReadyAfter turns the nodes NotReady after Config.NotReadyAfter unless they came back.
func (l *Lab) notReadyAfter(nodes []*Node, at time.Time) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(l.Config.NotReadyAfter):
		}
		// Only nodes still down from this event: one restored and crashed again since has
		// its own grace period.
		for _, n := range nodes {
			if n.downFrom(at) {
				_ = l.SetNodeReady(l.ctx, n.Name, false)
			}
		}
	}()
}

// Restore brings crashed or partitioned nodes back: a cold-crashed node boots first (its
// boot state back: links up, addresses, routes, the CNI's and kube-proxy's nftables rules),
// then its port is plugged, its API access healed, its Node Ready (the kubelet is back) and
// its agent started (fresh after a cold crash, on its old state after a warm one, unless it
// still runs after a partition).
func (l *Lab) Restore(ctx context.Context, names ...string) error {
	nodes, err := l.nodes(names)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range nodes {
		n.down.mu.Lock()
		boot, wiped := n.down.boot, n.down.wiped
		n.down.wiped = false
		n.down.mu.Unlock()
		if wiped {
			if err := l.bootNode(n, boot); err != nil {
				errs = append(errs, fmt.Errorf("booting %s: %w", n.Name, err))
			}
		}
		n.downSince(time.Time{})
		if err := l.setFabricPort(n, true); err != nil {
			errs = append(errs, err)
		}
		n.down.gate.heal()
		if err := l.SetNodeReady(ctx, n.Name, true); err != nil {
			errs = append(errs, err)
		}
		if !l.Config.NoControlPlane {
			if err := l.StartAgent(n.Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Reboot crashes nodes warm (Crash), keeps them down for downFor and restores them.
func (l *Lab) Reboot(ctx context.Context, downFor time.Duration, names ...string) error {
	if err := l.Crash(ctx, names...); err != nil {
		return err
	}
	_ = sleep(ctx, downFor)
	return l.Restore(context.WithoutCancel(ctx), names...)
}

// ColdReboot cold-crashes nodes (ColdCrash), keeps them down for downFor (ShortDown or
// LongDown) and boots them (Restore).
func (l *Lab) ColdReboot(ctx context.Context, downFor time.Duration, names ...string) (Incident, error) {
	inc, err := l.ColdCrash(ctx, names...)
	if err != nil {
		return inc, err
	}
	return l.restoreAfter(ctx, inc, downFor)
}

func (l *Lab) restoreAfter(ctx context.Context, inc Incident, downFor time.Duration) (Incident, error) {
	_ = sleep(ctx, downFor)
	err := l.Restore(context.WithoutCancel(ctx), inc.Nodes...)
	inc.RestoredAt = time.Now()
	return inc, err
}

// CrashAgent kills a node's agent (SIGKILL) and starts it again after downFor. The node stays
// up: its port, its Node Ready and its datapath (pinned programs and maps) keep working, but
// nothing answers the probes' control side and the agent's Lease is not renewed; a downFor
// past contract.AgentLeaseDuration (LongDown) lets it expire.
func (l *Lab) CrashAgent(ctx context.Context, downFor time.Duration, name string) (Incident, error) {
	n := l.Node(name)
	if n == nil {
		return Incident{}, fmt.Errorf("no node %q", name)
	}
	if l.Config.NoControlPlane {
		return Incident{}, errors.New("the lab runs without agents (NoControlPlane)")
	}
	inc := Incident{Kind: KindAgentCrash, Nodes: []string{name}, Zones: []string{n.Zone.Name}, At: time.Now()}
	if err := l.StopAgent(name, syscall.SIGKILL); err != nil {
		return inc, err
	}
	_ = sleep(ctx, downFor)
	err := l.StartAgent(name)
	inc.RestoredAt = time.Now()
	return inc, err
}

// Partition cuts nodes off while they stay alive: their fabric ports are unplugged, so their
// datapath and probe responder run but reach nobody, and their proxies to the API server and
// the EC2 endpoint black-hole (on a real node both paths cross the fabric: the kubelet stops
// posting status and the agent can neither renew its Lease nor see the coordinator's
// decisions, and keeps its last state). The Nodes turn NotReady after Config.NotReadyAfter.
// The instance metadata (served on the node's own lo, as the hypervisor does) still answers.
// Heal (or Restore) reverses it.
func (l *Lab) Partition(ctx context.Context, names ...string) (Incident, error) {
	nodes, err := l.nodes(names)
	if err != nil {
		return Incident{}, err
	}
	var errs []error
	at := time.Now()
	for _, n := range nodes {
		if err := l.setFabricPort(n, false); err != nil {
			errs = append(errs, err)
		}
		n.down.gate.cut()
		n.downSince(at)
	}
	l.notReadyAfter(nodes, at)
	return Incident{Kind: KindPartition, Nodes: namesOf(nodes), Zones: zonesOf(nodes), At: at}, errors.Join(errs...)
}

// Heal ends a partition: ports plugged, API access back, Node Ready. The agents ran through
// it and carry on (Restore starts any that died).
func (l *Lab) Heal(ctx context.Context, names ...string) error { return l.Restore(ctx, names...) }

// PartitionFor partitions nodes for d and heals them.
func (l *Lab) PartitionFor(ctx context.Context, d time.Duration, names ...string) (Incident, error) {
	inc, err := l.Partition(ctx, names...)
	if err != nil {
		return inc, err
	}
	return l.restoreAfter(ctx, inc, d)
}

// ZoneNodes returns the Kubernetes nodes (gateways and workers) of the named zones, in lab
// order; an unknown zone is an error.
func (l *Lab) ZoneNodes(zones ...string) ([]string, error) {
	var out []string
	for _, z := range zones {
		found := false
		for _, zz := range l.Topo.Zones {
			found = found || zz.Name == z
		}
		if !found {
			return nil, fmt.Errorf("no zone %q", z)
		}
	}
	for _, n := range l.Nodes {
		if slices.Contains(zones, n.Zone.Name) {
			out = append(out, n.Name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no node in zones %v", zones)
	}
	return out, nil
}

// ZoneNames returns the lab's zones in order.
func (l *Lab) ZoneNames() []string {
	out := make([]string, len(l.Topo.Zones))
	for i, z := range l.Topo.Zones {
		out[i] = z.Name
	}
	return out
}

// LoseZones cold-crashes every node of the named zones at one instant (ColdCrash), keeps
// them down for downFor and boots them. The caller picks the zones: leave the monitor's zone
// out to keep the measurement running, or name three of four for the worst case.
func (l *Lab) LoseZones(ctx context.Context, downFor time.Duration, zones ...string) (Incident, error) {
	names, err := l.ZoneNodes(zones...)
	if err != nil {
		return Incident{}, err
	}
	inc, err := l.crash(names, KindZoneLoss, true)
	if err != nil {
		return inc, err
	}
	inc.Zones = slices.Sorted(slices.Values(zones))
	return l.restoreAfter(ctx, inc, downFor)
}

// Drain removes the gateway label from a node: the planned maintenance of DESIGN.md §5.
func (l *Lab) Drain(ctx context.Context, name string) error {
	return l.SetGatewayLabel(ctx, name, false)
}

// Undrain puts the gateway label back.
func (l *Lab) Undrain(ctx context.Context, name string) error {
	return l.SetGatewayLabel(ctx, name, true)
}

// DrainGrace is the demo gateway's drain grace period (spec.drainGracePeriod, 30 s when
// unset, as in the lab's demo policy): how long a draining gateway keeps its addresses before
// the coordinator moves them.
func (l *Lab) DrainGrace(ctx context.Context) (time.Duration, error) {
	gw, err := l.GatewayStatus(ctx)
	if err != nil {
		return 0, err
	}
	return contract.DrainGracePeriod(&gw.Spec), nil
}

// LongDrain is a drain that outlasts the grace period (DrainGrace plus extraMargin): the
// drained gateway's addresses really move.
func (l *Lab) LongDrain(ctx context.Context) (time.Duration, error) {
	g, err := l.DrainGrace(ctx)
	return g + extraMargin, err
}

// DrainFor drains a gateway, keeps it drained for d (under DrainGrace: its addresses stay;
// LongDrain: they move) and puts the label back.
func (l *Lab) DrainFor(ctx context.Context, d time.Duration, name string) (Incident, error) {
	n := l.Node(name)
	if n == nil {
		return Incident{}, fmt.Errorf("no node %q", name)
	}
	inc := Incident{Kind: KindDrain, Nodes: []string{name}, Zones: []string{n.Zone.Name}, At: time.Now()}
	if err := l.Drain(ctx, name); err != nil {
		return inc, err
	}
	_ = sleep(ctx, d)
	err := l.Undrain(context.WithoutCancel(ctx), name)
	inc.RestoredAt = time.Now()
	return inc, err
}

// CrashControllerInMove SIGKILLs egressd-controller in the middle of a cloud move: it calls
// trigger (which starts a move, e.g. ColdCrash of a gateway holding an IP in a zone with a
// second gateway, or a drain past the grace), waits up to timeout for the simulator to see a
// mutating call (awssim.MutatingCalls), kills the controller as soon as it does, and starts it
// again after downFor. With a call latency on the simulator (SetLatency) the kill lands
// inside the call, which the simulator then drops with its client; without, right after it
// was applied and before the controller recorded it. At is the kill.
func (l *Lab) CrashControllerInMove(ctx context.Context, timeout, downFor time.Duration, trigger func() error) (Incident, error) {
	if l.Config.NoControlPlane {
		return Incident{}, errors.New("the lab runs without controller (NoControlPlane)")
	}
	if l.Sim == nil {
		return Incident{}, errors.New("CrashControllerInMove watches the EC2 simulator's calls: the EC2 lab only")
	}
	base := awssim.MutatingCalls(l.Sim.Calls())
	if err := trigger(); err != nil {
		return Incident{}, fmt.Errorf("triggering the move: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for awssim.MutatingCalls(l.Sim.Calls()) == base {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return Incident{}, fmt.Errorf("no mutating cloud call within %s of the trigger (calls: %v)", timeout, l.Sim.Calls())
		}
		time.Sleep(time.Millisecond)
	}
	inc := Incident{Kind: KindControllerCrash, At: time.Now()}
	if err := l.StopController(syscall.SIGKILL); err != nil {
		return inc, err
	}
	_ = sleep(ctx, downFor)
	err := l.StartController()
	inc.RestoredAt = time.Now()
	return inc, err
}

// RestartAPIServer stops kube-apiserver, keeps it down for downFor and starts it again on the
// same etcd, address and certificates, so the agents and the controller reconnect with their
// kubeconfig. The stop is a SIGTERM, then a SIGKILL after envtest.APIServerStopGrace. A
// binary that exited during the outage is started again (restartExited). A downFor past contract.AgentLeaseDuration (LongDown) lets every agent Lease
// lapse on the clock while nobody can renew it. At is the stop.
func (l *Lab) RestartAPIServer(ctx context.Context, downFor time.Duration) (Incident, error) {
	inc := Incident{Kind: KindAPIServerRestart, At: time.Now()}
	killed, err := l.API.StopAPIServer()
	if err != nil {
		return inc, err
	}
	fmt.Fprintf(l.Config.Log, "lab: kube-apiserver stopped after %s (killed after the %s grace: %v)\n",
		time.Since(inc.At).Round(time.Millisecond), envtest.APIServerStopGrace, killed)
	_ = sleep(ctx, downFor)
	err = l.API.StartAPIServer()
	inc.RestoredAt = time.Now()
	if err != nil {
		return inc, err
	}
	return inc, l.restartExited("the API server outage")
}

// restartExited starts again, as the kubelet restarts a pod's container, the controller and
// the agents that exited by themselves during an event (egressd-controller exits when it
// loses its leader Lease, after its 10 s renew deadline without the API server).
func (l *Lab) restartExited(during string) error {
	if l.Config.NoControlPlane {
		return nil
	}
	var errs []error
	if !l.ControllerRunning() {
		fmt.Fprintf(l.Config.Log, "lab: %s exited during %s; restarting it\n", ControllerBinary, during)
		errs = append(errs, l.StartController())
	}
	for _, n := range l.Nodes {
		if !n.isDown() && !l.AgentRunning(n.Name) {
			fmt.Fprintf(l.Config.Log, "lab: %s on %s exited during %s; restarting it\n", AgentBinary, n.Name, during)
			errs = append(errs, l.StartAgent(n.Name))
		}
	}
	return errors.Join(errs...)
}

func (l *Lab) setFabricPort(n *Node, up bool) error {
	nl := l.Topo.Fabric.Netlink()
	l.fabricMu.Lock()
	defer l.fabricMu.Unlock()
	link, err := nl.LinkByName(n.FabricPort)
	if err != nil {
		return fmt.Errorf("finding %s's fabric port %s: %w", n.Name, n.FabricPort, err)
	}
	if up {
		err = nl.LinkSetUp(link)
	} else {
		err = nl.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("setting %s's fabric port up=%v: %w", n.Name, up, err)
	}
	return nil
}

// downState is the lab's per-node event state.
type downState struct {
	mu    sync.Mutex
	since time.Time  // down (crashed or partitioned) since, zero when up
	boot  *bootState // the node's boot state, recorded before its agent first ran
	wiped bool       // cold-crashed: Restore boots it
	gate  apiGate    // the node's path to the API server and the EC2 endpoint
}

func (n *Node) downSince(t time.Time) {
	n.down.mu.Lock()
	n.down.since = t
	n.down.mu.Unlock()
}

func (n *Node) isDown() bool {
	n.down.mu.Lock()
	defer n.down.mu.Unlock()
	return !n.down.since.IsZero()
}

// downFrom reports whether the node is down since t (and was not restored in between).
func (n *Node) downFrom(t time.Time) bool {
	n.down.mu.Lock()
	defer n.down.mu.Unlock()
	return n.down.since.Equal(t)
}

// GatewayView is what the lab reads of the demo gateway's status.
type GatewayView struct {
	Ready     bool
	Reason    string
	EgressIPs []string          // status.egressIPs, sorted
	Holders   map[string]string // egress IP → node holding it (status.zones[].egressIPs)
	States    map[string]string // node → gateway state
	Public    map[string]string // egress IP → public IP
}

// HeldBy returns, sorted, the egress IPs the status shows on node: an event's AffectedIPs.
func (v GatewayView) HeldBy(node string) []string {
	var out []string
	for ip, n := range v.Holders {
		if n == node {
			out = append(out, ip)
		}
	}
	slices.Sort(out)
	return out
}

// Active returns the nodes in state Active.
func (v GatewayView) Active() []string {
	var out []string
	for n, s := range v.States {
		if s == string(egressv1.GatewayActive) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func (v GatewayView) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ready=%v", v.Ready)
	if v.Reason != "" {
		fmt.Fprintf(&b, " (%s)", v.Reason)
	}
	fmt.Fprintf(&b, " egressIPs=%v gateways=", v.EgressIPs)
	names := make([]string, 0, len(v.States))
	for n := range v.States {
		names = append(names, n)
	}
	slices.Sort(names)
	for i, n := range names {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s:%s", n, v.States[n])
	}
	return b.String()
}

// View reads the demo gateway's status.
func (l *Lab) View(ctx context.Context) (GatewayView, error) {
	gw, err := l.GatewayStatus(ctx)
	if err != nil {
		return GatewayView{}, err
	}
	v := GatewayView{Holders: map[string]string{}, States: map[string]string{}, Public: map[string]string{}}
	if c := meta.FindStatusCondition(gw.Status.Conditions, egressv1.ConditionReady); c != nil {
		v.Ready = c.Status == "True"
		v.Reason = c.Reason
	}
	v.EgressIPs = slices.Sorted(slices.Values(gw.Status.EgressIPs))
	for _, z := range gw.Status.Zones {
		for _, g := range z.Gateways {
			v.States[g.Node] = string(g.State)
		}
		for _, e := range z.EgressIPs {
			v.Holders[e.IP] = e.Node
			if e.PublicIP != "" {
				v.Public[e.IP] = e.PublicIP
			}
		}
	}
	return v, nil
}

// WaitFor polls the gateway's view until cond holds, ctx ends or timeout passes; the error
// then says what the status last showed.
func (l *Lab) WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(GatewayView) bool) (GatewayView, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last GatewayView
	var lastErr error
	for {
		v, err := l.View(ctx)
		if err == nil && cond(v) {
			return v, nil
		}
		last, lastErr = v, err
		if l.controller != nil && !l.ControllerRunning() {
			return last, fmt.Errorf("waiting for %s: egressd-controller exited; last lines of %s:\n%s", what, l.LogPath(""), Tail(l.LogPath(""), 15))
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return last, fmt.Errorf("waiting for %s: %w (last error: %w)", what, ctx.Err(), lastErr)
			}
			return last, fmt.Errorf("waiting for %s: %w; the gateway's status last showed %s", what, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// AllActive is the condition of a gateway fully up: Ready, every zone's egress IP held by a
// node of that zone (with one IP per zone and two gateways per zone, one Active holder and one
// Standby), every holder Active (it proved delivery), and every gateway node of the lab Active
// or Standby.
func (l *Lab) AllActive(v GatewayView) bool {
	if !v.Ready || !l.ZonesHeld(v) {
		return false
	}
	// A holder serves its address only once it proved delivery: until then it is Standby
	// (AwaitingDelivery) and takes no flows.
	for _, node := range v.Holders {
		if v.States[node] != string(egressv1.GatewayActive) {
			return false
		}
	}
	for _, n := range l.Gateways() {
		if s := v.States[n.Name]; s != string(egressv1.GatewayActive) && s != string(egressv1.GatewayStandby) {
			return false
		}
	}
	return true
}

// egressSources are the addresses the echo server should see: each egress IP's public IP when it
// has one, else the private one.
func egressSources(v GatewayView) []string {
	var out []string
	for ip := range v.Holders {
		if p := v.Public[ip]; p != "" {
			out = append(out, p)
		} else {
			out = append(out, ip)
		}
	}
	slices.Sort(out)
	return out
}

// HolderIn returns the node holding an egress IP of the zone (its Active gateway), "" when none
// does.
func (l *Lab) HolderIn(v GatewayView, zone string) string {
	var out []string
	for _, node := range v.Holders {
		if n := l.Node(node); n != nil && n.Zone.Name == zone {
			out = append(out, node)
		}
	}
	slices.Sort(out)
	if len(out) == 0 {
		return ""
	}
	return out[0]
}
