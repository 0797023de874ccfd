package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/agent"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
	"github.com/egressd/egressd/test/envtest"
)

// recorder is a Dataplane that records every Apply. It stands in for the datapath only where
// the watch → state path is under test.
type recorder struct {
	mu      sync.Mutex
	applies []applied
	changed chan struct{}
}

type applied struct {
	at    time.Time // Apply returned
	took  time.Duration
	state dataplane.State
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) Apply(_ context.Context, s dataplane.State) error {
	r.mu.Lock()
	r.applies = append(r.applies, applied{at: time.Now(), state: s})
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return nil
}

func (r *recorder) Run(ctx context.Context) error { <-ctx.Done(); return nil }

func (r *recorder) Stats() (map[bpf.StatsKey]bpf.Stats, error) {
	return map[bpf.StatsKey]bpf.Stats{{Group: 7, Gateway: agent.GatewayID(gw1IP)}: {Packets: 3, Bytes: 300}}, nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.applies)
}

// wait returns the first Apply from index from on that satisfies ok.
func (r *recorder) wait(t *testing.T, from int, timeout time.Duration, what string, ok func(dataplane.State) bool) (int, applied) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		for i := from; i < len(r.applies); i++ {
			if ok(r.applies[i].state) {
				a := r.applies[i]
				r.mu.Unlock()
				return i, a
			}
		}
		from = len(r.applies)
		r.mu.Unlock()
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("no Apply with %s within %v", what, timeout)
		}
	}
}

// proxy forwards TCP to the API server until cut; cut closes every connection and refuses new
// ones, as an unreachable API server does.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	down   bool
}

func startProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() { l.Close(); p.set(true) })
	return p
}

func (p *proxy) set(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

var (
	myIP  = netip.MustParseAddr("127.0.0.11")
	gw1IP = netip.MustParseAddr("127.0.0.21")
	gw2IP = netip.MustParseAddr("127.0.0.22")
)

func gatewayIn(s dataplane.State, group uint32, ip netip.Addr) (dataplane.GatewayNode, bool) {
	for _, g := range s.Groups {
		if g.ID != group {
			continue
		}
		for _, gw := range g.Gateways {
			if gw.NodeIP == ip {
				return gw, true
			}
		}
	}
	return dataplane.GatewayNode{}, false
}

func podSet(s dataplane.State, ip netip.Addr) uint32 {
	for _, p := range s.Pods {
		if slices.Contains(p.IPs, ip) {
			return p.PolicySet
		}
	}
	return 0
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestAgentEnvtest runs the agent against a real API server (reached through a proxy the test
// can cut) with a recording datapath and real probe responders on loopback "gateways".
func TestAgentEnvtest(t *testing.T) {
	s := envtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := s.Client

	// Gateways: two probe responders on loopback addresses; the agent probes their port.
	var gwStop [2]context.CancelFunc
	var port uint16
	for i, ip := range []netip.Addr{gw1IP, gw2IP} {
		addr := fmt.Sprintf("%s:%d", ip, port)
		conn, err := net.ListenPacket("udp4", addr)
		must(t, err)
		port = uint16(conn.LocalAddr().(*net.UDPAddr).Port)
		rctx, rcancel := context.WithCancel(ctx)
		gwStop[i] = rcancel
		go func() { _ = probe.NewResponder(conn).Run(rctx) }()
	}
	defer gwStop[0]()
	defer gwStop[1]()

	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "egressd-system"}}))
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker1", Labels: map[string]string{corev1.LabelTopologyZone: "a"}}}
	must(t, c.Create(ctx, n))
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: myIP.String()}}
	must(t, c.Status().Update(ctx, n))
	other := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker2"}}
	must(t, c.Create(ctx, other))

	gw := &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "out"},
		Spec: egressv1.EgressGatewaySpec{Addresses: egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: "aws"}},
			Health: &egressv1.HealthSpec{Interval: &metav1.Duration{Duration: 50 * time.Millisecond}, FailureThreshold: 3}}}
	must(t, c.Create(ctx, gw))
	gw.Status = egressv1.EgressGatewayStatus{GroupID: 7, Zones: []egressv1.ZoneStatus{{Name: "a", Gateways: []egressv1.GatewayNodeStatus{
		{Node: "gw1", State: egressv1.GatewayActive, UnderlayIP: gw1IP.String()},
		{Node: "gw2", State: egressv1.GatewayActive, UnderlayIP: gw2IP.String()},
	}}}}
	must(t, c.Status().Update(ctx, gw))
	for i, holder := range []string{"gw1", "gw2"} {
		e := &egressv1.EgressIP{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("10.0.0.%d", 200+i)},
			Spec: egressv1.EgressIPSpec{IP: fmt.Sprintf("10.0.0.%d", 200+i), Gateway: "out", Zone: "a", Provider: "aws", Node: holder}}
		must(t, c.Create(ctx, e))
		e.Status.Node = holder
		must(t, c.Status().Update(ctx, e))
	}
	must(t, c.Create(ctx, &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: egressv1.EgressPolicyRule{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			DestinationCIDRs: []string{"203.0.113.0/24"}, Gateway: "out"}}))

	// The agent, through the proxy.
	u, err := url.Parse(s.Config.Host)
	must(t, err)
	px := startProxy(t, u.Host)
	cfg := rest.CopyConfig(s.Config)
	cfg.Host = "https://" + px.l.Addr().String()
	mgr, err := agent.NewManager(cfg, agent.ManagerOptions{NodeName: "worker1", MetricsBindAddress: "0", HealthProbeBindAddress: "0"})
	must(t, err)
	rec := newRecorder()
	reg := prometheus.NewRegistry()
	a, err := agent.Setup(mgr, agent.Config{NodeName: "worker1", ProbePort: port,
		ProbeAddress: fmt.Sprintf("%s:%d", myIP, port), Dataplane: rec, Registerer: reg, LeaseInterval: 200 * time.Millisecond})
	must(t, err)
	defer runManager(log.IntoContext(ctx, zap.New(zap.UseDevMode(true))), t, mgr, "manager")()

	t.Run("initial state: the node, no pods, no groups", func(t *testing.T) {
		_, ap := rec.wait(t, 0, 30*time.Second, "the node IP", func(s dataplane.State) bool { return s.NodeIP == myIP })
		if len(ap.state.Pods)+len(ap.state.Groups) != 0 {
			t.Errorf("initial state %+v", ap.state)
		}
		// Readiness is recorded just after Apply returns, so it may trail the recorder a little.
		deadline := time.Now().Add(5 * time.Second)
		for a.Ready() != nil && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if err := a.Ready(); err != nil {
			t.Errorf("not ready after an Apply: %v", err)
		}
	})

	t.Run("heartbeat lease", func(t *testing.T) {
		var first time.Time
		deadline := time.Now().Add(10 * time.Second)
		for {
			l := &coordinationv1.Lease{}
			err := c.Get(ctx, types.NamespacedName{Namespace: "egressd-system", Name: "egressd-agent-worker1"}, l)
			if err == nil && l.Spec.RenewTime != nil {
				if *l.Spec.HolderIdentity != "worker1" {
					t.Fatalf("holder %q", *l.Spec.HolderIdentity)
				}
				if first.IsZero() {
					first = l.Spec.RenewTime.Time
				} else if l.Spec.RenewTime.After(first) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("lease not renewed: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("new pods are steered within milliseconds of their IP", func(t *testing.T) {
		const pods = 40
		var lat []time.Duration
		for i := range pods {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("web-%d", i), Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{NodeName: "worker1", Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
			must(t, c.Create(ctx, p))
			ip := netip.AddrFrom4([4]byte{10, 244, 0, byte(10 + i)})
			p.Status.PodIP = ip.String()
			p.Status.PodIPs = []corev1.PodIP{{IP: ip.String()}}
			p.Status.Phase = corev1.PodRunning
			from := rec.count()
			t0 := time.Now()
			must(t, c.Status().Update(ctx, p))
			_, ap := rec.wait(t, from, 10*time.Second, "pod "+ip.String()+" in a policy set", func(s dataplane.State) bool { return podSet(s, ip) != 0 })
			lat = append(lat, ap.at.Sub(t0))
			g1, ok1 := gatewayIn(ap.state, 7, gw1IP)
			g2, ok2 := gatewayIn(ap.state, 7, gw2IP)
			if !ok1 || !ok2 || !g1.Healthy || !g2.Healthy || g1.EgressIPv4 != netip.MustParseAddr("10.0.0.200") {
				t.Fatalf("group 7 with the pod: %+v", ap.state.Groups)
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		t.Logf("new-pod steering, pod IP written to the API → Apply done, %d pods: p50 %v, p99 %v, max %v", pods, p50, p99, lat[len(lat)-1])
		if p99 > time.Second {
			t.Errorf("p99 %v", p99)
		}

		// A pod of another node never reaches this agent's cache.
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "elsewhere", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: "worker2", Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
		must(t, c.Create(ctx, p))
		p.Status.PodIP = "10.244.1.5"
		must(t, c.Status().Update(ctx, p))
		time.Sleep(200 * time.Millisecond)
		_, last := a.Applied()
		if podSet(*last, netip.MustParseAddr("10.244.1.5")) != 0 || len(last.Pods) != pods {
			t.Errorf("state has %d pods, want %d (only this node's)", len(last.Pods), pods)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		mfs, err := reg.Gather()
		must(t, err)
		got := map[string]string{}
		for _, mf := range mfs {
			for _, m := range mf.Metric {
				l := ""
				for _, lp := range m.Label {
					l += lp.GetName() + "=" + lp.GetValue() + ","
				}
				v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
				got[mf.GetName()+"{"+l+"}"] = fmt.Sprint(v)
			}
		}
		for k, v := range map[string]string{
			"egressd_datapath_packets_total{gateway=gw1,group=out,}":     "3",
			"egressd_datapath_bytes_total{gateway=gw1,group=out,}":       "300",
			"egressd_datapath_drops_total{group=out,reason=no_gateway,}": "0",
			"egressd_gateway_probe_up{gateway=gw1,group=out,}":           "1",
			"egressd_gateway_probe_up{gateway=gw2,group=out,}":           "1",
		} {
			if got[k] != v {
				t.Errorf("%s = %q, want %s (all: %v)", k, got[k], v, got)
			}
		}
	})

	t.Run("probe failover while the API server is unreachable", func(t *testing.T) {
		px.set(true)
		defer px.set(false)
		time.Sleep(300 * time.Millisecond) // the watches notice
		from := rec.count()
		stopped := time.Now()
		gwStop[0]()
		_, ap := rec.wait(t, from, 5*time.Second, "gw1 unhealthy", func(s dataplane.State) bool {
			g, ok := gatewayIn(s, 7, gw1IP)
			return ok && !g.Healthy
		})
		t.Logf("gateway responder stopped → Apply with it unhealthy: %v (interval 50ms, threshold 3), API server unreachable", ap.at.Sub(stopped))
		if g2, _ := gatewayIn(ap.state, 7, gw2IP); !g2.Healthy || len(ap.state.Pods) != 40 {
			t.Errorf("survivor or pods lost: %+v", ap.state)
		}
		// Nothing tears the state down while the API server is away.
		time.Sleep(time.Second)
		_, last := a.Applied()
		if len(last.Pods) != 40 || len(last.Groups) != 1 {
			t.Errorf("state shrank while the API server was unreachable: %d pods, %d groups", len(last.Pods), len(last.Groups))
		}
	})

	t.Run("API server back: changes flow again", func(t *testing.T) {
		from := rec.count()
		gw.Status.Zones[0].Gateways = gw.Status.Zones[0].Gateways[1:] // the coordinator drops gw1
		must(t, c.Status().Update(ctx, gw))
		rec.wait(t, from, 30*time.Second, "gw1 gone", func(s dataplane.State) bool {
			_, ok := gatewayIn(s, 7, gw1IP)
			_, ok2 := gatewayIn(s, 7, gw2IP)
			return !ok && ok2
		})
	})
}

// TestLeaseRenewedOnReady: an agent renews its heartbeat Lease as soon as its first Apply
// succeeds, not at its first tick. With LeaseInterval an hour, only that renewal can write the
// Lease within the test's deadline.
func TestLeaseRenewedOnReady(t *testing.T) {
	s := envtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := s.Client
	createNode(ctx, t, s, "worker1", "127.0.0.12")

	mgr, err := agent.NewManager(s.Config, agent.ManagerOptions{NodeName: "worker1", MetricsBindAddress: "0", HealthProbeBindAddress: "0"})
	must(t, err)
	a, err := agent.Setup(mgr, agent.Config{NodeName: "worker1", ProbeAddress: "127.0.0.12:0", Dataplane: newRecorder(),
		Registerer: prometheus.NewRegistry(), LeaseInterval: time.Hour})
	must(t, err)
	defer runManager(ctx, t, mgr, "manager")()

	waitReady(t, a, 20*time.Second)
	ready := time.Now()
	for {
		l := &coordinationv1.Lease{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: "egressd-system", Name: contract.AgentLeaseName("worker1")}, l); err == nil {
			t.Logf("Lease written %v after readiness", time.Since(ready).Round(time.Millisecond))
			return
		}
		if time.Since(ready) > 10*time.Second {
			t.Fatal("no Lease 10s after the agent turned ready (LeaseInterval 1h)")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gated is a recorder whose Applies wait until release is closed.
type gated struct {
	*recorder
	entered chan struct{}
	release chan struct{}
}

func (g *gated) Apply(ctx context.Context, s dataplane.State) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.recorder.Apply(ctx, s)
}

// askDraining sends one probe request to addr and returns the reply's draining bit.
func askDraining(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.Dial("udp4", addr)
	must(t, err)
	defer c.Close()
	req := probe.Packet{Seq: 1}.Marshal()
	for range 300 {
		_, _ = c.Write(req[:])
		must(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			continue // not listening yet
		}
		p, err := probe.Parse(buf[:n])
		must(t, err)
		return p.Draining()
	}
	t.Fatalf("no probe reply from %s", addr)
	return false
}

// TestProbesDrainingUntilApplied: an agent answers probes with the draining bit until its
// first Apply has returned, so that a node coming back from a cold boot, still listed as a
// holder by workers whose view the coordinator has not changed, draws no new flows before it
// has a datapath to take them (the lab's controller-crash-in-move trials lost every monitor's
// requests for 0.2-0.5 s when the holder came back). Before the fix the first reply, sent
// while Apply is held, says healthy.
func TestProbesDrainingUntilApplied(t *testing.T) {
	s := envtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	createNode(ctx, t, s, "gw1", "127.0.0.14")

	l, err := net.ListenPacket("udp4", "127.0.0.14:0")
	must(t, err)
	addr := l.LocalAddr().String()
	must(t, l.Close())
	dp := &gated{recorder: newRecorder(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	mgr, err := agent.NewManager(s.Config, agent.ManagerOptions{NodeName: "gw1", MetricsBindAddress: "0", HealthProbeBindAddress: "0"})
	must(t, err)
	a, err := agent.Setup(mgr, agent.Config{NodeName: "gw1", ProbeAddress: addr, Dataplane: dp,
		Registerer: prometheus.NewRegistry(), LeaseInterval: time.Hour})
	must(t, err)
	defer runManager(ctx, t, mgr, "manager")()

	if !askDraining(t, addr) {
		t.Error("before any state is applied the probe reply does not say draining")
	}
	select {
	case <-dp.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("no Apply began")
	}
	if !askDraining(t, addr) {
		t.Error("while the first Apply runs the probe reply does not say draining: workers would send new flows to a node without its datapath")
	}
	close(dp.release)
	waitReady(t, a, 10*time.Second)
	if askDraining(t, addr) {
		t.Error("after the first Apply the probe reply still says draining")
	}
}

// createNode creates the agent's namespace and a Node with an InternalIP, as the kubelet would.
func createNode(ctx context.Context, t *testing.T, s *envtest.Server, name, ip string) {
	t.Helper()
	must(t, s.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "egressd-system"}}))
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	must(t, s.Client.Create(ctx, n))
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	must(t, s.Client.Status().Update(ctx, n))
}

// waitReady waits until the agent's last Apply succeeded.
func waitReady(t *testing.T, a *agent.Agent, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for a.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready: %v", a.Ready())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
