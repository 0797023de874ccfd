package agent_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/coordinator"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/test/netns"
)

// TestStaticEndToEndNetns runs the one static mechanism end to end: the real coordinator (its
// probes sent from the router's namespace) and the real agents of worker1, gw1 and gw2 against
// one API server. The group's pool is its spec.addresses.static; the coordinator writes the
// EgressIP, places it and assigns it through the static provider; the holder mounts and
// announces it and pod a leaves with it. Cordoning the holder moves it: the other gateway
// mounts and announces it, the router follows, the old holder lets go. Deleting the group
// releases it: the EgressIP's finalizer goes and no node holds the address any more.
func TestStaticEndToEndNetns(t *testing.T) {
	topo, s, bpffs := newAgentBed(t)
	c := s.Client
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	z := topo.Zones[0]
	static := z.Addr(201)
	pa := topo.Pod("a")
	gws := []*netns.Node{topo.Node("gw1"), topo.Node("gw2")}
	// The router last saw the address at some other MAC (a previous holder).
	routerSees := routerNeighbour(t, topo, z, static, net.HardwareAddr{0x02, 0xee, 0, 0, 0, 2})
	macOf := func(n *netns.Node) string { return linkMAC(t, n) }
	nodeByName := func(name string) *netns.Node {
		for _, g := range gws {
			if g.Name == name {
				return g
			}
		}
		t.Fatalf("%q is not a gateway node", name)
		return nil
	}
	waitFor := func(what string, timeout time.Duration, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v", what, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	egressIP := func() (*egressv1.EgressIP, error) {
		e := &egressv1.EgressIP{}
		return e, c.Get(ctx, ctrlKey(egressv1.EgressIPName(static)), e)
	}
	from := func() netip.Addr {
		t.Helper()
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		src, err := pa.HTTPGet(rctx, netip.MustParseAddr("198.51.100.10"))
		if err != nil {
			t.Fatalf("pod a → 198.51.100.10: %v", err)
		}
		return src
	}

	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "egressd-system"}}))
	for _, n := range topo.Nodes {
		labels := map[string]string{corev1.LabelTopologyZone: z.Name}
		if n.Name != "worker1" {
			labels[egressv1.LabelGateway] = "st"
		}
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels}}
		must(t, c.Create(ctx, node))
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IP.String()}}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		must(t, c.Status().Update(ctx, node))
	}
	for _, n := range topo.Nodes {
		startNetnsAgent(ctx, t, s.Config, n, bpffs)
	}

	cfg, err := coordinator.ParseConfig([]byte("clusterName: lab\n"))
	must(t, err)
	runCoordinator(ctx, t, coordinator.RunOptions{Config: cfg, RestConfig: s.Config, Registry: providers.Registry{},
		ListenPacket: topo.Router.ListenPacket})

	grace := metav1.Duration{Duration: time.Second}
	must(t, c.Create(ctx, &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "st"}, Spec: egressv1.EgressGatewaySpec{
		NodeSelector:     metav1.LabelSelector{MatchLabels: map[string]string{egressv1.LabelGateway: "st"}},
		DrainGracePeriod: &grace,
		Addresses: egressv1.EgressAddresses{Static: &egressv1.StaticAddresses{Pools: []egressv1.StaticPool{
			{Zone: z.Name, Subnet: z.Subnet.String(), IPs: []string{static.String()}}}}}}}))
	must(t, c.Create(ctx, &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "st"},
		Spec: egressv1.EgressPolicyRule{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			DestinationCIDRs: []string{"198.51.100.0/24"}, Gateway: "st"}}))
	createRunningPod(ctx, t, c, "a", "worker1", pa.IP)

	// Assigned by the coordinator through the static provider; announced by the holder.
	var holder *netns.Node
	waitFor("the EgressIP assigned to a gateway", 60*time.Second, func() bool {
		e, err := egressIP()
		if err != nil || e.Status.Node == "" || e.Status.Node != e.Spec.Node || !meta.IsStatusConditionTrue(e.Status.Conditions, egressv1.ConditionAssigned) {
			return false
		}
		if e.Spec.Provider != egressv1.ProviderStatic || !controllerutil.ContainsFinalizer(e, egressv1.FinalizerReleaseCloud) {
			t.Fatalf("EgressIP %+v: want spec.provider %q and the release finalizer", e.Spec, egressv1.ProviderStatic)
		}
		holder = nodeByName(e.Status.Node)
		return true
	})
	waitFor("the holder "+holder.Name+" mounting "+static.String(), 30*time.Second, func() bool { return holds(t, holder, static) })
	waitFor("the router seeing "+static.String()+" at the holder's MAC", 10*time.Second, func() bool { return routerSees() == macOf(holder) })
	waitFor("pod a leaving with "+static.String(), 30*time.Second, func() bool {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		defer rcancel()
		src, err := pa.HTTPGet(rctx, netip.MustParseAddr("198.51.100.10"))
		return err == nil && src == static
	})

	// Cordon the holder: after the grace period the coordinator moves the address, the other
	// gateway announces it, the old holder lets go.
	other := gws[0]
	if other == holder {
		other = gws[1]
	}
	node := &corev1.Node{}
	must(t, c.Get(ctx, ctrlKey(holder.Name), node))
	node.Spec.Unschedulable = true
	must(t, c.Update(ctx, node))
	waitFor("the EgressIP moved to "+other.Name, 30*time.Second, func() bool {
		e, err := egressIP()
		return err == nil && e.Status.Node == other.Name && e.Spec.Node == other.Name
	})
	waitFor(other.Name+" mounting "+static.String(), 10*time.Second, func() bool { return holds(t, other, static) })
	waitFor("the router following to "+other.Name, 10*time.Second, func() bool { return routerSees() == macOf(other) })
	waitFor(holder.Name+" letting go", 10*time.Second, func() bool { return !holds(t, holder, static) })
	if src := from(); src != static {
		t.Fatalf("after the move the server saw %s, want %s", src, static)
	}

	// Delete the group: the EgressIP is released (its finalizer removed) and unmounted.
	must(t, c.Delete(ctx, &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "st"}}))
	waitFor("the EgressIP released", 30*time.Second, func() bool {
		_, err := egressIP()
		return apierrors.IsNotFound(err)
	})
	waitFor("no node holding "+static.String(), 10*time.Second, func() bool { return !holds(t, gws[0], static) && !holds(t, gws[1], static) })
	// Nobody answers for the address on the segment any more.
	rlink, err := topo.Router.Netlink().LinkByName(z.RouterLink)
	must(t, err)
	must(t, topo.Router.Netlink().NeighDel(&netlink.Neigh{LinkIndex: rlink.Attrs().Index, IP: net.IP(static.AsSlice())}))
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	if _, err := topo.Router.Ping(rctx, static); err == nil {
		t.Fatalf("%s still answers after its release", static)
	}
}

// runCoordinator runs a coordinator in this process until the test ends (and fails the test if
// it returns an error). Several tests of the package run one, so each gets its own metrics
// registry and skips controller-runtime's process-wide controller name check.
func runCoordinator(ctx context.Context, t *testing.T, opts coordinator.RunOptions) {
	t.Helper()
	opts.MetricsBindAddress, opts.HealthProbeBindAddress = "0", "0"
	opts.Registerer, opts.SkipControllerNameValidation = prometheus.NewRegistry(), true
	cctx, stop := context.WithCancel(log.IntoContext(ctx, zap.New(zap.UseDevMode(true)).WithValues("coordinator", "lab")))
	done := make(chan error, 1)
	go func() { done <- coordinator.Run(cctx, opts) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
}
