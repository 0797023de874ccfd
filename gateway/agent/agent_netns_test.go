package agent_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/agent"
	"github.com/egressd/egressd/gateway/agent/announce"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/test/envtest"
	"github.com/egressd/egressd/test/netns"
)

// applyMu serializes Applies of the in-process nodes: google/nftables v0.3.0 allocates set ids
// from an unsynchronized package global (Conn.AddSet), which only one agent per process (as in
// production) keeps race-free.
var applyMu sync.Mutex

// timedDataplane is the real datapath, noting when each Apply finished and with what.
type timedDataplane struct {
	*dataplane.Dataplane
	mu      sync.Mutex
	applies []applied
}

func (d *timedDataplane) Apply(ctx context.Context, s dataplane.State) error {
	applyMu.Lock()
	defer applyMu.Unlock()
	start := time.Now()
	err := d.Dataplane.Apply(ctx, s)
	if err == nil {
		d.mu.Lock()
		d.applies = append(d.applies, applied{at: time.Now(), took: time.Since(start), state: s})
		d.mu.Unlock()
	}
	return err
}

// last is the most recently applied state.
func (d *timedDataplane) last() dataplane.State {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.applies) == 0 {
		return dataplane.State{}
	}
	return d.applies[len(d.applies)-1].state
}

func (d *timedDataplane) waitFor(t *testing.T, timeout time.Duration, what string, ok func(dataplane.State) bool) applied {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d.mu.Lock()
		for _, a := range d.applies {
			if ok(a.state) {
				d.mu.Unlock()
				return a
			}
		}
		d.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no Apply with %s within %v", what, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// gatedCache is a real cache whose WaitForCacheSync returns only once open is closed: an
// agent's cluster view that has not synced yet, for as long as a test needs.
type gatedCache struct {
	cache.Cache
	open <-chan struct{}
}

func (g gatedCache) WaitForCacheSync(ctx context.Context) bool {
	select {
	case <-g.open:
	case <-ctx.Done():
		return false
	}
	return g.Cache.WaitForCacheSync(ctx)
}

// drops sums a datapath's drops of one reason (bpf.Drop*) over every group and gateway.
func drops(t *testing.T, d *timedDataplane, reason int) uint64 {
	t.Helper()
	stats, err := d.Stats()
	must(t, err)
	var n uint64
	for _, s := range stats {
		n += s.Drops[reason]
	}
	return n
}

// TestMain gives controller-runtime its logger before any manager is built (it otherwise
// complains, with a stack, that none was set).
func TestMain(m *testing.M) {
	log.SetLogger(zap.New(zap.UseDevMode(true)))
	os.Exit(m.Run())
}

// newAgentBed is the namespace bed of the agent tests (worker1 with pod a, gateways gw1 and
// gw2), a real API server, and a bpffs of the test's own.
func newAgentBed(t *testing.T) (*netns.Topology, *envtest.Server, string) {
	t.Helper()
	topo := netns.New(t, netns.Spec{Nodes: []netns.NodeSpec{
		{Name: "worker1", Pods: []netns.PodSpec{{Name: "a"}}},
		{Name: "gw1"},
		{Name: "gw2"},
	}})
	s := envtest.Start(t)
	bpffs := t.TempDir()
	must(t, unix.Mount("bpf", bpffs, "bpf", 0, ""))
	t.Cleanup(func() { _ = unix.Unmount(bpffs, unix.MNT_DETACH) })
	return topo, s, bpffs
}

// startNetnsAgent runs an agent in-process for node n: its API client in the root namespace, its
// datapath, probe sockets, interface list and announcements in the node's namespace. The
// returned stop ends it (idempotent, also run by t.Cleanup); the datapath is removed at cleanup.
// mutate, if given, changes the agent's Config before it is set up.
func startNetnsAgent(ctx context.Context, t *testing.T, cfg *rest.Config, n *netns.Node, bpffs string, mutate ...func(manager.Manager, *agent.Config)) (*timedDataplane, func()) {
	t.Helper()
	dp := &timedDataplane{Dataplane: dataplane.New(dataplane.Config{NetNS: n.Path(), PinRoot: filepath.Join(bpffs, n.Name)})}
	t.Cleanup(func() {
		if err := dp.Remove(context.Background()); err != nil {
			t.Errorf("removing the datapath of %s: %v", n.Name, err)
		}
	})
	mgr, err := agent.NewManager(cfg, agent.ManagerOptions{NodeName: n.Name, MetricsBindAddress: "0", HealthProbeBindAddress: "0"})
	must(t, err)
	acfg := agent.Config{
		NodeName: n.Name, Dataplane: dp, Registerer: prometheus.NewRegistry(),
		ListenPacket: n.ListenPacket,
		Interfaces: func() (ifs []agent.Interface, err error) {
			err = n.Do(func() error { ifs, err = agent.HostInterfaces(); return err })
			return ifs, err
		},
		Announce: func(ifname string, ip netip.Addr) error {
			return n.Do(func() error { return announce.Send(ifname, ip) })
		},
	}
	for _, m := range mutate {
		m(mgr, &acfg)
	}
	_, err = agent.Setup(mgr, acfg)
	must(t, err)
	stop := runManager(log.IntoContext(ctx, zap.New(zap.UseDevMode(true)).WithValues("agent", n.Name)), t, mgr, "agent "+n.Name)
	return dp, stop
}

// runManager runs mgr until the returned stop (idempotent, also run by t.Cleanup), which
// reports the manager's error as what's.
func runManager(ctx context.Context, t *testing.T, mgr manager.Manager, what string) (stop func()) {
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", what, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestAgentNetns runs three agents in-process against a real API server, each driving the real
// datapath of one node namespace: worker1 with pod a, and gateways gw1 and gw2 holding egress
// IPs. The agents' API clients live in the root namespace; their datapath calls, probe sockets
// and interface lists are in their node's namespace.
func TestAgentNetns(t *testing.T) {
	topo, s, bpffs := newAgentBed(t)
	c := s.Client
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	z := topo.Zones[0]
	egress := map[string]netip.Addr{"gw1": z.Addr(200), "gw2": z.Addr(201)}
	dst := netip.MustParseAddr("203.0.113.10")
	pa := topo.Pod("a")

	// Objects, as the coordinator would have written them.
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "egressd-system"}}))
	for _, n := range topo.Nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{corev1.LabelTopologyZone: z.Name}}}
		must(t, c.Create(ctx, node))
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IP.String()}}
		must(t, c.Status().Update(ctx, node))
	}
	gw := &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "out"},
		Spec: egressv1.EgressGatewaySpec{Addresses: egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: "aws"}}}}
	must(t, c.Create(ctx, gw))
	gw.Status = egressv1.EgressGatewayStatus{GroupID: 7, Zones: []egressv1.ZoneStatus{{Name: z.Name}}}
	for _, name := range []string{"gw1", "gw2"} {
		gw.Status.Zones[0].Gateways = append(gw.Status.Zones[0].Gateways,
			egressv1.GatewayNodeStatus{Node: name, State: egressv1.GatewayActive, UnderlayIP: topo.Node(name).IP.String()})
		e := &egressv1.EgressIP{ObjectMeta: metav1.ObjectMeta{Name: egress[name].String()},
			Spec: egressv1.EgressIPSpec{IP: egress[name].String(), Gateway: "out", Zone: z.Name, Provider: "aws", Node: name}}
		must(t, c.Create(ctx, e))
		e.Status.Node = name
		must(t, c.Status().Update(ctx, e))
	}
	must(t, c.Status().Update(ctx, gw))
	must(t, c.Create(ctx, &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: egressv1.EgressPolicyRule{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			DestinationCIDRs: []string{"203.0.113.0/24"}, Gateway: "out"}}))

	// Agents.
	dps := map[string]*timedDataplane{}
	stops := map[string]func(){}
	for _, n := range topo.Nodes {
		dps[n.Name], stops[n.Name] = startNetnsAgent(ctx, t, s.Config, n, bpffs)
	}

	// The pod gets its IP once the worker's datapath is up (the first Apply loads it).
	w := dps["worker1"]
	w.waitFor(t, 30*time.Second, "the worker's first state", func(s dataplane.State) bool { return s.NodeIP == topo.Node("worker1").IP })
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "worker1", Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	must(t, c.Create(ctx, p))
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = pa.IP.String()
	p.Status.PodIPs = []corev1.PodIP{{IP: pa.IP.String()}, {IP: pa.IP6.String()}}
	t0 := time.Now()
	must(t, c.Status().Update(ctx, p))
	ap := w.waitFor(t, 30*time.Second, "pod a steered", func(s dataplane.State) bool { return podSet(s, pa.IP) != 0 && len(s.Groups) == 1 })
	t.Logf("pod IP in the API → steering applied by the real datapath: %v (the Apply itself %v)", ap.at.Sub(t0), ap.took)
	for _, g := range []string{"gw1", "gw2"} {
		dps[g].waitFor(t, 30*time.Second, g+" serving group 7", func(s dataplane.State) bool {
			return s.Gateway != nil && len(s.Gateway.Groups) == 1 && s.Gateway.Groups[0].EgressIPv4() == egress[g]
		})
	}

	seen := func(t *testing.T, tries int) map[netip.Addr]int {
		t.Helper()
		out := map[netip.Addr]int{}
		for range tries {
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			src, err := pa.HTTPGet(rctx, dst)
			rcancel()
			if err != nil {
				t.Fatalf("pod a → %s: %v", dst, err)
			}
			out[src]++
		}
		return out
	}

	t.Run("the pod leaves with an egress IP", func(t *testing.T) {
		got := seen(t, 10)
		for src := range got {
			if src != egress["gw1"] && src != egress["gw2"] {
				t.Errorf("server saw %s, want %s or %s (all %v)", src, egress["gw1"], egress["gw2"], got)
			}
		}
		t.Logf("sources over 10 requests: %v", got)
	})

	t.Run("a gateway's agent dies: its datapath keeps answering probes, nothing moves", func(t *testing.T) {
		dead := topo.Node("gw1").IP
		stops["gw1"]() // the agent process is gone; its datapath (and probe reflector) stays
		// Ten probe intervals: the worker must not fail gw1 over, since gw1 still forwards.
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			if g, ok := gatewayIn(w.last(), 7, dead); ok && !g.Healthy {
				t.Fatalf("worker marked gw1 unhealthy although its datapath answers probes")
			}
			time.Sleep(50 * time.Millisecond)
		}
		got := seen(t, 10)
		if got[egress["gw1"]]+got[egress["gw2"]] != 10 {
			t.Errorf("with gw1's agent stopped the server saw %v, want only the egress IPs", got)
		}
	})

	t.Run("a gateway's agent restarts: its datapath admits what it did before the agent reads the cluster", func(t *testing.T) {
		// The restarted agent's cluster view is held unsynced (the real cache behind a gate),
		// so its first states are computed, as on a busy node, before it has read the
		// cluster's pods. Replacing the admitted sources with none then dropped every frame
		// pod a's node tunnelled to gw1 (foreign_node) until the view synced: the ~0.5 s of
		// failed new connections after an agent restart that `make soak` found.
		gate := make(chan struct{})
		released := false
		release := func() {
			if !released {
				close(gate)
				released = true
			}
		}
		defer release()
		dp, stop := startNetnsAgent(ctx, t, s.Config, topo.Node("gw1"), bpffs, func(mgr manager.Manager, c *agent.Config) {
			c.ClusterCache = func() (cache.Cache, error) {
				cc, err := agent.NewClusterCache(mgr)
				return gatedCache{Cache: cc, open: gate}, err
			}
		})
		defer stop()
		dp.waitFor(t, 30*time.Second, "gw1 serving group 7 again", func(s dataplane.State) bool {
			return s.Gateway != nil && len(s.Gateway.Groups) == 1
		})
		before := drops(t, dp, bpf.DropForeignNode) + drops(t, dp, bpf.DropForeignSource)
		got := seen(t, 20)
		if got[egress["gw1"]] == 0 || got[egress["gw1"]]+got[egress["gw2"]] != 20 {
			t.Errorf("restarted gw1 agent, cluster not read yet: the server saw %v, want both egress IPs and nothing else", got)
		}
		if n := drops(t, dp, bpf.DropForeignNode) + drops(t, dp, bpf.DropForeignSource) - before; n != 0 {
			t.Errorf("gw1 dropped %d tunnelled packets as foreign while its agent had not read the cluster", n)
		}
		release()
		dp.waitFor(t, 30*time.Second, "gw1's sources read from the cluster", func(s dataplane.State) bool {
			return s.Gateway != nil && len(s.Gateway.Sources) > 0 && !s.Gateway.KeepSources
		})
		got = seen(t, 10)
		if got[egress["gw1"]]+got[egress["gw2"]] != 10 {
			t.Errorf("after gw1's agent read the cluster the server saw %v, want only the egress IPs", got)
		}
		stop() // as before: gw1's agent is gone, its datapath stays
	})

	t.Run("a gateway node dies: the worker fails over in the datapath", func(t *testing.T) {
		dead := topo.Node("gw1")
		port, err := topo.Fabric.Netlink().LinkByName(dead.FabricPort)
		must(t, err)
		killed := time.Now()
		must(t, topo.Fabric.Netlink().LinkSetDown(port)) // the node is cut off, as a crashed host
		t.Cleanup(func() { _ = topo.Fabric.Netlink().LinkSetUp(port) })
		ap := w.waitFor(t, 10*time.Second, "gw1 unhealthy", func(s dataplane.State) bool {
			g, ok := gatewayIn(s, 7, dead.IP)
			return ok && !g.Healthy
		})
		t.Logf("gateway node cut off → worker datapath switched: %v, of which the Apply %v (probe interval 100ms, threshold 3)", ap.at.Sub(killed), ap.took)
		got := seen(t, 10)
		if got[egress["gw2"]] != 10 {
			t.Errorf("after failover the server saw %v, want only %s", got, egress["gw2"])
		}
	})
}
