package agent_test

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/coordinator"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/gcp"
	gcpsim "github.com/egressd/egressd/test/cloudsim/gcp"
	"github.com/egressd/egressd/test/cloudsim/gcp/gcefabric"
	"github.com/egressd/egressd/test/envtest"
	"github.com/egressd/egressd/test/netns"
)

// The GCE bed's outside: the internet, where the access configs' NAT applies, and an
// on-premises network reached without NAT.
var internetDst, onPremDst = gcefabric.Internet, gcefabric.OnPrem

// TestGCPPublicEgressNetns runs GCP public egress end to end: the real coordinator with the GCP
// provider on the Compute simulator, the real agents of worker1, gw1 and gw2 in their
// namespaces, and a router that applies GCE's rules (gcefabric). The coordinator gives the
// group's egress IP an alias on one gateway and a static external address through that NIC's
// access config; the holder SNATs pod a's internet-bound flows to its primary address, which
// the access config translates, and its on-premises flows to the alias. A packet sent to the
// internet from the alias itself (what the gateway did before status.publicNATSource) is
// dropped by the fabric. Cordoning the holder moves the alias and the access config to the
// other gateway: the same external address keeps showing. Deleting the group releases both.
func TestGCPPublicEgressNetns(t *testing.T) {
	const project, zone = "lab-proj", "us-central1-a"
	topo := netns.New(t, netns.Spec{Routed: true, IsolatedNodes: true, NoIPv6: true,
		External: []netip.Prefix{internetDst, onPremDst},
		Nodes:    []netns.NodeSpec{{Name: "worker1", Pods: []netns.PodSpec{{Name: "a"}}}, {Name: "gw1"}, {Name: "gw2"}}})
	s := envtest.Start(t)
	bpffs := t.TempDir()
	must(t, unix.Mount("bpf", bpffs, "bpf", 0, ""))
	t.Cleanup(func() { _ = unix.Unmount(bpffs, unix.MNT_DETACH) })
	c := s.Client
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The Compute side: one subnetwork (the bed's zone), one instance per node whose primary
	// address is the node's underlay address, no external IPs.
	sim := gcpsim.New()
	z := topo.Zones[0]
	seed := gcpsim.ProjectSeed{ID: project, Subnets: []gcpsim.SubnetSeed{{Name: "nodes", Region: "us-central1", CIDR: z.Subnet.String()}}}
	nodeOf := map[string]*netns.Node{}
	for _, n := range topo.Nodes {
		seed.Instances = append(seed.Instances, gcpsim.InstanceSeed{Name: n.Name, Zone: zone, NICs: []gcpsim.NICSeed{{Subnet: "nodes", NetworkIP: n.IP.String()}}})
		nodeOf[gcefabric.InstanceKey(project, zone, n.Name)] = n
	}
	must(t, sim.Seed(seed))
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	fabric := gcefabric.New(sim, topo, nodeOf, internetDst, t.TempDir())
	must(t, fabric.Sync())
	fctx, stopFabric := context.WithCancel(ctx)
	fabricDone := make(chan struct{})
	go func() { defer close(fabricDone); fabric.Run(fctx, 20*time.Millisecond) }()
	t.Cleanup(func() {
		stopFabric()
		<-fabricDone
		if err := fabric.Err(); err != nil {
			t.Errorf("GCE fabric: %v", err)
		}
	})
	untranslated := func() uint64 {
		t.Helper()
		n, err := fabric.Untranslated()
		must(t, err)
		return n
	}

	pa := topo.Pod("a")
	gws := map[string]*netns.Node{"gw1": topo.Node("gw1"), "gw2": topo.Node("gw2")}
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
	seenFrom := func(dst netip.Addr) (netip.Addr, error) {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		return pa.HTTPGet(rctx, dst)
	}

	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "egressd-system"}}))
	for _, n := range topo.Nodes {
		labels := map[string]string{corev1.LabelTopologyZone: zone}
		if n.Name != "worker1" {
			labels[egressv1.LabelGateway] = "pub"
		}
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels},
			Spec: corev1.NodeSpec{ProviderID: "gce://" + project + "/" + zone + "/" + n.Name}}
		must(t, c.Create(ctx, node))
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IP.String()}}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		must(t, c.Status().Update(ctx, node))
	}
	for _, n := range topo.Nodes {
		startNetnsAgent(ctx, t, s.Config, n, bpffs)
	}
	cfg, err := coordinator.ParseConfig(fmt.Appendf(nil, "clusterName: lab\nproviders:\n  gcp: {project: %s, endpoint: %q, withoutAuthentication: true}\n", project, srv.URL))
	must(t, err)
	runCoordinator(ctx, t, coordinator.RunOptions{Config: cfg, RestConfig: s.Config, Registry: providers.Registry{gcp.Type: gcp.Constructor},
		ListenPacket: topo.Router.ListenPacket})

	grace := metav1.Duration{Duration: time.Second}
	must(t, c.Create(ctx, &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "pub"}, Spec: egressv1.EgressGatewaySpec{
		NodeSelector:     metav1.LabelSelector{MatchLabels: map[string]string{egressv1.LabelGateway: "pub"}},
		DrainGracePeriod: &grace,
		Addresses:        egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: gcp.Type, Public: true}}}}))
	must(t, c.Create(ctx, &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "pub"},
		Spec: egressv1.EgressPolicyRule{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			DestinationCIDRs: []string{internetDst.Masked().String(), onPremDst.Masked().String()}, Gateway: "pub"}}))
	createRunningPod(ctx, t, c, "a", "worker1", pa.IP)

	// The one EgressIP of the group, assigned with its public IP and the NAT source.
	assigned := func() (*egressv1.EgressIP, *netns.Node) {
		var l egressv1.EgressIPList
		if err := c.List(ctx, &l); err != nil || len(l.Items) != 1 {
			return nil, nil
		}
		e := &l.Items[0]
		if e.Status.Node == "" || e.Status.Node != e.Spec.Node || e.Status.PublicIP == "" || !meta.IsStatusConditionTrue(e.Status.Conditions, egressv1.ConditionAssigned) {
			return nil, nil
		}
		return e, gws[e.Status.Node]
	}
	var e *egressv1.EgressIP
	var holder *netns.Node
	waitFor("the EgressIP assigned with a public IP", 60*time.Second, func() bool { e, holder = assigned(); return holder != nil })
	alias, public := netip.MustParseAddr(e.Spec.IP), netip.MustParseAddr(e.Status.PublicIP)
	if e.Status.PublicNATSource != holder.IP.String() {
		t.Fatalf("status.publicNATSource %q, want the holder %s's primary address %s", e.Status.PublicNATSource, holder.Name, holder.IP)
	}
	if nat, ok := sim.Egress(holder.IP.String()); !ok || nat != public.String() {
		t.Fatalf("the simulator translates %s to %q (%v), want %s", holder.IP, nat, ok, public)
	}
	t.Logf("egress IP %s on %s, public IP %s translated from %s", alias, holder.Name, public, holder.IP)
	waitFor("pod a reaching the internet with "+public.String(), 30*time.Second, func() bool {
		src, err := seenFrom(internetDst.Addr())
		return err == nil && src == public
	})
	if src, err := seenFrom(onPremDst.Addr()); err != nil || src != alias {
		t.Fatalf("pod a → on-premises %s: seen from %v (%v), want the alias %s", onPremDst.Addr(), src, err, alias)
	}

	// A wrong source fails: from the alias the internet is unreachable, the fabric drops it.
	before := untranslated()
	err = holder.Do(func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: alias.AsSlice()}, Timeout: 2 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(internetDst.Addr(), netns.HTTPPort).String())
		if err == nil {
			_ = conn.Close()
		}
		return err
	})
	if err == nil {
		t.Fatalf("a connection from the alias %s reached the internet: GCE translates only the primary address", alias)
	}
	if after := untranslated(); after <= before {
		t.Fatalf("the fabric's untranslated counter went %d → %d: the alias-sourced SYN was not what failed", before, after)
	}

	// Cordon the holder: the alias and the access config move to the other gateway, and the
	// same public IP keeps showing, now translated from the other's primary address.
	other := gws["gw1"]
	if other == holder {
		other = gws["gw2"]
	}
	node := &corev1.Node{}
	must(t, c.Get(ctx, ctrlKey(holder.Name), node))
	node.Spec.Unschedulable = true
	must(t, c.Update(ctx, node))
	waitFor("the EgressIP moved to "+other.Name, 60*time.Second, func() bool { e, _ = assigned(); return e != nil && e.Status.Node == other.Name })
	if e.Status.PublicIP != public.String() || e.Status.PublicNATSource != other.IP.String() {
		t.Fatalf("after the move: public IP %s from %s, want %s from %s", e.Status.PublicIP, e.Status.PublicNATSource, public, other.IP)
	}
	if nat, ok := sim.Egress(holder.IP.String()); ok {
		t.Fatalf("the old holder's primary %s still leaves with %s", holder.IP, nat)
	}
	waitFor("pod a reaching the internet with "+public.String()+" through "+other.Name, 30*time.Second, func() bool {
		src, err := seenFrom(internetDst.Addr())
		return err == nil && src == public
	})
	waitFor("pod a reaching on-premises with the alias through "+other.Name, 10*time.Second, func() bool {
		src, err := seenFrom(onPremDst.Addr())
		return err == nil && src == alias
	})
	waitFor(holder.Name+" letting go of "+alias.String(), 10*time.Second, func() bool { return !holds(t, holder, alias) })

	// Delete the group: released, the external address with it.
	must(t, c.Delete(ctx, &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "pub"}}))
	waitFor("the EgressIP released", 60*time.Second, func() bool {
		err := c.Get(ctx, ctrlKey(egressv1.EgressIPName(alias)), &egressv1.EgressIP{})
		return apierrors.IsNotFound(err)
	})
	if nat, ok := sim.Egress(other.IP.String()); ok {
		t.Fatalf("after the release %s still leaves with %s", other.IP, nat)
	}
	if n := sim.AddressCount("EXTERNAL"); n != 0 {
		t.Fatalf("%d external addresses left after the release", n)
	}
}
