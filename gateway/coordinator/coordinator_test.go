package coordinator

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	testclock "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws"
	"github.com/egressd/egressd/providers/aws/awssimtest"
	"github.com/egressd/egressd/providers/conformance"
	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	"github.com/egressd/egressd/test/envtest"
)

var server *envtest.Server

func TestMain(m *testing.M) {
	flag.Parse()
	// Reconcilers log through log.FromContext; tests that read the log put their own in ctx.
	log.SetLogger(logr.Discard())
	if testing.Short() {
		os.Exit(m.Run())
	}
	s, err := envtest.StartServer(context.Background())
	if err != nil {
		println("envtest:", err.Error())
		os.Exit(1)
	}
	server = s
	code := m.Run()
	_ = s.Stop()
	os.Exit(code)
}

const testNamespace = "egressd-system"

// staticHealth is the probe verdicts a test sets by hand; the coordinator's real prober needs
// reachable agents, which the lab provides (test/lab).
type staticHealth struct{ down map[netip.Addr]bool }

func (h *staticHealth) Up(a netip.Addr) bool         { return !h.down[a] }
func (h *staticHealth) SetTargets([]probe.Target)    {}
func (h *staticHealth) fail(a netip.Addr, down bool) { h.down[a] = down }

// env is one coordinator against the envtest API server and an EC2 simulator.
type env struct {
	t      *testing.T
	ctx    context.Context
	world  *awssimtest.World
	c      *Coordinator
	clock  *testclock.FakeClock
	health *staticHealth
	// probes, when set, replaces health: the coordinator's real prober (failsafe tests).
	probes Health
	// metrics, when set, are the coordinator's metrics.
	metrics  *Metrics
	recorder *events.FakeRecorder
	gateway  string
	// nodes: Kubernetes node name → instance ID; ips: node → underlay IP.
	nodes map[string]string
	ips   map[string]netip.Addr
	zones map[string][]string // AWS zone → node names
	cfg   Config
	prov  providers.Provider
	// The coordinator's two reconcilers of the group and its addresses.
	gwr  *GatewayReconciler
	eipr *EgressIPReconciler
}

func newEnv(t *testing.T, zones, perZone int, limits *providers.RateLimits) *env {
	t.Helper()
	return newEnvWorld(t, zones, perZone, limits, awssimtest.NewWorld)
}

// newEnvWorld is newEnv on the world newWorld seeds (awssimtest.NewDualStackWorld: IPv6).
func newEnvWorld(t *testing.T, zones, perZone int, limits *providers.RateLimits, newWorld func(conformance.Topology) (*awssimtest.World, error)) *env {
	t.Helper()
	if server == nil {
		t.Skip("needs the envtest API server (not in -short mode)")
	}
	ctx := context.Background()
	var topo conformance.Topology
	for i := range zones {
		topo.Zones = append(topo.Zones, fmt.Sprintf("z%d", i))
	}
	topo.NodesPerZone, topo.IPsPerNode = perZone, 4
	w, err := newWorld(topo)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.Sim)
	t.Cleanup(srv.Close)
	if err := w.Connect(srv.URL); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, world: w, clock: testclock.NewFakeClock(time.Now()), health: &staticHealth{down: map[netip.Addr]bool{}},
		recorder: events.NewFakeRecorder(1000), gateway: strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")),
		nodes: map[string]string{}, ips: map[string]netip.Addr{}, zones: map[string][]string{}}
	if len(e.gateway) > 50 {
		e.gateway = e.gateway[len(e.gateway)-50:]
		e.gateway = strings.TrimLeft(e.gateway, "-_")
	}
	e.gateway = strings.ReplaceAll(e.gateway, "_", "-")
	ensureNamespace(t, testNamespace)

	primary := map[string]netip.Addr{}
	for _, h := range w.Sim.Holdings() {
		if h.Primary {
			primary[h.Instance] = h.PrivateIP
		}
	}
	for _, z := range topo.Zones {
		for i, ref := range w.Nodes(z) {
			inst := ref.ProviderID[strings.LastIndex(ref.ProviderID, "/")+1:]
			name := fmt.Sprintf("%s-%s-%d", e.gateway, z, i)
			if len(name) > 63 {
				name = name[len(name)-63:]
			}
			e.addNode(name, ref.Zone, ref.ProviderID, primary[inst])
			e.nodes[name], e.ips[name] = inst, primary[inst]
			e.zones[ref.Zone] = append(e.zones[ref.Zone], name)
		}
	}
	e.cfg, err = ParseConfig([]byte("clusterName: c1\nnamespace: " + testNamespace + "\ngcGracePeriod: 10m\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.prov = w.Provider()
	if limits != nil {
		// The EC2 call limit of the provider's configuration, every attempt counted.
		p, err := w.NewProvider(aws.Type, func(c *aws.Config) { c.CallLimits = limits })
		if err != nil {
			t.Fatal(err)
		}
		e.prov = p
	}
	e.restart()
	t.Cleanup(e.cleanup)
	return e
}

// restart builds a fresh coordinator (empty allocator, caches and in-flight set), as after a
// crash or a leader change.
func (e *env) restart() {
	var health Health = e.health
	if e.probes != nil {
		health = e.probes
	}
	e.c = New(Options{Config: e.cfg, Client: server.Client, Reader: server.Client, Recorder: e.recorder,
		Providers: map[string]providers.Provider{"aws": e.prov}, Health: health, Clock: e.clock, Metrics: e.metrics})
	e.gwr, e.eipr = NewGatewayReconciler(e.c), NewEgressIPReconciler(e.c)
}

func ensureNamespace(t *testing.T, name string) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := server.Client.Create(context.Background(), ns); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

func (e *env) addNode(name, zone, providerID string, ip netip.Addr) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ZoneLabel: zone, egressv1.LabelGateway: e.gateway}},
		Spec: corev1.NodeSpec{ProviderID: providerID}}
	if err := server.Client.Create(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
	n.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}},
	}
	if err := server.Client.Status().Update(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
	e.renewLease(name)
}

func (e *env) renewLease(node string) {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: contract.AgentLeaseName(node), Namespace: testNamespace}}
	_, err := controllerutil.CreateOrUpdate(e.ctx, server.Client, l, func() error {
		now := metav1.NewMicroTime(e.clock.Now())
		l.Spec.HolderIdentity, l.Spec.RenewTime = &node, &now
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) renewAll() {
	for n := range e.nodes {
		e.renewLease(n)
	}
}

func (e *env) cleanup() {
	ctx := context.Background()
	var eips egressv1.EgressIPList
	_ = server.Client.List(ctx, &eips)
	for i := range eips.Items {
		x := &eips.Items[i]
		if controllerutil.RemoveFinalizer(x, egressv1.FinalizerReleaseCloud) {
			_ = server.Client.Update(ctx, x)
		}
		_ = server.Client.Delete(ctx, x)
	}
	var gws egressv1.EgressGatewayList
	_ = server.Client.List(ctx, &gws)
	for i := range gws.Items {
		_ = server.Client.Delete(ctx, &gws.Items[i])
	}
	for n := range e.nodes {
		_ = server.Client.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
}

func (e *env) createGateway(mods ...func(*egressv1.EgressGateway)) *egressv1.EgressGateway {
	gw := &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: e.gateway}, Spec: egressv1.EgressGatewaySpec{
		NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{egressv1.LabelGateway: e.gateway}},
		Addresses:    egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: "aws"}},
	}}
	for _, m := range mods {
		m(gw)
	}
	if err := server.Client.Create(e.ctx, gw); err != nil {
		e.t.Fatal(err)
	}
	return gw
}

// pass is one round of the controllers as the manager would run them after a gateway event:
// the gateway reconcile (plan, ledger, status), then the EgressIP reconcile of every address
// of the group (cloud sync, release). It returns the errors and the shortest requeue.
func (e *env) pass(ctx context.Context) (ctrl.Result, error) {
	res, err := e.gwr.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: e.gateway}})
	var eips egressv1.EgressIPList
	if lerr := server.Client.List(e.ctx, &eips); lerr != nil {
		e.t.Fatal(lerr)
	}
	errs := []error{err}
	for _, x := range eips.Items {
		if x.Spec.Gateway != e.gateway && x.DeletionTimestamp == nil {
			continue
		}
		r, err := e.eipr.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: x.Name}})
		if (err != nil || r.RequeueAfter > 0) && os.Getenv("EGRESSD_DEBUG") != "" {
			var now egressv1.EgressIP
			_ = server.Client.Get(e.ctx, client.ObjectKeyFromObject(&x), &now)
			e.t.Logf("EgressIP %s: %+v %v; Assigned %+v", x.Name, r, err, cond(now.Status.Conditions, egressv1.ConditionAssigned))
		}
		errs = append(errs, err)
		res.RequeueAfter = minPositive(res.RequeueAfter, r.RequeueAfter)
	}
	return res, errors.Join(errs...)
}

// settle runs passes until two in a row find nothing left to do (the first quiet pass may
// still have written status, or deleted an address the next pass replaces).
func (e *env) settle() {
	e.t.Helper()
	var lastErr error
	backoff := 50 * time.Millisecond
	quiet := 0
	for i := 0; i < 40; i++ {
		res, err := e.pass(e.ctx)
		if os.Getenv("EGRESSD_DEBUG") != "" {
			e.t.Logf("pass %d: %+v %v", i, res, err)
		}
		// As the work queue would: back off exponentially on errors, honour a short requeue.
		// Quiet: no error, no immediate requeue, and no short requeue for throttling (only the
		// drain timer or the periodic resync remain).
		switch {
		case err != nil:
			time.Sleep(backoff)
			backoff = min(2*backoff, 2*time.Second)
			quiet = 0
		case res.RequeueAfter > 0 && res.RequeueAfter < 5*time.Second:
			time.Sleep(res.RequeueAfter)
			quiet = 0
		default:
			if quiet++; quiet == 2 {
				return
			}
		}
		lastErr = err
	}
	e.t.Fatalf("gateway %s did not settle in 40 passes: %v", e.gateway, lastErr)
}

func (e *env) gatewayObj() *egressv1.EgressGateway {
	gw := &egressv1.EgressGateway{}
	if err := server.Client.Get(e.ctx, client.ObjectKey{Name: e.gateway}, gw); err != nil {
		e.t.Fatal(err)
	}
	return gw
}

func (e *env) egressIPs() []egressv1.EgressIP {
	eips, err := e.c.ledger(e.ctx, e.gateway)
	if err != nil {
		e.t.Fatal(err)
	}
	return eips
}

// checkCloudMatchesLedger: every EgressIP is held in the simulator by the instance of its
// status.node (with its public IP), and the cluster holds nothing else tagged as its own.
func (e *env) checkCloudMatchesLedger() {
	e.t.Helper()
	eips := e.egressIPs()
	for _, x := range eips {
		ip := netip.MustParseAddr(x.Spec.IP)
		h, ok := e.world.Sim.Holder(e.world.VPC, ip)
		if !ok || h.Instance != e.nodes[x.Status.Node] || x.Status.Node != x.Spec.Node {
			e.t.Errorf("%s: ledger says %s (desired %s), simulator says instance %q (ok=%v)", ip, x.Status.Node, x.Spec.Node, h.Instance, ok)
		}
		if x.Spec.Public && (!h.PublicIP.IsValid() || h.PublicIP.String() != x.Status.PublicIP) {
			e.t.Errorf("%s: public IP in ledger %q, simulator %s", ip, x.Status.PublicIP, h.PublicIP)
		}
	}
	owned, err := e.prov.ListOwned(e.ctx, "c1")
	if err != nil {
		e.t.Fatal(err)
	}
	var private, public int
	for _, r := range owned {
		switch r.Kind {
		case providers.ResourcePrivateIP:
			private++
		case providers.ResourcePublicIP:
			public++
		}
	}
	wantPublic := 0
	for _, x := range eips {
		if x.Spec.Public {
			wantPublic++
		}
	}
	if private != len(eips) || public != wantPublic {
		e.t.Errorf("cloud holds %d private and %d public addresses of the cluster; ledger has %d and %d", private, public, len(eips), wantPublic)
	}
}

func (e *env) holderOf(ip string) string {
	h, ok := e.world.Sim.Holder(e.world.VPC, netip.MustParseAddr(ip))
	if !ok {
		return ""
	}
	for n, inst := range e.nodes {
		if inst == h.Instance {
			return n
		}
	}
	return "instance " + h.Instance
}

func cond(conds []metav1.Condition, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func (e *env) drainEvents() []string {
	var out []string
	for {
		select {
		case ev := <-e.recorder.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

// 1. Policy and gateway applied → EgressIPs, IPs on the right nodes in the cloud, Ready.
func TestGatewayAppliedAssignsEgressIPs(t *testing.T) {
	e := newEnv(t, 2, 2, nil)
	e.createGateway(func(g *egressv1.EgressGateway) { g.Spec.Addresses.Cloud.Public = true })
	e.settle()

	eips := e.egressIPs()
	if len(eips) != 2 {
		t.Fatalf("%d EgressIPs, want one per zone (2)", len(eips))
	}
	zones := map[string]bool{}
	for _, x := range eips {
		zones[x.Spec.Zone] = true
		if !meta.IsStatusConditionTrue(x.Status.Conditions, egressv1.ConditionAssigned) || x.Status.PublicIP == "" || x.Status.InterfaceMAC == "" {
			t.Errorf("%s not fully assigned: %+v", x.Name, x.Status)
		}
		if !controllerutil.ContainsFinalizer(&x, egressv1.FinalizerReleaseCloud) {
			t.Errorf("%s has no finalizer", x.Name)
		}
		if got := e.holderOf(x.Spec.IP); got != x.Status.Node {
			t.Errorf("%s held by %s in the cloud, ledger says %s", x.Spec.IP, got, x.Status.Node)
		}
	}
	if len(zones) != 2 {
		t.Errorf("egress IPs in zones %v, want both zones", zones)
	}
	e.checkCloudMatchesLedger()

	gw := e.gatewayObj()
	if c := cond(gw.Status.Conditions, egressv1.ConditionReady); c.Status != metav1.ConditionTrue {
		t.Errorf("gateway not Ready: %+v", c)
	}
	if c := cond(gw.Status.Conditions, egressv1.ConditionCloudSynced); c.Status != metav1.ConditionTrue {
		t.Errorf("gateway not CloudSynced: %+v", c)
	}
	if len(gw.Status.EgressIPs) != 4 || gw.Status.GroupID == 0 || gw.Status.ReadyGateways != 4 {
		t.Errorf("status: egressIPs %v (want 2 private + 2 public), groupID %d, readyGateways %d", gw.Status.EgressIPs, gw.Status.GroupID, gw.Status.ReadyGateways)
	}
	states := map[egressv1.GatewayState]int{}
	for _, z := range gw.Status.Zones {
		for _, g := range z.Gateways {
			states[g.State]++
			if g.UnderlayIP == "" {
				t.Errorf("gateway %s without underlay IP", g.Node)
			}
		}
	}
	if states[egressv1.GatewayActive] != 2 || states[egressv1.GatewayStandby] != 2 {
		t.Errorf("gateway states %v, want 2 Active and 2 Standby", states)
	}

	// A policy using it, with one matching pod.
	pol := &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Name: e.gateway, Namespace: "default"}, Spec: egressv1.EgressPolicyRule{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": e.gateway}}, DestinationCIDRs: []string{"203.0.113.0/24"}, Gateway: e.gateway}}
	if err := server.Client.Create(e.ctx, pol); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Client.Delete(context.Background(), pol) })
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: e.gateway, Namespace: "default", Labels: map[string]string{"app": e.gateway}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "monitor"}}}}
	if err := server.Client.Create(e.ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Client.Delete(context.Background(), pod) })
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.5", PodIPs: []corev1.PodIP{{IP: "10.244.0.5"}}}
	if err := server.Client.Status().Update(e.ctx, pod); err != nil {
		t.Fatal(err)
	}
	if _, err := (PolicyReconciler{Coordinator: e.c}).Reconcile(e.ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(pol)}); err != nil {
		t.Fatal(err)
	}
	if err := server.Client.Get(e.ctx, client.ObjectKeyFromObject(pol), pol); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(pol.Status.Conditions, egressv1.ConditionAccepted) || !meta.IsStatusConditionTrue(pol.Status.Conditions, egressv1.ConditionReady) ||
		pol.Status.MatchedPods != 1 || len(pol.Status.EgressIPs) != 4 {
		t.Errorf("policy status: %+v", pol.Status)
	}
}

// cloud.family IPv6 on dual-stack subnets: IPv6 egress IPs from the primary subnet's block,
// assigned in the cloud; a NotReady holder's address moves to its zone's survivor (unassign,
// then assign: EC2 has no IPv6 reassignment), and the set stays the same.
func TestIPv6EgressIPs(t *testing.T) {
	e := newEnvWorld(t, 2, 2, nil, awssimtest.NewDualStackWorld)
	e.createGateway(func(g *egressv1.EgressGateway) { g.Spec.Addresses.Cloud.Family = egressv1.IPv6 })
	e.settle()
	eips := e.egressIPs()
	if len(eips) != 2 {
		t.Fatalf("%d EgressIPs, want one per zone (2)", len(eips))
	}
	for _, x := range eips {
		if ip := netip.MustParseAddr(x.Spec.IP); !ip.Is6() || !strings.HasSuffix(x.Spec.Subnet, "#ipv6") {
			t.Errorf("%s: %s from %q, want IPv6 from a subnet's IPv6 block", x.Name, x.Spec.IP, x.Spec.Subnet)
		}
		if got := e.holderOf(x.Spec.IP); got != x.Status.Node || got == "" {
			t.Errorf("%s held by %q in the cloud, ledger says %q", x.Spec.IP, got, x.Status.Node)
		}
	}
	before := e.gatewayObj().Status.EgressIPs
	victim := eips[0]
	e.world.ResetCalls()
	e.setReady(victim.Status.Node, false)
	e.settle()
	moved := e.egressIP(victim.Name)
	if moved.Status.Node == victim.Status.Node || !sameZone(e, victim.Status.Node, moved.Status.Node) {
		t.Fatalf("address on %q after its holder %s went NotReady, want the zone's other gateway", moved.Status.Node, victim.Status.Node)
	}
	if got := e.holderOf(victim.Spec.IP); got != moved.Status.Node {
		t.Errorf("cloud holder %q, ledger %q", got, moved.Status.Node)
	}
	if after := e.gatewayObj().Status.EgressIPs; fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("egress IP set changed: %v → %v", before, after)
	}
	e.checkCloudMatchesLedger()
	t.Logf("cloud calls for the IPv6 move: %v", e.world.Calls())
}

// 2. A gateway node NotReady, with a failed probe, an expired agent lease, cordoned or
// unlabelled → its address moves to the survivor of its zone; the group's set never changes.
func TestFailoverKeepsTheEgressIPSet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(e *env, node string)
		state  egressv1.GatewayState
		drain  bool
	}{
		{"node NotReady", func(e *env, n string) { e.setReady(n, false) }, egressv1.GatewayUnhealthy, false},
		{"probe failed", func(e *env, n string) { e.health.fail(e.ips[n], true) }, egressv1.GatewayUnhealthy, false},
		{"agent lease expired", func(e *env, n string) { e.clock.Step(11 * time.Second); e.renewAllBut(n) }, egressv1.GatewayUnhealthy, false},
		{"cordoned", func(e *env, n string) { e.patchNode(n, func(x *corev1.Node) { x.Spec.Unschedulable = true }) }, egressv1.GatewayDraining, true},
		{"unlabelled", func(e *env, n string) {
			e.patchNode(n, func(x *corev1.Node) { delete(x.Labels, egressv1.LabelGateway) })
		}, egressv1.GatewayDraining, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 2, 2, nil)
			e.createGateway()
			e.settle()
			before := e.gatewayObj().Status.EgressIPs
			victim := e.egressIPs()[0]
			holder := victim.Status.Node
			e.world.ResetCalls()

			tc.break_(e, holder)
			e.settle()
			if tc.drain {
				// Within the drain grace period the address stays for established flows.
				if got := e.holderOf(victim.Spec.IP); got != holder {
					t.Fatalf("address left the draining gateway before the grace period: held by %s", got)
				}
				if s := e.stateOf(holder); s != egressv1.GatewayDraining {
					t.Fatalf("draining gateway in state %q", s)
				}
				e.clock.Step(31 * time.Second)
				e.renewAll()
				e.settle()
			}
			moved := e.egressIP(victim.Name)
			if moved.Status.Node == holder || moved.Status.Node == "" {
				t.Fatalf("address still on %s (status %+v)", holder, moved.Status)
			}
			if !sameZone(e, holder, moved.Status.Node) {
				t.Errorf("address moved across zones: %s → %s", holder, moved.Status.Node)
			}
			if got := e.holderOf(victim.Spec.IP); got != moved.Status.Node {
				t.Errorf("cloud holder %s, ledger %s", got, moved.Status.Node)
			}
			after := e.gatewayObj().Status.EgressIPs
			if fmt.Sprint(before) != fmt.Sprint(after) {
				t.Errorf("egress IP set changed: %v → %v", before, after)
			}
			if s := e.stateOf(holder); tc.name != "unlabelled" && s != tc.state {
				t.Errorf("old holder in state %q, want %q", s, tc.state)
			}
			if tc.name == "unlabelled" && e.stateOf(holder) != "" {
				t.Errorf("unlabelled node still listed after its drain")
			}
			e.checkCloudMatchesLedger()
			calls := e.world.Calls()
			t.Logf("cloud calls for the failover: %v (mutating %d)", calls, awssim.MutatingCalls(calls))
		})
	}
}

func sameZone(e *env, a, b string) bool {
	for _, nodes := range e.zones {
		hasA, hasB := false, false
		for _, n := range nodes {
			hasA, hasB = hasA || n == a, hasB || n == b
		}
		if hasA && hasB {
			return true
		}
	}
	return false
}

func (e *env) setReady(node string, ready bool) {
	e.patchNodeStatus(node, func(n *corev1.Node) {
		st := corev1.ConditionTrue
		if !ready {
			st = corev1.ConditionFalse
		}
		n.Status.Conditions[0].Status = st
	})
}

func (e *env) renewAllBut(skip string) {
	for n := range e.nodes {
		if n != skip {
			e.renewLease(n)
		}
	}
}

func (e *env) patchNode(name string, f func(*corev1.Node)) {
	n := &corev1.Node{}
	if err := server.Client.Get(e.ctx, client.ObjectKey{Name: name}, n); err != nil {
		e.t.Fatal(err)
	}
	f(n)
	if err := server.Client.Update(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) patchNodeStatus(name string, f func(*corev1.Node)) {
	n := &corev1.Node{}
	if err := server.Client.Get(e.ctx, client.ObjectKey{Name: name}, n); err != nil {
		e.t.Fatal(err)
	}
	f(n)
	if err := server.Client.Status().Update(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) stateOf(node string) egressv1.GatewayState {
	for _, z := range e.gatewayObj().Status.Zones {
		for _, g := range z.Gateways {
			if g.Node == node {
				return g.State
			}
		}
	}
	return ""
}

func (e *env) egressIP(name string) egressv1.EgressIP {
	x := egressv1.EgressIP{}
	if err := server.Client.Get(e.ctx, client.ObjectKey{Name: name}, &x); err != nil {
		e.t.Fatal(err)
	}
	return x
}

// 3. The coordinator dies in the middle of a move and a new one takes over: it converges,
// and the cloud holds exactly what the ledger says.
func TestCrashInTheMiddleOfAMove(t *testing.T) {
	e := newEnv(t, 1, 2, nil)
	e.createGateway(func(g *egressv1.EgressGateway) {
		g.Spec.Addresses.Cloud.Public = true
		g.Spec.Addresses.Cloud.IPsPerZone = 2
	})
	e.settle()
	victims := map[string]string{}
	for _, x := range e.egressIPs() {
		victims[x.Name] = x.Status.Node
	}
	// Fail the holder of the first address; its addresses must move.
	holder := e.egressIPs()[0].Status.Node
	e.health.fail(e.ips[holder], true)

	// The move's cloud call takes 2 s; the coordinator is killed after 300 ms.
	e.world.Sim.SetLatency("AssignPrivateIpAddresses", 2*time.Second)
	ctx, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
	_, err := e.pass(ctx)
	cancel()
	t.Logf("killed reconcile returned: %v", err)
	time.Sleep(2 * time.Second) // let the simulator finish applying what it received
	e.world.Sim.SetLatency("AssignPrivateIpAddresses", 0)

	e.restart()
	e.settle()
	for name, from := range victims {
		x := e.egressIP(name)
		if from != holder {
			continue // on a healthy node: stays
		}
		if x.Status.Node == from || x.Status.Node != x.Spec.Node {
			t.Errorf("%s: status.node %s spec.node %s (was on %s)", name, x.Status.Node, x.Spec.Node, from)
		}
	}
	e.checkCloudMatchesLedger()
	if eips := e.egressIPs(); len(eips) != 2 {
		t.Errorf("%d EgressIPs after the restart, want 2", len(eips))
	}
}

// 4. A tagged orphan is released after the grace period; untagged and foreign resources never.
func TestGarbageCollection(t *testing.T) {
	e := newEnv(t, 1, 1, nil)
	e.createGateway()
	e.settle()
	node := e.zones[firstKey(e.zones)][0]
	ref := providers.NodeRef{Name: node, ProviderID: "aws:///" + firstKey(e.zones) + "/" + e.nodes[node]}
	foreign := e.world.AddForeign(e.world.Nodes("z0")[0])
	// An orphan of this cluster: assigned and tagged, but no EgressIP claims it (as after a
	// crash between the cloud call and the ledger write, or a deleted ledger entry).
	orphanIP := e.world.FreeAddress("z0")
	if _, err := e.prov.EnsureIP(e.ctx, providers.EnsureRequest{Owner: providers.Owner{Cluster: "c1", Gateway: "ghost"}, Node: ref, IP: orphanIP, Public: true, Interface: providers.InterfacePrimary}); err != nil {
		t.Fatal(err)
	}
	gc := NewGC(e.c)
	released, err := gc.Collect(e.ctx)
	if err != nil || len(released) != 0 {
		t.Fatalf("within the grace period: released %v, err %v", released, err)
	}
	e.clock.Step(11 * time.Minute)
	released, err = gc.Collect(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range released {
		got = append(got, string(r.Kind)+":"+r.IP.String())
	}
	t.Logf("released: %v", got)
	if _, held := e.world.Sim.Holder(e.world.VPC, orphanIP); held && e.holderOf(orphanIP.String()) != "" {
		t.Errorf("orphan %s still assigned", orphanIP)
	}
	for _, ip := range foreign {
		if h, ok := e.world.Sim.Holder(e.world.VPC, ip); !ok || h.Instance == "" || !h.PublicIP.IsValid() {
			t.Errorf("foreign address %s (or its Elastic IP) was touched: %+v", ip, h)
		}
	}
	// The gateway's own address is claimed and stays.
	e.checkCloudMatchesLedger()
}

func firstKey(m map[string][]string) string {
	for k := range m {
		return k
	}
	return ""
}

// 5. What only the controller can detect becomes a condition with a reason and an Event, and
// nothing else breaks.
func TestConditionsForBadReferencesAndQuota(t *testing.T) {
	e := newEnv(t, 1, 1, nil)

	t.Run("unknown provider", func(t *testing.T) {
		gw := &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: e.gateway + "-tencent"}, Spec: egressv1.EgressGatewaySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "none"}},
			Addresses:    egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: "tencent"}}}}
		if err := server.Client.Create(e.ctx, gw); err != nil {
			t.Fatal(err)
		}
		if _, err := e.gwr.Reconcile(e.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: gw.Name}}); err != nil {
			t.Fatal(err)
		}
		_ = server.Client.Get(e.ctx, client.ObjectKeyFromObject(gw), gw)
		c := cond(gw.Status.Conditions, egressv1.ConditionReady)
		if c.Status != metav1.ConditionFalse || c.Reason != egressv1.ReasonProviderNotFound || !strings.Contains(c.Message, "tencent") {
			t.Errorf("condition %+v", c)
		}
		expectEvent(t, e, egressv1.ReasonProviderNotFound)
	})

	t.Run("unknown gateway and namespace not allowed", func(t *testing.T) {
		e.createGateway(func(g *egressv1.EgressGateway) {
			g.Spec.AllowedNamespaces = &egressv1.NamespaceSelection{Names: []string{"team-a"}}
		})
		e.settle()
		for _, tc := range []struct{ gateway, reason string }{
			{"does-not-exist", egressv1.ReasonGatewayNotFound},
			{e.gateway, egressv1.ReasonNamespaceNotAllowed},
		} {
			pol := &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{GenerateName: "bad-", Namespace: "default"}, Spec: egressv1.EgressPolicyRule{
				PodSelector: metav1.LabelSelector{}, DestinationCIDRs: []string{"0.0.0.0/0"}, Gateway: tc.gateway}}
			if err := server.Client.Create(e.ctx, pol); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = server.Client.Delete(context.Background(), pol) })
			if _, err := (PolicyReconciler{Coordinator: e.c}).Reconcile(e.ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(pol)}); err != nil {
				t.Fatal(err)
			}
			_ = server.Client.Get(e.ctx, client.ObjectKeyFromObject(pol), pol)
			c := cond(pol.Status.Conditions, egressv1.ConditionAccepted)
			if c.Status != metav1.ConditionFalse || c.Reason != tc.reason || c.Message == "" {
				t.Errorf("gateway %q: Accepted %+v, want reason %s", tc.gateway, c, tc.reason)
			}
			expectEvent(t, e, tc.reason)
		}
		// The gateway itself is unaffected.
		if c := cond(e.gatewayObj().Status.Conditions, egressv1.ConditionReady); c.Status != metav1.ConditionTrue {
			t.Errorf("gateway broke: %+v", c)
		}
	})
}

// Quota exhausted: the Elastic IP limit is reached; the address is still placed, the condition
// says why it has no public IP, and the group keeps its other addresses.
func TestQuotaExhausted(t *testing.T) {
	e := newEnv(t, 1, 1, nil)
	e.world.Sim.SetElasticIPLimit(0)
	e.createGateway(func(g *egressv1.EgressGateway) { g.Spec.Addresses.Cloud.Public = true })
	for i := 0; i < 3; i++ {
		_, _ = e.pass(e.ctx)
	}
	eips := e.egressIPs()
	if len(eips) != 1 {
		t.Fatalf("%d EgressIPs", len(eips))
	}
	c := cond(eips[0].Status.Conditions, egressv1.ConditionAssigned)
	if c.Status != metav1.ConditionFalse || c.Reason != egressv1.ReasonCapacityExhausted {
		t.Errorf("Assigned %+v, want False/CapacityExhausted", c)
	}
	gc := cond(e.gatewayObj().Status.Conditions, egressv1.ConditionCloudSynced)
	if gc.Status != metav1.ConditionFalse || gc.Reason != egressv1.ReasonCapacityExhausted {
		t.Errorf("CloudSynced %+v, want False/CapacityExhausted", gc)
	}
	expectEvent(t, e, egressv1.ReasonCapacityExhausted)
	// Quota raised: it converges, with no leaked private address.
	e.world.Sim.SetElasticIPLimit(5)
	e.settle()
	e.checkCloudMatchesLedger()
}

func expectEvent(t *testing.T, e *env, reason string) {
	t.Helper()
	for _, ev := range e.drainEvents() {
		if strings.Contains(ev, reason) {
			return
		}
	}
	t.Errorf("no %s event", reason)
}

// 6. A throttling storm: the cloud throttles every action; the coordinator converges without
// ever sending more EC2 requests (retries included) than the provider's configured call limits.
func TestThrottlingStorm(t *testing.T) {
	limits := providers.RateLimits{MutatingQPS: 4, MutatingBurst: 2, ReadQPS: 8, ReadBurst: 4}
	e := newEnv(t, 4, 1, &limits)
	e.world.Sim.Throttle("*", 3, 2) // the cloud's own limit, per action, under ours for some
	e.world.Throttle(10)            // plus ten RequestLimitExceeded in a row
	e.createGateway(func(g *egressv1.EgressGateway) { g.Spec.Addresses.Cloud.IPsPerZone = 2 })
	e.world.ResetCalls()
	start := time.Now()
	e.settle()
	elapsed := time.Since(start)
	calls := e.world.Calls()
	mutating := awssim.MutatingCalls(calls)
	reads := -mutating
	for _, n := range calls {
		reads += n
	}
	// A token bucket admits at most burst + qps×elapsed requests: a bound, not a timing.
	maxMutating := float64(limits.MutatingBurst) + limits.MutatingQPS*elapsed.Seconds()
	maxRead := float64(limits.ReadBurst) + limits.ReadQPS*elapsed.Seconds()
	t.Logf("converged in %v with %d mutating and %d read EC2 requests (bounds %.0f, %.0f): %v",
		elapsed.Round(time.Millisecond), mutating, reads, maxMutating, maxRead, calls)
	if float64(mutating) > maxMutating+0.5 || float64(reads) > maxRead+0.5 {
		t.Errorf("EC2 requests exceed the configured limits: %d mutating (≤ %.0f), %d reads (≤ %.0f)", mutating, maxMutating, reads, maxRead)
	}
	if n := len(e.egressIPs()); n != 8 {
		t.Errorf("%d EgressIPs, want 8", n)
	}
	e.world.ClearFaults()
	e.checkCloudMatchesLedger()
}

// An allocated address that something outside egressd already holds (another instance, a CNI's
// pod IP) is refused by the cloud: the coordinator marks it taken and allocates another,
// instead of retrying it forever.
func TestAddressHeldOutsideEgressd(t *testing.T) {
	e := newEnv(t, 1, 1, nil)
	held := map[netip.Addr]bool{}
	for _, h := range e.world.Sim.Holdings() {
		held[h.PrivateIP] = true
	}
	// Occupy the first usable addresses of the subnet (AWS reserves .0-.3) that no instance has.
	occupied := map[string]bool{}
	for a := netip.MustParseAddr("10.0.1.4"); len(occupied) < 3; a = a.Next() {
		if held[a] {
			continue
		}
		if err := e.world.Occupy("z0", a); err != nil {
			t.Fatalf("occupying %s: %v", a, err)
		}
		occupied[a.String()] = true
	}
	e.createGateway()
	e.settle()
	eips := e.egressIPs()
	if len(eips) != 1 {
		t.Fatalf("%d EgressIPs, want 1", len(eips))
	}
	if occupied[eips[0].Spec.IP] {
		t.Fatalf("the ledger kept %s, which is held outside egressd", eips[0].Spec.IP)
	}
	expectEvent(t, e, egressv1.ReasonAddressInUse)
	if c := cond(e.gatewayObj().Status.Conditions, egressv1.ConditionReady); c.Status != metav1.ConditionTrue {
		t.Errorf("gateway not Ready: %+v", c)
	}
	e.checkCloudMatchesLedger()
}

// The finalizer comes before any cloud call: an EgressIP that lost it gets it back before the
// EgressIP controller moves it in the cloud.
func TestFinalizerBeforeCloudCall(t *testing.T) {
	e := newEnv(t, 1, 2, nil)
	e.createGateway()
	e.settle()
	victim := e.egressIPs()[0]
	holder := victim.Status.Node
	x := e.egressIP(victim.Name)
	if !controllerutil.RemoveFinalizer(&x, egressv1.FinalizerReleaseCloud) {
		t.Fatal("the gateway controller wrote an EgressIP without the finalizer")
	}
	if err := server.Client.Update(e.ctx, &x); err != nil {
		t.Fatal(err)
	}
	e.health.fail(e.ips[holder], true)
	e.settle()
	moved := e.egressIP(victim.Name)
	if moved.Status.Node == holder || moved.Status.Node == "" {
		t.Fatalf("%s did not move off %s", victim.Spec.IP, holder)
	}
	if !controllerutil.ContainsFinalizer(&moved, egressv1.FinalizerReleaseCloud) {
		t.Errorf("%s moved in the cloud without the finalizer: %v", victim.Spec.IP, moved.Finalizers)
	}
	e.checkCloudMatchesLedger()
}
