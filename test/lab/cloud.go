package lab

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/gateway/contract"
	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	"github.com/egressd/egressd/test/cloudsim/gcp/gcefabric"
	"github.com/egressd/egressd/test/cloudsim/simkit"
	"github.com/egressd/egressd/test/netns"
)

// routerPoll is how often the VPC router reads the simulator's holdings. EC2 applies an
// assignment within a second or so; 20 ms keeps the lab's share of any measured failover
// negligible while costing one in-process call.
const routerPoll = 20 * time.Millisecond

// eipTable is the nftables table (family ip) in the router namespace holding the Elastic IPs'
// 1:1 NAT and the source/destination check.
const eipTable = "edlab_eip"

func (l *Lab) buildTopology(ctx context.Context) error {
	c := l.Config
	// Dual-stack like the bed's default: the agent sets up IPv6 routes on every node too.
	spec := netns.Spec{Prefix: Prefix, Routed: true, IsolatedNodes: true}
	for i := range c.Zones {
		spec.Zones = append(spec.Zones, netns.ZoneSpec{Name: c.zone(i)})
	}
	if c.Cloud == CloudGCP {
		// Outside GCE's VPC: the internet, where the access configs' NAT applies, and an
		// on-premises network reached without NAT. The default's documentation ranges are
		// egressv1.DefaultPrivateCIDRs, and where the simulator draws external addresses.
		spec.External = []netip.Prefix{gcefabric.Internet, gcefabric.OnPrem}
	}
	spec.Nodes = c.nodeSpecs()
	topo, err := netns.Build(ctx, spec)
	if err != nil {
		return err
	}
	l.Topo = topo
	for _, n := range topo.Nodes {
		if n.Name == ControlPlane {
			l.CP = n
			continue
		}
		l.Nodes = append(l.Nodes, &Node{Node: n, Gateway: strings.HasPrefix(n.Name, "gw-")})
	}
	l.setMonitors()
	l.Echo = topo.External.Addr4()[0]
	if c.Cloud == CloudGCP {
		l.OnPrem = topo.External.Addr4()[1]
	}
	return nil
}

// startSimulator starts the configured cloud's simulator: startEC2 or startGCE.
func (l *Lab) startSimulator(ctx context.Context) error {
	if l.Config.Cloud == CloudGCP {
		return l.startGCE(ctx)
	}
	return l.startEC2(ctx)
}

// startEC2 runs the EC2 simulator in-process on loopback, seeds it (SeedVPC), serves each
// node's instance metadata at 169.254.169.254 inside its namespace, and starts the VPC router
// that follows the simulator.
func (l *Lab) startEC2(context.Context) error {
	l.Sim = awssim.New(Region)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	l.SimAddr = ln.Addr().String()
	l.serve(ln, l.Sim)

	nodes := []*netns.Node{}
	for _, n := range l.Nodes {
		nodes = append(nodes, n.Node)
	}
	vpc, instances, err := SeedVPC(l.Sim, l.Topo, append(nodes, l.CP), l.Config.InstanceType, ClusterName)
	if err != nil {
		return err
	}
	l.VPC = vpc
	for i, n := range l.Nodes {
		n.Instance, n.ProviderID = instances[i], instances[i].ProviderID
	}
	for i, n := range append(nodes, l.CP) {
		if err := l.serveIMDS(n.Namespace, instances[i].ID); err != nil {
			return err
		}
	}
	// Timing starts once the bed is seeded: launching it is not what the lab measures.
	p, err := simkit.ParseProfile(l.Config.Timing)
	if err != nil {
		return err
	}
	seed := l.Sim.SetTiming(p, l.Config.TimingSeed)
	fmt.Fprintf(l.Config.Log, "EC2 simulator timing: %v, seed %d\n", p, seed)
	l.router = NewRouter(l.Sim, l.Topo, nodes, instances, l.workDir)
	if err := l.router.Sync(); err != nil {
		return err
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.router.Run(l.ctx)
	}()
	return nil
}

// SeedVPC seeds sim with the bed's cloud side: a VPC (10.0.0.0/16) with one subnet per bed
// zone tagged for cluster, and one instance of instanceType per node whose primary address is
// the node's underlay address. It gives each node's underlay link its ENI's MAC, so that
// interfaceMAC in EgressIP status names a real interface. Instances come in the order of nodes.
func SeedVPC(sim *awssim.Server, topo *netns.Topology, nodes []*netns.Node, instanceType, cluster string) (string, []awssim.Instance, error) {
	vpc, err := sim.AddVPC(awssim.VPCSpec{CIDR: "10.0.0.0/16"})
	if err != nil {
		return "", nil, err
	}
	subnets := map[string]string{}
	for _, z := range topo.Zones {
		id, err := sim.AddSubnet(awssim.SubnetSpec{VPC: vpc, Zone: z.Name, CIDR: z.Subnet.String(),
			Tags: map[string]string{"kubernetes.io/cluster/" + cluster: "shared"}})
		if err != nil {
			return "", nil, err
		}
		subnets[z.Name] = id
	}
	var instances []awssim.Instance
	for _, n := range nodes {
		in, err := sim.AddInstance(awssim.InstanceSpec{Type: instanceType, Subnet: subnets[n.Zone.Name],
			PrivateIP: n.IP.String(), Tags: map[string]string{"Name": n.Name, "kubernetes.io/cluster/" + cluster: "owned"}})
		if err != nil {
			return "", nil, fmt.Errorf("launching %s: %w", n.Name, err)
		}
		if err := setMAC(n, in.MAC); err != nil {
			return "", nil, err
		}
		instances = append(instances, in)
	}
	return vpc, instances, nil
}

func setMAC(n *netns.Node, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("parsing MAC %q: %w", mac, err)
	}
	link, err := n.Netlink().LinkByName(n.Link)
	if err != nil {
		return err
	}
	if err := n.Netlink().LinkSetHardwareAddr(link, hw); err != nil {
		// Drivers without live MAC change need the link down.
		_ = n.Netlink().LinkSetDown(link)
		err = n.Netlink().LinkSetHardwareAddr(link, hw)
		if uerr := n.Netlink().LinkSetUp(link); err == nil {
			err = uerr
		}
		if err != nil {
			return fmt.Errorf("setting %s's MAC to %s: %w", n.Name, mac, err)
		}
		// The link went down: the default route went with it.
		for _, z := range []netip.Addr{n.Zone.Gateway} {
			if err := n.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), z, n.Link); err != nil {
				return err
			}
		}
	}
	return nil
}

// serveIMDS serves instance metadata for one instance at 169.254.169.254:80 inside ns.
func (l *Lab) serveIMDS(ns *netns.Namespace, instanceID string) error {
	return l.serveMetadata(ns, l.Sim.IMDSHandler(instanceID))
}

// serveMetadata serves h at IMDSAddr:80 inside ns, on its lo as the hypervisor answers there.
func (l *Lab) serveMetadata(ns *netns.Namespace, h http.Handler) error {
	if err := ns.AddAddr("lo", netip.MustParsePrefix(IMDSAddr+"/32")); err != nil {
		return fmt.Errorf("adding %s to lo in %s: %w", IMDSAddr, ns.Name, err)
	}
	ln, err := ns.Listen("tcp", IMDSAddr+":80")
	if err != nil {
		return err
	}
	l.serve(ln, h)
	return nil
}

func (l *Lab) serve(ln net.Listener, h http.Handler) {
	s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	l.servers = append(l.servers, s)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		_ = s.Serve(ln)
	}()
}

// Router makes a bed's VPC router follow the EC2 simulator's fabric view
// (awssim.Server.FabricHoldings: what the network delivers, which lags what the API accepted
// by each change's propagation delay): a secondary private address reaches only the node
// whose instance the fabric delivers it to (RouteToNode), a released one reaches nobody
// (Unroute), and an Elastic IP is a 1:1 NAT at the router's edge towards the outside (ext0).
// It enforces EC2's source/destination check: a packet from a node with a VPC source address
// passes only if the fabric delivers that address to the node's instance, else it is dropped
// and counted (UndeliveredSources). The lab and the real-cluster e2e suite (test/e2e) use it.
type Router struct {
	sim    *awssim.Server
	topo   *netns.Topology
	nodeOf map[string]*netns.Node // instance ID → bed node
	dir    string                 // where the nftables files go
	mu     sync.Mutex
	routes map[netip.Addr]string     // private IP → node
	nat    map[netip.Addr]netip.Addr // private IP → public IP
	held   map[netip.Addr]netip.Addr // private IPs the fabric delivers to an instance (values unused)
	srcOK  map[srcKey]bool           // (node MAC, address) pairs the source check passes
	macOf  map[string]string         // instance ID → MAC of its primary interface (the node's link)
	made   bool                      // the table exists (later syncs update it in place)
	gen    uint64                    // fabric generation last applied
	synced bool                      // gen was applied without error
	err    error                     // last sync error, for Status
	syncs  int
}

// srcKey is a node's link MAC and a source address it may send from.
type srcKey struct {
	mac string
	ip  netip.Addr
}

// NewRouter returns the router of topo following sim, for the nodes whose instances are given
// (in the same order); dir holds the router's nftables file. Call Sync or Run.
func NewRouter(sim *awssim.Server, topo *netns.Topology, nodes []*netns.Node, instances []awssim.Instance, dir string) *Router {
	r := &Router{sim: sim, topo: topo, nodeOf: map[string]*netns.Node{}, dir: dir,
		routes: map[netip.Addr]string{}, nat: map[netip.Addr]netip.Addr{}, macOf: map[string]string{}}
	for i, n := range nodes {
		r.nodeOf[instances[i].ID] = n
	}
	for _, in := range instances {
		r.macOf[in.ID] = in.MAC
	}
	return r
}

// Run syncs whenever the simulator's fabric view changes, and every routerPoll, until ctx ends.
func (r *Router) Run(ctx context.Context) {
	t := time.NewTicker(routerPoll)
	defer t.Stop()
	for {
		changed := r.sim.FabricChanged()
		err := r.Sync()
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// Sync applies the simulator's fabric view. It costs one lock of the simulator when the view
// has not changed since the last successful sync.
func (r *Router) Sync() error {
	gen := r.sim.FabricGeneration()
	r.mu.Lock()
	if r.synced && gen == r.gen {
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()
	holdings := r.sim.FabricHoldings()
	wantRoutes := map[netip.Addr]*netns.Node{}
	wantNAT := map[netip.Addr]netip.Addr{}
	held := map[netip.Addr]netip.Addr{}
	srcOK := map[srcKey]bool{}
	for _, h := range holdings {
		if h.Instance == "" {
			continue // on an unattached interface: delivered to nobody
		}
		held[h.PrivateIP] = netip.Addr{}
		if h.PublicIP.IsValid() {
			wantNAT[h.PrivateIP] = h.PublicIP
		}
		if mac := r.mac(h.Instance); mac != "" {
			srcOK[srcKey{mac, h.PrivateIP}] = true
		}
		if h.Primary {
			continue // the bed routes node addresses itself
		}
		if n := r.nodeOf[h.Instance]; n != nil {
			wantRoutes[h.PrivateIP] = n
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncs++
	var errs []error
	for ip, n := range wantRoutes {
		if r.routes[ip] == n.Name {
			continue
		}
		if err := r.topo.RouteToNode(netip.PrefixFrom(ip, 32), n); err != nil {
			errs = append(errs, err)
			continue
		}
		r.routes[ip] = n.Name
	}
	for ip := range r.routes {
		if _, ok := wantRoutes[ip]; ok {
			continue
		}
		if err := r.topo.Unroute(netip.PrefixFrom(ip, 32)); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(r.routes, ip)
	}
	if !r.made || !mapsEqual(wantNAT, r.nat) || !mapsEqual(held, r.held) || !maps.Equal(srcOK, r.srcOK) {
		if err := r.applyTable(held, wantNAT, srcOK); err != nil {
			errs = append(errs, err)
		} else {
			r.nat, r.held, r.srcOK, r.made = wantNAT, held, srcOK, true
		}
	}
	err := errors.Join(errs...)
	r.gen, r.synced = gen, err == nil
	return err
}

// mac returns the MAC of an instance's primary interface, which the bed gave the node's link
// (SeedVPC); instances launched after the router was built are looked up once.
func (r *Router) mac(instance string) string {
	r.mu.Lock()
	m, ok := r.macOf[instance]
	r.mu.Unlock()
	if ok {
		return m
	}
	for _, in := range r.sim.Snapshot().Instances {
		if in.ID == instance {
			m = in.MAC
		}
	}
	r.mu.Lock()
	r.macOf[instance] = m
	r.mu.Unlock()
	return m
}

// Routes returns the router's current view: private IP → node, private IP → public IP, and
// the last sync error.
func (r *Router) Routes() (map[netip.Addr]string, map[netip.Addr]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.routes), maps.Clone(r.nat), r.err
}

// Routes returns the router's current view: private IP → node, private IP → public IP (the
// GCP lab: alias IP → node, and no private → public pairs: the access configs translate the
// nodes' primary addresses, see Lab.GCEFabric).
func (l *Lab) Routes() (map[netip.Addr]string, map[netip.Addr]netip.Addr, error) {
	if l.fabric != nil {
		return l.gceRoutes()
	}
	return l.router.Routes()
}

// SyncRouter applies the simulator's current fabric view to the router now (tests).
func (l *Lab) SyncRouter() error {
	if l.fabric != nil {
		return l.fabric.Sync()
	}
	return l.router.Sync()
}

// Moves returns the EC2 simulator's move log, oldest first: every change of an address's
// holder (or Elastic IP), when the API accepted it and when the fabric delivered it. The GCP
// lab has none (its simulator's log: GCE.Events).
func (l *Lab) Moves() []awssim.Move {
	if l.Sim == nil {
		return nil
	}
	return l.Sim.Moves()
}

// errNoSourceCheck: the GCP lab's fabric checks sources only towards the internet
// (GCEFabric().Untranslated).
var errNoSourceCheck = errors.New("the GCP lab's router has no per-node source check (see GCEFabric)")

// UndeliveredSources returns the router's source-check drops: packets a node sent from a VPC
// address the fabric had not delivered to it (held by another node, not yet propagated, or
// released), by node and address, since the lab started.
func (l *Lab) UndeliveredSources() ([]UndeliveredSource, error) {
	if l.router == nil {
		return nil, errNoSourceCheck
	}
	return l.router.UndeliveredSources()
}

// UndeliveredProbes: Router.UndeliveredProbes.
func (l *Lab) UndeliveredProbes() ([]UndeliveredSource, error) {
	if l.router == nil {
		return nil, errNoSourceCheck
	}
	return l.router.UndeliveredProbes()
}

func mapsEqual(a, b map[netip.Addr]netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// UndeliveredSource counts the packets the source check dropped from one node with one source
// address the fabric had not delivered to that node.
type UndeliveredSource struct {
	// Node is the bed node whose link sent them (its MAC when no node of the router has it).
	Node    string     `json:"node"`
	IP      netip.Addr `json:"ip"`
	Packets uint64     `json:"packets"`
	Bytes   uint64     `json:"bytes"`
}

// UndeliveredSources reads the source check's per-(node, address) counters back from the
// router's nftables set, sorted by node and address: every packet but egressd's own delivery
// probes (UndeliveredProbes).
func (r *Router) UndeliveredSources() ([]UndeliveredSource, error) {
	return r.undelivered("undelivered")
}

// UndeliveredProbes counts, like UndeliveredSources, the delivery probes (UDP to the probe
// port) a node sent from an address before the fabric delivered it there: the agents' proofs
// that the address has landed, dropped by the source check by design.
func (r *Router) UndeliveredProbes() ([]UndeliveredSource, error) {
	return r.undelivered("undelivered_probes")
}

func (r *Router) undelivered(set string) ([]UndeliveredSource, error) {
	elems, err := r.topo.Router.NFTSetCounters("ip", eipTable, set)
	if err != nil {
		return nil, fmt.Errorf("reading the router's undelivered-source counters: %w", err)
	}
	nodeOfMAC := map[string]string{}
	r.mu.Lock()
	for inst, mac := range r.macOf {
		if n := r.nodeOf[inst]; n != nil {
			nodeOfMAC[strings.ToLower(mac)] = n.Name
		}
	}
	r.mu.Unlock()
	var res []UndeliveredSource
	for _, e := range elems {
		if len(e.Val) != 2 {
			continue
		}
		ip, err := netip.ParseAddr(e.Val[1])
		if err != nil {
			return nil, fmt.Errorf("parsing the router's undelivered-source counters: %w", err)
		}
		mac := strings.ToLower(e.Val[0])
		res = append(res, UndeliveredSource{Node: cmp.Or(nodeOfMAC[mac], mac), IP: ip, Packets: e.Packets, Bytes: e.Bytes})
	}
	slices.SortFunc(res, func(a, b UndeliveredSource) int { return cmp.Or(cmp.Compare(a.Node, b.Node), a.IP.Compare(b.IP)) })
	return res, nil
}

// applyTable writes the router's table in one nftables transaction: whole the first time,
// then in place (sets and NAT chains flushed and refilled), so that the undelivered-source
// counters survive every change. As EC2 does, it drops forwarded traffic to a VPC address the
// fabric delivers to no instance, and traffic from a VPC address the fabric does not deliver
// to the sending node (source/destination check, per node: a bed node has one link, where EC2
// checks per interface), counting the latter per (node MAC, address) in the dynamic set
// undelivered; and it makes each Elastic IP a 1:1 NAT at the edge: traffic from the private
// address leaving towards the outside is SNATed to the public one, traffic to the public one
// DNATed to the private.
func (r *Router) applyTable(held, nat map[netip.Addr]netip.Addr, srcOK map[srcKey]bool) error {
	var b strings.Builder
	sorted := func(m map[netip.Addr]netip.Addr) []netip.Addr {
		out := make([]netip.Addr, 0, len(m))
		for p := range m {
			out = append(out, p)
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return out
	}
	var subnets []string
	for _, z := range r.topo.Zones {
		subnets = append(subnets, z.Subnet.String())
	}
	if !r.made {
		fmt.Fprintf(&b, "table ip %s\ndelete table ip %s\ntable ip %s {\n", eipTable, eipTable, eipTable)
		b.WriteString("  set held {\n    type ipv4_addr\n  }\n")
		b.WriteString("  set src_ok {\n    type ether_addr . ipv4_addr\n  }\n")
		b.WriteString("  set undelivered {\n    type ether_addr . ipv4_addr\n    size 65536\n    flags dynamic\n    counter\n  }\n")
		b.WriteString("  set undelivered_probes {\n    type ether_addr . ipv4_addr\n    size 65536\n    flags dynamic\n    counter\n  }\n")
		b.WriteString("  chain forward {\n    type filter hook forward priority filter; policy accept;\n")
		// egressd's delivery proofs (docs/control-plane.md) probe from an address before the
		// node may use it: dropped like any other, but counted apart from user traffic.
		fmt.Fprintf(&b, "    ip saddr { %s } ether saddr . ip saddr != @src_ok udp dport %d update @undelivered_probes { ether saddr . ip saddr } drop\n",
			strings.Join(subnets, ", "), contract.DefaultProbePort)
		fmt.Fprintf(&b, "    ip saddr { %s } ether saddr . ip saddr != @src_ok update @undelivered { ether saddr . ip saddr } drop\n", strings.Join(subnets, ", "))
		fmt.Fprintf(&b, "    ip daddr { %s } ip daddr != @held counter drop\n  }\n", strings.Join(subnets, ", "))
		b.WriteString("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n  }\n")
		b.WriteString("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n  }\n}\n")
	}
	fmt.Fprintf(&b, "flush set ip %s held\nflush set ip %s src_ok\n", eipTable, eipTable)
	if h := sorted(held); len(h) > 0 {
		strs := make([]string, len(h))
		for i, a := range h {
			strs[i] = a.String()
		}
		fmt.Fprintf(&b, "add element ip %s held { %s }\n", eipTable, strings.Join(strs, ", "))
	}
	if len(srcOK) > 0 {
		keys := slices.Collect(maps.Keys(srcOK))
		slices.SortFunc(keys, func(a, b srcKey) int { return cmp.Or(cmp.Compare(a.mac, b.mac), a.ip.Compare(b.ip)) })
		strs := make([]string, len(keys))
		for i, k := range keys {
			strs[i] = k.mac + " . " + k.ip.String()
		}
		fmt.Fprintf(&b, "add element ip %s src_ok { %s }\n", eipTable, strings.Join(strs, ", "))
	}
	fmt.Fprintf(&b, "flush chain ip %s prerouting\nflush chain ip %s postrouting\n", eipTable, eipTable)
	privs := sorted(nat)
	for _, p := range privs {
		fmt.Fprintf(&b, "add rule ip %s prerouting iifname \"ext0\" ip daddr %s dnat to %s\n", eipTable, nat[p], p)
	}
	for _, p := range privs {
		fmt.Fprintf(&b, "add rule ip %s postrouting oifname \"ext0\" ip saddr %s snat to %s\n", eipTable, p, nat[p])
	}
	if err := r.topo.Router.ApplyNFT(filepath.Join(r.dir, "router.nft"), b.String()); err != nil {
		return fmt.Errorf("applying the router's table: %w", err)
	}
	return nil
}

// NodeOfInstance returns the lab node of an instance ID, or nil.
func (l *Lab) NodeOfInstance(id string) *Node {
	for _, n := range l.Nodes {
		if n.Instance.ID == id {
			return n
		}
	}
	return nil
}

// moveWindows are the cloud's moves of an address from one instance to another (allocations
// and releases left out), as the report takes them.
func (l *Lab) moveWindows() []MoveWindow {
	var out []MoveWindow
	now := time.Now()
	for _, m := range l.Moves() {
		if m.From.Instance == "" || m.To.Instance == "" || m.From.Instance == m.To.Instance {
			continue
		}
		mw := MoveWindow{IP: m.IP.String(), Accepted: m.AcceptedAt}
		if !m.DeliveredAt.After(now) {
			mw.Delivered = m.DeliveredAt
		}
		out = append(out, mw)
	}
	return out
}
