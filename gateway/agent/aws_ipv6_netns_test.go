package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/coordinator"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws"
	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	"github.com/egressd/egressd/test/envtest"
	"github.com/egressd/egressd/test/netns"
)

const ec2Table = "edlab_ec2"

// ec2Fabric makes the bed's router follow the EC2 simulator as the VPC does: an address an
// interface holds (primary, secondary IPv4, IPv6) reaches the instance of that interface, and
// a packet an instance sends is forwarded only when its source is an address its interface
// holds (the source/destination check): any other (interface MAC, source) pair is dropped and
// counted. The pairs are matched on the frames the router receives from the nodes.
type ec2Fabric struct {
	sim    *awssim.Server
	topo   *netns.Topology
	nodeOf map[string]*netns.Node // instance ID → node
	dir    string
	mu     sync.Mutex
	routes map[netip.Addr]string // IPv6 address → instance ID
	held   string                // the set elements last applied
}

func (f *ec2Fabric) sync() error {
	st := f.sim.Snapshot()
	f.mu.Lock()
	defer f.mu.Unlock()
	want := map[netip.Addr]string{}
	var held4, held6 []string
	for _, e := range st.ENIs {
		n := f.nodeOf[e.Instance]
		if n == nil {
			continue
		}
		l, err := n.Netlink().LinkByName(n.Link)
		if err != nil {
			return err
		}
		mac := l.Attrs().HardwareAddr.String()
		for _, a := range append([]netip.Addr{e.PrimaryIP}, e.SecondaryIPs...) {
			held4 = append(held4, mac+" . "+a.String())
		}
		for _, a := range e.IPv6s {
			held6 = append(held6, mac+" . "+a.String())
			// The node's own address is on the zone's link already; a /128 route via itself
			// would also make the kernel refuse it as the gateway of the others.
			if a != n.IP6 {
				want[a] = e.Instance
			}
		}
	}
	for a, inst := range want {
		if f.routes[a] == inst {
			continue
		}
		if err := f.topo.RouteToNode(netip.PrefixFrom(a, 128), f.nodeOf[inst]); err != nil {
			return err
		}
		f.routes[a] = inst
	}
	for a := range f.routes {
		if _, ok := want[a]; !ok {
			if err := f.topo.Unroute(netip.PrefixFrom(a, 128)); err != nil {
				return err
			}
			delete(f.routes, a)
		}
	}
	slices.Sort(held4)
	slices.Sort(held6)
	elems := strings.Join(held4, ", ") + "|" + strings.Join(held6, ", ")
	if elems == f.held {
		return nil
	}
	// The table (and its drop counter, which the test reads across moves) is made once; a
	// change of the held pairs replaces the sets' elements in one atomic batch.
	var b strings.Builder
	if f.held == "" {
		fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n  counter srcdst {}\n", ec2Table, ec2Table, ec2Table)
		b.WriteString("  set held4 { type ether_addr . ipv4_addr; }\n  set held6 { type ether_addr . ipv6_addr; }\n")
		b.WriteString("  chain forward {\n    type filter hook forward priority filter - 10; policy accept;\n")
		for _, z := range f.topo.Zones {
			fmt.Fprintf(&b, "    iifname %q meta nfproto ipv4 ether saddr . ip saddr != @held4 counter name \"srcdst\" drop\n", z.RouterLink)
			fmt.Fprintf(&b, "    iifname %q meta nfproto ipv6 ether saddr . ip6 saddr != @held6 counter name \"srcdst\" drop\n", z.RouterLink)
		}
		b.WriteString("  }\n}\n")
	}
	for set, elems := range map[string][]string{"held4": held4, "held6": held6} {
		fmt.Fprintf(&b, "flush set inet %s %s\n", ec2Table, set)
		if len(elems) > 0 {
			fmt.Fprintf(&b, "add element inet %s %s { %s }\n", ec2Table, set, strings.Join(elems, ", "))
		}
	}
	file := filepath.Join(f.dir, "ec2.nft")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if out, err := f.topo.Router.Run("nft", "-f", file); err != nil {
		return fmt.Errorf("applying the EC2 fabric table: %w: %s", err, out)
	}
	f.held = elems
	return nil
}

// dropped is how many packets the fabric's source/destination check dropped.
func (f *ec2Fabric) dropped(t *testing.T) uint64 {
	t.Helper()
	out, err := f.topo.Router.Run("nft", "-j", "list", "counter", "inet", ec2Table, "srcdst")
	must(t, err)
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Packets uint64 `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	must(t, json.Unmarshal(out, &doc))
	for _, x := range doc.Nftables {
		if x.Counter != nil {
			return x.Counter.Packets
		}
	}
	t.Fatalf("no srcdst counter in %s", out)
	return 0
}

// ec2Log records the mutating EC2 actions the simulator receives, in order.
type ec2Log struct {
	mu      sync.Mutex
	actions []string
}

func (l *ec2Log) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err == nil {
			if a := r.Form.Get("Action"); a != "" && !strings.HasPrefix(a, "Describe") {
				l.mu.Lock()
				l.actions = append(l.actions, a)
				l.mu.Unlock()
			}
		}
		h.ServeHTTP(w, r)
	})
}

func (l *ec2Log) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.actions
	l.actions = nil
	return out
}

// TestAWSIPv6EgressNetns runs AWS IPv6 egress IPs end to end on a dual-stack bed: the real
// coordinator with the AWS provider through the SDK on the EC2 simulator (a dual-stack subnet
// whose IPv6 /64 is the bed's zone), the real agents of worker1, gw1 and gw2, and a router
// that applies EC2's rules (ec2Fabric): an IPv6 address reaches only the instance whose
// interface holds it, and a packet from an address the sender's interface does not hold is
// dropped and counted. Pod a's IPv6 TCP, UDP and ICMPv6 to an external IPv6 server leave
// with the group's IPv6 egress IP; cordoning the holder moves it (UnassignIpv6Addresses, then
// AssignIpv6Addresses) to the other gateway, and the same address keeps showing. The pod's
// IPv4 traffic, outside the policy, keeps leaving through its node.
func TestAWSIPv6EgressNetns(t *testing.T) {
	const region, zone = "us-east-1", "us-east-1a"
	topo := netns.New(t, netns.Spec{Routed: true, IsolatedNodes: true,
		Nodes: []netns.NodeSpec{{Name: "worker1", Pods: []netns.PodSpec{{Name: "a"}}}, {Name: "gw1"}, {Name: "gw2"}}})
	s := envtest.Start(t)
	bpffs := t.TempDir()
	must(t, unix.Mount("bpf", bpffs, "bpf", 0, ""))
	t.Cleanup(func() { _ = unix.Unmount(bpffs, unix.MNT_DETACH) })
	c := s.Client
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ext6, ext4 := topo.External.Addr6()[0], topo.External.Addr4()[0]

	// The EC2 side: a VPC with one dual-stack subnet, the bed's zone, and one instance per
	// node whose primary interface holds the node's underlay addresses (its IPv6 one assigned
	// as EC2 does, from the subnet's block).
	sim := awssim.New(region)
	sim.AddInstanceType(awssim.InstanceType{Name: "lab.small", MaxENIs: 2, IPv4PerENI: 4})
	z := topo.Zones[0]
	vpc, err := sim.AddVPC(awssim.VPCSpec{CIDR: "10.0.0.0/16"})
	must(t, err)
	subnet, err := sim.AddSubnet(awssim.SubnetSpec{VPC: vpc, Zone: zone, CIDR: z.Subnet.String(), IPv6CIDR: z.Subnet6.String()})
	must(t, err)
	log := &ec2Log{}
	srv := httptest.NewServer(log.wrap(sim))
	t.Cleanup(srv.Close)
	newProvider := func(ctx context.Context, name string, _ json.RawMessage) (providers.Provider, error) {
		return aws.New(ctx, name, aws.Config{ClusterName: "lab", Region: region, VPC: vpc, Endpoint: srv.URL,
			MaxBackoff: providers.Duration(50 * time.Millisecond)}, aws.WithStaticCredentials("AKIDSIM", "SECRETSIM"))
	}
	fabric := &ec2Fabric{sim: sim, topo: topo, nodeOf: map[string]*netns.Node{}, dir: t.TempDir(), routes: map[netip.Addr]string{}}
	providerID := map[string]string{}
	for _, n := range topo.Nodes {
		in, err := sim.AddInstance(awssim.InstanceSpec{Type: "lab.small", Subnet: subnet, PrivateIP: n.IP.String()})
		must(t, err)
		fabric.nodeOf[in.ID], providerID[n.Name] = n, in.ProviderID
		assignIPv6(ctx, t, srv.URL, in.PrimaryENI, n.IP6)
	}
	log.take()
	must(t, fabric.sync())
	fctx, stopFabric := context.WithCancel(ctx)
	fabricDone := make(chan struct{})
	go func() {
		defer close(fabricDone)
		for {
			if err := fabric.sync(); err != nil {
				t.Errorf("EC2 fabric: %v", err)
				return
			}
			select {
			case <-fctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { stopFabric(); <-fabricDone })

	pa := topo.Pod("a")
	worker := topo.Node("worker1")
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
	type probeFn func(context.Context, netip.Addr) (netip.Addr, error)
	seen := func(f probeFn, dst netip.Addr) (netip.Addr, error) {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		return f(rctx, dst)
	}

	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "egressd-system"}}))
	for _, n := range topo.Nodes {
		labels := map[string]string{corev1.LabelTopologyZone: zone}
		if n.Name != "worker1" {
			labels[egressv1.LabelGateway] = "v6"
		}
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels}, Spec: corev1.NodeSpec{ProviderID: providerID[n.Name]}}
		must(t, c.Create(ctx, node))
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IP.String()}, {Type: corev1.NodeInternalIP, Address: n.IP6.String()}}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		must(t, c.Status().Update(ctx, node))
	}
	for _, n := range topo.Nodes {
		startNetnsAgent(ctx, t, s.Config, n, bpffs)
	}
	cfg, err := coordinator.ParseConfig([]byte("clusterName: lab\nproviders:\n  aws: {type: aws}\n"))
	must(t, err)
	runCoordinator(ctx, t, coordinator.RunOptions{Config: cfg, RestConfig: s.Config, Registry: providers.Registry{aws.Type: newProvider},
		ListenPacket: topo.Router.ListenPacket})

	grace := metav1.Duration{Duration: time.Second}
	must(t, c.Create(ctx, &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "v6"}, Spec: egressv1.EgressGatewaySpec{
		NodeSelector:     metav1.LabelSelector{MatchLabels: map[string]string{egressv1.LabelGateway: "v6"}},
		DrainGracePeriod: &grace,
		Addresses:        egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: aws.Type, Family: egressv1.IPv6}}}}))
	must(t, c.Create(ctx, &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "v6"},
		Spec: egressv1.EgressPolicyRule{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			DestinationCIDRs: []string{netip.PrefixFrom(ext6, 64).Masked().String()}, Gateway: "v6"}}))
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "worker1", Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	must(t, c.Create(ctx, p))
	p.Status.Phase, p.Status.PodIP = corev1.PodRunning, pa.IP.String()
	p.Status.PodIPs = []corev1.PodIP{{IP: pa.IP.String()}, {IP: pa.IP6.String()}}
	must(t, c.Status().Update(ctx, p))

	assigned := func() (*egressv1.EgressIP, *netns.Node) {
		var l egressv1.EgressIPList
		if err := c.List(ctx, &l); err != nil || len(l.Items) != 1 {
			return nil, nil
		}
		e := &l.Items[0]
		if e.Status.Node == "" || e.Status.Node != e.Spec.Node || !meta.IsStatusConditionTrue(e.Status.Conditions, egressv1.ConditionAssigned) {
			return nil, nil
		}
		return e, gws[e.Status.Node]
	}
	var e *egressv1.EgressIP
	var holder *netns.Node
	waitFor("the IPv6 EgressIP assigned", 60*time.Second, func() bool { e, holder = assigned(); return holder != nil })
	eip := netip.MustParseAddr(e.Spec.IP)
	if !eip.Is6() || !z.Subnet6.Contains(eip) {
		t.Fatalf("egress IP %s, want an IPv6 address of the subnet's block %s", eip, z.Subnet6)
	}
	if h, ok := sim.Holder(vpc, eip); !ok || fabric.nodeOf[h.Instance] != holder {
		t.Fatalf("the simulator has %s on %+v, the ledger on %s", eip, h, holder.Name)
	}
	t.Logf("IPv6 egress IP %s on %s; EC2 calls to place it: %v", eip, holder.Name, log.take())

	// count sends n rounds of IPv6 TCP, UDP and ICMPv6 and returns how many of each family
	// were seen from the egress IP; any other source fails the test.
	probes := []struct {
		name string
		f    probeFn
	}{{"TCP", pa.HTTPGet}, {"UDP", pa.UDPEcho}, {"ICMPv6", pa.Ping}}
	count := func(rounds int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range rounds {
			for _, pr := range probes {
				src, err := seen(pr.f, ext6)
				if err != nil {
					t.Fatalf("pod a → %s over %s: %v", ext6, pr.name, err)
				}
				if src != eip {
					t.Fatalf("pod a → %s over %s seen from %s, want the egress IP %s", ext6, pr.name, src, eip)
				}
				got[pr.name]++
			}
		}
		return got
	}
	waitFor("pod a reaching "+ext6.String()+" from "+eip.String(), 30*time.Second, func() bool {
		src, err := seen(pa.HTTPGet, ext6)
		return err == nil && src == eip
	})
	before := count(10)
	t.Logf("before the move: seen from %s: %v", eip, before)
	if src, err := seen(pa.HTTPGet, ext4); err != nil || src != worker.IP {
		t.Fatalf("pod a → %s (IPv4, outside the policy): seen from %v (%v), want its node %s", ext4, src, err, worker.IP)
	}

	// A wrong source fails: the egress IP from the gateway that does not hold it is dropped by
	// the fabric (the move's proof rests on this).
	other := gws["gw1"]
	if other == holder {
		other = gws["gw2"]
	}
	// Resolve the zone's gateway first from other's own address, so that the SYN leaves at once
	// (not behind a neighbour solicitation sourced from the egress IP).
	// (A SYN to a closed port of the router: its reset comes back once the neighbour is known.)
	must(t, other.Do(func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: other.IP6.AsSlice()}, Timeout: 2 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(z.Gateway6, 9).String())
		if err == nil {
			_ = conn.Close()
		}
		if err != nil && !errors.Is(err, unix.ECONNREFUSED) {
			return fmt.Errorf("%s reaching the zone's gateway %s: %w", other.Name, z.Gateway6, err)
		}
		return nil
	}))
	drops := fabric.dropped(t)
	must(t, other.AddAddr(other.Link, netip.PrefixFrom(eip, 128)))
	err = other.Do(func() error {
		// Under the initial retransmission timeout (1s): one SYN, none left in flight to be
		// counted after the counter is read.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: eip.AsSlice()}, Timeout: 500 * time.Millisecond}
		conn, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(ext6, netns.HTTPPort).String())
		if err == nil {
			_ = conn.Close()
		}
		return err
	})
	must(t, other.DelAddr(other.Link, netip.PrefixFrom(eip, 128)))
	if err == nil {
		t.Fatalf("a connection from %s on %s, which does not hold it, got through", eip, other.Name)
	}
	if after := fabric.dropped(t); after <= drops {
		t.Fatalf("the fabric's source/destination check counter went %d → %d: the wrong-source SYN was not what failed (%v)", drops, after, err)
	}
	drops = fabric.dropped(t)

	// Cordon the holder: the address moves to the other gateway, an unassign then an assign.
	node := &corev1.Node{}
	must(t, c.Get(ctx, ctrlKey(holder.Name), node))
	node.Spec.Unschedulable = true
	must(t, c.Update(ctx, node))
	waitFor("the EgressIP moved to "+other.Name, 60*time.Second, func() bool { e, _ = assigned(); return e != nil && e.Status.Node == other.Name })
	if e.Spec.IP != eip.String() {
		t.Fatalf("after the move the EgressIP is %s, want %s", e.Spec.IP, eip)
	}
	if h, ok := sim.Holder(vpc, eip); !ok || fabric.nodeOf[h.Instance] != other {
		t.Fatalf("the simulator has %s on %+v after the move, want %s", eip, h, other.Name)
	}
	moveCalls := log.take()
	t.Logf("EC2 calls of the move: %v", moveCalls)
	un, as := slices.Index(moveCalls, "UnassignIpv6Addresses"), slices.Index(moveCalls, "AssignIpv6Addresses")
	if un < 0 || as < 0 || un > as {
		t.Fatalf("the move's EC2 calls %v: want UnassignIpv6Addresses, then AssignIpv6Addresses", moveCalls)
	}
	waitFor("pod a reaching "+ext6.String()+" from "+eip.String()+" through "+other.Name, 30*time.Second, func() bool {
		src, err := seen(pa.HTTPGet, ext6)
		return err == nil && src == eip
	})
	waitFor(holder.Name+" letting go of "+eip.String(), 10*time.Second, func() bool { return !holds(t, holder, eip) })
	// During the move a packet or two from the address can meet the fabric before it follows
	// the simulator (the old holder until its agent unmounts the address, the new one until
	// the fabric's next sync): counted, not failed. Once the move settled, none.
	moveDrops := fabric.dropped(t) - drops
	drops = fabric.dropped(t)
	after := count(10)
	t.Logf("after the move to %s: seen from %s: %v", other.Name, eip, after)
	if src, err := seen(pa.HTTPGet, ext4); err != nil || src != worker.IP {
		t.Fatalf("pod a → %s (IPv4) after the move: seen from %v (%v), want its node %s", ext4, src, err, worker.IP)
	}
	if d := fabric.dropped(t); d != drops {
		t.Fatalf("the fabric dropped %d packets for a source their sender does not hold after the move settled", d-drops)
	}
	t.Logf("fabric source/destination drops during the move: %d; after it settled: 0", moveDrops)
}

// assignIPv6 assigns ip to the interface eni through the simulator's EC2 API, as EC2 gives
// an instance's primary interface its IPv6 address.
func assignIPv6(ctx context.Context, t *testing.T, url, eni string, ip netip.Addr) {
	t.Helper()
	form := fmt.Sprintf("Action=AssignIpv6Addresses&Version=2016-11-15&NetworkInterfaceId=%s&Ipv6Addresses.1=%s", eni, ip)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(form))
	must(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("assigning %s to %s: %s", ip, eni, resp.Status)
	}
}
