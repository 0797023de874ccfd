package agent_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/agent"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
	"github.com/egressd/egressd/test/envtest"
)

// heldApplies is a recorder whose Apply of a state serving a group waits until release is
// closed: a gateway's datapath that is slow to take up a newly proven address.
type heldApplies struct {
	*recorder
	held    chan struct{} // closed when such an Apply starts waiting
	release chan struct{}
}

func (h *heldApplies) Apply(ctx context.Context, s dataplane.State) error {
	if s.Gateway != nil && len(s.Gateway.Groups) > 0 {
		select {
		case <-h.held:
		default:
			close(h.held)
		}
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.recorder.Apply(ctx, s)
}

// TestDeliveryPublishedAfterApply: the coordinator lists a gateway Active for a cloud address
// once the gateway's Lease carries its delivery proof, and workers then send it new flows. So
// the agent publishes a proof only once the Apply that serves the address has returned: while
// that Apply is under way, the Lease keeps renewing without it. (Publishing the proof as soon
// as it was made raced the gateway's own Apply; when the coordinator and a worker won, the
// worker's new flows reached a gateway that did not serve the address yet.)
func TestDeliveryPublishedAfterApply(t *testing.T) {
	s := envtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := s.Client

	// gw2 is the peer that answers gw1's proving probes: a responder on its loopback address.
	conn, err := net.ListenPacket("udp4", gw2IP.String()+":0")
	must(t, err)
	port := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
	go func() { _ = probe.NewResponder(conn).Run(ctx) }()
	// The egress IP is a loopback address too, so the proof's socket can bind it.
	egress := netip.MustParseAddr("127.0.0.51")

	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "egressd-system"}}))
	for _, n := range []struct {
		name, zone string
		ip         netip.Addr
	}{{"gw1", "a", gw1IP}, {"gw2", "b", gw2IP}} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{corev1.LabelTopologyZone: n.zone}}}
		must(t, c.Create(ctx, node))
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.ip.String()}}
		must(t, c.Status().Update(ctx, node))
	}
	gw := &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "out"},
		Spec: egressv1.EgressGatewaySpec{Addresses: egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: "aws"}}}}
	must(t, c.Create(ctx, gw))
	gw.Status = egressv1.EgressGatewayStatus{GroupID: 7, Zones: []egressv1.ZoneStatus{
		{Name: "a", Gateways: []egressv1.GatewayNodeStatus{{Node: "gw1", State: egressv1.GatewayStandby, UnderlayIP: gw1IP.String()}}},
		{Name: "b", Gateways: []egressv1.GatewayNodeStatus{{Node: "gw2", State: egressv1.GatewayActive, UnderlayIP: gw2IP.String()}}},
	}}
	must(t, c.Status().Update(ctx, gw))
	e := &egressv1.EgressIP{ObjectMeta: metav1.ObjectMeta{Name: egress.String()},
		Spec: egressv1.EgressIPSpec{IP: egress.String(), Gateway: "out", Zone: "a", Provider: "aws", Node: "gw1"}}
	must(t, c.Create(ctx, e))
	e.Status.Node = "gw1"
	must(t, c.Status().Update(ctx, e))
	must(t, c.Get(ctx, types.NamespacedName{Name: e.Name}, e))
	proof := fmt.Sprintf("%s@%d", egress, e.Generation)

	mgr, err := agent.NewManager(s.Config, agent.ManagerOptions{NodeName: "gw1", MetricsBindAddress: "0", HealthProbeBindAddress: "0"})
	must(t, err)
	dp := &heldApplies{recorder: newRecorder(), held: make(chan struct{}), release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(dp.release)
		}
	}()
	_, err = agent.Setup(mgr, agent.Config{NodeName: "gw1", ProbePort: port, ProbeAddress: gw1IP.String() + ":0",
		Dataplane: dp, Registerer: prometheus.NewRegistry(), LeaseInterval: 100 * time.Millisecond,
		Interfaces: func() ([]agent.Interface, error) {
			return []agent.Interface{{Name: "lo", Addrs: []netip.Addr{gw1IP, egress}}}, nil
		}})
	must(t, err)
	defer runManager(log.IntoContext(ctx, zap.New(zap.UseDevMode(true))), t, mgr, "agent gw1")()

	leaseKey := types.NamespacedName{Namespace: contract.DefaultNamespace, Name: contract.AgentLeaseName("gw1")}
	lease := func() (*coordinationv1.Lease, bool) {
		l := &coordinationv1.Lease{}
		if err := c.Get(ctx, leaseKey, l); err != nil || l.Spec.RenewTime == nil {
			return nil, false
		}
		return l, true
	}

	// The proof is made (gw2 answered a probe sent from the address) and the state serving the
	// address is being applied.
	select {
	case <-dp.held:
	case <-ctx.Done():
		t.Fatal("the agent never applied a state serving the egress IP (no proof made?)")
	}
	heldAt := time.Now()
	for {
		l, ok := lease()
		if ok && l.Spec.RenewTime.After(heldAt) {
			if got := l.Annotations[contract.DeliveredAnnotation]; strings.Contains(got, proof) {
				t.Fatalf("the Lease carries the proof %s (annotation %q) while the Apply serving the address has not returned", proof, got)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no Lease renewal while the Apply was held")
		}
		time.Sleep(20 * time.Millisecond)
	}

	close(dp.release)
	released = true
	for {
		if l, ok := lease(); ok && strings.Contains(l.Annotations[contract.DeliveredAnnotation], proof) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the Lease never carried the proof %s after the Apply serving the address", proof)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
