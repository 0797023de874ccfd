package coordinator

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/probe"
	awssim "github.com/egressd/egressd/test/cloudsim/aws"
)

// probePath is the network between the coordinator's probe socket and the gateways' probe
// responders, on loopback. The gateways' underlay addresses come from the EC2 simulator and are
// not routable here, so each is mapped to the loopback address of that gateway's responder.
// Cutting it drops every probe the coordinator sends, as a NetworkPolicy in the controller's
// namespace or a partition of its node would, while the responders keep answering anyone else.
type probePath struct {
	net.PacketConn
	to  map[netip.Addr]netip.AddrPort
	cut atomic.Bool
}

func (p *probePath) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("probe to %v: not a UDP address", addr)
	}
	dst, ok := p.to[ua.AddrPort().Addr().Unmap()]
	if !ok {
		return 0, fmt.Errorf("probe to %v: no gateway there", addr)
	}
	if p.cut.Load() {
		return len(b), nil // dropped on the way, as a firewall does: the sender sees nothing
	}
	return p.PacketConn.WriteTo(b, net.UDPAddrFromAddrPort(dst))
}

// agentView is what an agent's own prober sees of the same responders: the path the workers'
// datapath uses, which the cut does not touch.
type agentView struct {
	mu   sync.Mutex
	down map[netip.AddrPort]bool
}

func (a *agentView) onChange(s probe.Status) {
	a.mu.Lock()
	a.down[s.Addr] = !s.Up
	a.mu.Unlock()
}

func (a *agentView) anyDown() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range a.down {
		if d {
			return true
		}
	}
	return false
}

func listenLoopback(t *testing.T) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// 5. Only the controller's probe path is cut, the agents' Leases stay fresh: no gateway fails,
// no egress IP moves, Degraded says ControllerProbesFailing; the path restored, it clears. A
// gateway that really stops answering while the others answer still fails over.
func TestControllerProbePathCut(t *testing.T) {
	e := newEnv(t, 2, 2, nil)
	ctx, cancel := context.WithCancel(e.ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	path := &probePath{PacketConn: listenLoopback(t), to: map[netip.Addr]netip.AddrPort{}}
	agent := &agentView{down: map[netip.AddrPort]bool{}}
	agentProber := probe.NewProber(listenLoopback(t), probe.Options{OnChange: agent.onChange})
	var agentTargets []probe.Target
	stopResponder := map[string]context.CancelFunc{}
	for name, ip := range e.ips {
		r := probe.NewResponder(listenLoopback(t))
		rctx, stop := context.WithCancel(ctx)
		stopResponder[name] = stop
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(rctx) }()
		addr := r.Addr().(*net.UDPAddr).AddrPort()
		path.to[ip] = addr
		agentTargets = append(agentTargets, probe.Target{Addr: addr, Interval: 20 * time.Millisecond, FailureThreshold: 3})
	}
	agentProber.SetTargets(agentTargets)
	health := NewProbeHealth(path, e.cfg.ProbePort)
	for _, run := range []func(context.Context) error{health.Run, agentProber.Run} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	e.probes = health
	metrics, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e.metrics = metrics
	e.restart()
	failing := func() float64 { return testutil.ToFloat64(metrics.ControllerProbesFailing.WithLabelValues(e.gateway)) }

	threshold := int32(3)
	e.createGateway(func(gw *egressv1.EgressGateway) {
		gw.Spec.Health = &egressv1.HealthSpec{Interval: &metav1.Duration{Duration: 20 * time.Millisecond}, FailureThreshold: threshold}
	})
	e.settle()
	upAll := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := 0
			for _, ip := range e.ips {
				if health.Up(ip) == want {
					n++
				}
			}
			if n == len(e.ips) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("coordinator's probes: %d of %d gateways up=%v after 5s", n, len(e.ips), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond) // ten probe rounds answered
	upAll(true)
	e.settle()
	before := map[string]egressv1.GatewayState{}
	for n := range e.nodes {
		before[n] = e.stateOf(n)
	}
	holders := map[string]string{}
	for _, x := range e.egressIPs() {
		holders[x.Spec.IP] = x.Status.Node
	}
	if d := cond(e.gatewayObj().Status.Conditions, egressv1.ConditionDegraded); d.Status != metav1.ConditionFalse {
		t.Fatalf("Degraded before the cut: %+v", d)
	}
	t.Logf("before the cut: states %v, holders %v", before, holders)

	path.cut.Store(true)
	cutAt := time.Now()
	upAll(false)
	t.Logf("the coordinator saw every gateway down %v after the cut", time.Since(cutAt).Round(time.Millisecond))
	time.Sleep(200 * time.Millisecond)
	if agent.anyDown() {
		t.Fatalf("the agents' prober lost a gateway too: %v (the cut must be the controller's alone)", agent.down)
	}
	// Time passes while the agents keep renewing their Leases.
	e.clock.Step(11 * time.Second)
	e.renewAll()
	e.world.ResetCalls()
	e.settle()
	check := func(phase string) {
		t.Helper()
		for n, s := range before {
			if got := e.stateOf(n); got != s {
				t.Errorf("%s: gateway %s in state %q, was %q", phase, n, got, s)
			}
		}
		for _, x := range e.egressIPs() {
			if x.Spec.Node != holders[x.Spec.IP] || x.Status.Node != holders[x.Spec.IP] {
				t.Errorf("%s: egress IP %s moved: spec %q status %q, was on %q", phase, x.Spec.IP, x.Spec.Node, x.Status.Node, holders[x.Spec.IP])
			}
		}
		if calls := e.world.Calls(); awssim.MutatingCalls(calls) != 0 {
			t.Errorf("%s: mutating cloud calls %v", phase, calls)
		}
	}
	check("path cut")
	d := cond(e.gatewayObj().Status.Conditions, egressv1.ConditionDegraded)
	if d.Status != metav1.ConditionTrue || d.Reason != egressv1.ReasonControllerProbesFailing {
		t.Fatalf("Degraded with the path cut: %+v", d)
	}
	for n := range e.nodes {
		if !strings.Contains(d.Message, n) {
			t.Errorf("Degraded message does not name gateway %s: %s", n, d.Message)
		}
	}
	if v := failing(); v != 1 {
		t.Errorf("egressd_controller_probes_failing with the path cut: %v, want 1", v)
	}
	t.Logf("path cut: Degraded=%s %s: %s", d.Status, d.Reason, d.Message)

	path.cut.Store(false)
	restoredAt := time.Now()
	upAll(true)
	t.Logf("the coordinator saw every gateway up again %v after the restore", time.Since(restoredAt).Round(time.Millisecond))
	e.settle()
	check("path restored")
	if d := cond(e.gatewayObj().Status.Conditions, egressv1.ConditionDegraded); d.Status != metav1.ConditionFalse || d.Reason != egressv1.ReasonAllGatewaysHealthy {
		t.Errorf("Degraded after the restore: %+v", d)
	}
	if v := failing(); v != 0 {
		t.Errorf("egressd_controller_probes_failing after the restore: %v, want 0", v)
	}

	// One gateway really stops answering while the others answer: it fails as before.
	var victim, ip string
	for a, n := range holders {
		victim, ip = n, a
		break
	}
	stopResponder[victim]()
	deadline := time.Now().Add(5 * time.Second)
	for health.Up(e.ips[victim]) {
		if time.Now().After(deadline) {
			t.Fatalf("gateway %s still up for the coordinator 5s after its responder stopped", victim)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.settle()
	if s := e.stateOf(victim); s != egressv1.GatewayUnhealthy {
		t.Errorf("gateway %s that stopped answering is %q, want Unhealthy", victim, s)
	}
	if got := e.egressIP(eipName(e, ip)).Status.Node; got == victim || got == "" {
		t.Errorf("egress IP %s still on %q after its gateway stopped answering", ip, got)
	}
	d = cond(e.gatewayObj().Status.Conditions, egressv1.ConditionDegraded)
	if d.Reason != egressv1.ReasonSomeGatewaysDown {
		t.Errorf("Degraded with one gateway down: %+v", d)
	}
	t.Logf("one responder stopped: %s is %s, Degraded %s", victim, e.stateOf(victim), d.Reason)
}

func eipName(e *env, ip string) string {
	for _, x := range e.egressIPs() {
		if x.Spec.IP == ip {
			return x.Name
		}
	}
	e.t.Fatalf("no EgressIP for %s", ip)
	return ""
}
