// Package conformance is the one test suite every egressd provider passes: the same cases
// against each cloud's simulator, the static pools, and the plugin protocol wrapping another
// provider. A Harness builds a fresh world per case and hides how its cloud injects faults and
// reports its true state, so GCP and Azure simulators plug in the same way as EC2's.
package conformance

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
)

// Feature is an ability of a provider or of its harness; cases that need one skip without it.
type Feature string

const (
	// FeaturePublicIP: EnsureRequest.Public gives a public IP (EIP, external IP, public IP).
	FeaturePublicIP Feature = "PublicIP"
	// FeatureDedicatedInterface: InterfaceDedicated creates an interface for egress IPs.
	FeatureDedicatedInterface Feature = "DedicatedInterface"
	// FeatureThrottling: the harness can make the cloud throttle calls.
	FeatureThrottling Feature = "Throttling"
	// FeatureFailAfterApply: the harness can make the cloud fail calls after applying them.
	FeatureFailAfterApply Feature = "FailAfterApply"
	// FeatureDescribeLag: the harness can make reads lag behind writes.
	FeatureDescribeLag Feature = "DescribeLag"
	// FeatureForeign: the harness can create resources of no cluster and of other clusters.
	FeatureForeign Feature = "Foreign"
	// FeaturePublicOnly: the nodes take public egress IPs only (Azure Uniform scale-set
	// instances): an EnsureIP without Public is refused CapacityExhausted, so the cases ask for
	// public IPs throughout, and a public IP is drawn from a prefix, so a move may change it
	// within the prefix (the suite checks the assignment reports the cloud's).
	FeaturePublicOnly Feature = "PublicOnly"
)

// Topology is what a case needs from its world.
type Topology struct {
	Zones        []string
	NodesPerZone int
	// IPsPerNode is how many egress addresses a node's primary interface takes (instance
	// type limit, pool limit): the capacity case fills it.
	IPsPerNode int
}

// Harness builds worlds for one provider.
type Harness interface {
	Features() []Feature
	// Setup builds a fresh world with topo and a provider bound to it; cleanup via t.Cleanup.
	Setup(t *testing.T, topo Topology) World
}

// NATWorld is implemented by worlds whose cloud says which private address its 1:1 NAT
// translates to a public IP. The suite then checks that an assignment's PublicNATSource (or,
// unset, its IP) is that address: the source the gateway must send public-bound traffic from.
type NATWorld interface {
	// NATSource is the private address the cloud translates to public, ok false when none.
	NATSource(public netip.Addr) (private netip.Addr, ok bool)
}

// World is one provider under test plus the cloud's true state, seen without the provider.
type World interface {
	Provider() providers.Provider
	Cluster() string
	Nodes(zone string) []providers.NodeRef
	// FreeAddress returns an unused address of the zone that EnsureIP accepts (ipalloc's
	// choice in production); successive calls return different addresses.
	FreeAddress(zone string) netip.Addr
	// Holder says which node holds ip, with its public IP, according to the cloud.
	Holder(ip netip.Addr) (node string, public netip.Addr, ok bool)
	// Addresses lists the egress (non-primary) addresses a node holds according to the cloud.
	Addresses(node string) []netip.Addr
	// PublicIPs counts public IPs allocated in the account, associated or not.
	PublicIPs() int
	// Interfaces counts the interfaces attached to a node.
	Interfaces(node string) int
	// MutatingCalls counts the cloud's mutating calls since the last ResetCalls.
	MutatingCalls() int
	// Calls returns the cloud's calls per API action since the last ResetCalls.
	Calls() map[string]int
	ResetCalls()

	// Throttle makes the next n cloud calls fail with the cloud's throttling error; n < 0
	// throttles every call until ClearFaults.
	Throttle(n int)
	// FailMutationsAfterApply makes the next call of every mutating action fail with a 5xx
	// after the cloud applied it.
	FailMutationsAfterApply()
	// SetDescribeLag makes reads show the state as it was d ago.
	SetDescribeLag(d time.Duration)
	ClearFaults()
	// AddForeign gives node an address (and a public IP where supported) of no cluster and
	// one of another cluster; it returns the addresses.
	AddForeign(node providers.NodeRef) []netip.Addr
}

// Run runs every case against h.
func Run(t *testing.T, h Harness) {
	has := func(f Feature) bool { return slices.Contains(h.Features(), f) }
	need := func(t *testing.T, fs ...Feature) {
		for _, f := range fs {
			if !has(f) {
				t.Skipf("harness lacks %s", f)
			}
		}
	}
	topo := Topology{Zones: []string{"zone-a", "zone-b"}, NodesPerZone: 2, IPsPerNode: 3}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			need(t, c.needs...)
			w := h.Setup(t, topo)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c.run(ctx, t, &env{World: w, public: has(FeaturePublicIP), publicOnly: has(FeaturePublicOnly), features: h.Features()})
		})
	}
}

type env struct {
	World
	public     bool
	publicOnly bool // FeaturePublicOnly: every request asks for a public IP
	features   []Feature
}

func (e *env) owner() providers.Owner { return providers.Owner{Cluster: e.Cluster(), Gateway: "gw1"} }

func (e *env) ensure(ctx context.Context, t *testing.T, node providers.NodeRef, ip netip.Addr, mode providers.InterfaceMode) *providers.Assignment {
	t.Helper()
	a, err := e.Provider().EnsureIP(ctx, providers.EnsureRequest{Owner: e.owner(), Node: node, IP: ip, Public: e.public, Interface: mode})
	if err != nil {
		t.Fatalf("EnsureIP(%s on %s): %v", ip, node.Name, err)
	}
	return a
}

func (e *env) wantHolder(t *testing.T, ip netip.Addr, node string) netip.Addr {
	t.Helper()
	h, pub, ok := e.Holder(ip)
	if !ok || h != node {
		t.Fatalf("cloud says %s is held by %q (held=%v), want %s", ip, h, ok, node)
	}
	if e.public && !pub.IsValid() {
		t.Fatalf("%s has no public IP", ip)
	}
	return pub
}

// wantNAT checks, where the world says (NATWorld), that the cloud's NAT translates a's
// public IP from the source a names: PublicNATSource, or the address itself.
func (e *env) wantNAT(t *testing.T, a *providers.Assignment) {
	t.Helper()
	nw, ok := e.World.(NATWorld)
	if !ok || !e.public {
		return
	}
	want := a.PublicNATSource
	if !want.IsValid() {
		want = a.IP
	}
	if got, ok := nw.NATSource(a.PublicIP); !ok || got != want {
		t.Fatalf("the cloud translates %s from %v (ok=%v); the assignment says %s (PublicNATSource %v)", a.PublicIP, got, ok, want, a.PublicNATSource)
	}
}

type testCase struct {
	name  string
	needs []Feature
	run   func(ctx context.Context, t *testing.T, e *env)
}

var cases = []testCase{
	{name: "DiscoverNode", run: func(ctx context.Context, t *testing.T, e *env) {
		n := e.Nodes("zone-a")[0]
		info, err := e.Provider().DiscoverNode(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if info.Zone == "" || info.Capacity.FreeIPSlots < 1 || len(info.Interfaces) == 0 {
			t.Fatalf("DiscoverNode: %+v", info)
		}
		bad := n
		bad.Name, bad.ProviderID, bad.Zone = "ghost", ghostProviderID(n.ProviderID), ""
		if _, err := e.Provider().DiscoverNode(ctx, bad); !providers.IsNotFound(err) {
			t.Fatalf("unknown node: want NotFound, got %v", err)
		}
	}},
	{name: "IdempotentEnsure", run: func(ctx context.Context, t *testing.T, e *env) {
		n := e.Nodes("zone-a")[0]
		ip := e.FreeAddress("zone-a")
		first := e.ensure(ctx, t, n, ip, providers.InterfacePrimary)
		pub := e.wantHolder(t, ip, n.Name)
		e.ResetCalls()
		second := e.ensure(ctx, t, n, ip, providers.InterfacePrimary)
		if m := e.MutatingCalls(); m != 0 {
			t.Errorf("second EnsureIP made %d mutating calls (%v), want 0", m, e.Calls())
		}
		if got := e.Addresses(n.Name); len(got) != 1 || got[0] != ip {
			t.Errorf("node holds %v, want [%s]", got, ip)
		}
		if first.PublicIP != second.PublicIP || (e.public && second.PublicIP != pub) {
			t.Errorf("public IP changed: %v then %v (cloud: %v)", first.PublicIP, second.PublicIP, pub)
		}
		if e.public && e.PublicIPs() != 1 {
			t.Errorf("%d public IPs, want 1", e.PublicIPs())
		}
	}},
	{name: "ConflictOnOtherNode", run: func(ctx context.Context, t *testing.T, e *env) {
		a, b := e.Nodes("zone-a")[0], e.Nodes("zone-a")[1]
		ip := e.FreeAddress("zone-a")
		e.ensure(ctx, t, a, ip, providers.InterfacePrimary)
		_, err := e.Provider().EnsureIP(ctx, providers.EnsureRequest{Owner: e.owner(), Node: b, IP: ip, Public: e.publicOnly, Interface: providers.InterfacePrimary})
		if !providers.IsConflict(err) {
			t.Fatalf("EnsureIP of an address held by another node: want Conflict, got %v", err)
		}
		e.wantHolder(t, ip, a.Name)
	}},
	{name: "CapacityExhausted", run: func(ctx context.Context, t *testing.T, e *env) {
		n := e.Nodes("zone-a")[0]
		info, err := e.Provider().DiscoverNode(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		slots := info.Capacity.FreeIPSlots
		if slots < 1 || slots > 64 {
			t.Fatalf("FreeIPSlots = %d", slots)
		}
		pub := e.public
		e.public = e.publicOnly // public IP quotas are not what this case fills, where private egress works
		defer func() { e.public = pub }()
		for range slots {
			e.ensure(ctx, t, n, e.FreeAddress("zone-a"), providers.InterfacePrimary)
		}
		next := e.FreeAddress("zone-a")
		_, err = e.Provider().EnsureIP(ctx, providers.EnsureRequest{Owner: e.owner(), Node: n, IP: next, Public: e.publicOnly, Interface: providers.InterfacePrimary})
		if next.Is6() && err == nil {
			// Capacity counts IPv4 slots, where the primary address takes one; an interface
			// may hold one IPv6 address more (EC2: as many IPv6 as IPv4 addresses per
			// interface). Reporting fewer slots than there are is allowed, one fewer at most.
			slots++
			_, err = e.Provider().EnsureIP(ctx, providers.EnsureRequest{Owner: e.owner(), Node: n, IP: e.FreeAddress("zone-a"), Interface: providers.InterfacePrimary})
		}
		if !providers.IsCapacityExhausted(err) {
			t.Fatalf("EnsureIP past %d slots: want CapacityExhausted, got %v", slots, err)
		}
		if got := len(e.Addresses(n.Name)); got != slots {
			t.Errorf("node holds %d addresses, want %d", got, slots)
		}
	}},
	{name: "MoveKeepsAddress", run: func(ctx context.Context, t *testing.T, e *env) {
		a, b := e.Nodes("zone-a")[0], e.Nodes("zone-a")[1]
		ip := e.FreeAddress("zone-a")
		cur := e.ensure(ctx, t, a, ip, providers.InterfacePrimary)
		pub := e.wantHolder(t, ip, a.Name)
		e.wantNAT(t, cur)
		moved, err := e.Provider().MoveIP(ctx, providers.MoveRequest{Owner: e.owner(), Current: *cur, To: b})
		if err != nil {
			t.Fatal(err)
		}
		if moved.IP != ip || moved.Node != b.Name {
			t.Fatalf("MoveIP returned %+v", moved)
		}
		got := e.wantHolder(t, ip, b.Name)
		if got != pub && !e.publicOnly {
			t.Fatalf("public IP %v after the move, was %v", got, pub)
		}
		if moved.PublicIP != got {
			t.Errorf("MoveIP reports public IP %v, cloud says %v", moved.PublicIP, got)
		}
		e.wantNAT(t, moved)
		if len(e.Addresses(a.Name)) != 0 {
			t.Errorf("old node still holds %v", e.Addresses(a.Name))
		}
		// Moving again to where it is changes nothing.
		e.ResetCalls()
		if _, err := e.Provider().MoveIP(ctx, providers.MoveRequest{Owner: e.owner(), Current: *moved, To: b}); err != nil {
			t.Fatal(err)
		}
		if m := e.MutatingCalls(); m != 0 {
			t.Errorf("repeated MoveIP made %d mutating calls (%v)", m, e.Calls())
		}
		if e.public && e.PublicIPs() != 1 {
			t.Errorf("%d public IPs, want 1", e.PublicIPs())
		}
	}},
	{name: "ReleaseTwice", run: func(ctx context.Context, t *testing.T, e *env) {
		n := e.Nodes("zone-b")[0]
		ip := e.FreeAddress("zone-b")
		cur := e.ensure(ctx, t, n, ip, providers.InterfacePrimary)
		for i := range 2 {
			if err := e.Provider().ReleaseIP(ctx, providers.ReleaseRequest{Owner: e.owner(), Current: *cur}); err != nil {
				t.Fatalf("release #%d: %v", i+1, err)
			}
		}
		if h, _, ok := e.Holder(ip); ok {
			t.Errorf("%s still held by %s", ip, h)
		}
		if e.PublicIPs() != 0 {
			t.Errorf("%d public IPs left", e.PublicIPs())
		}
		if nw, ok := e.World.(NATWorld); ok && cur.PublicIP.IsValid() {
			if src, ok := nw.NATSource(cur.PublicIP); ok {
				t.Errorf("released public IP %s still translates %s", cur.PublicIP, src)
			}
		}
		owned, err := e.Provider().ListOwned(ctx, e.Cluster())
		if err != nil {
			t.Fatal(err)
		}
		if len(owned) != 0 {
			t.Errorf("ListOwned after release: %+v", owned)
		}
	}},
	{name: "GCListsOnlyOwn", needs: []Feature{FeatureForeign}, run: func(ctx context.Context, t *testing.T, e *env) {
		n := e.Nodes("zone-a")[0]
		foreign := e.AddForeign(n)
		ip := e.FreeAddress("zone-a")
		e.ensure(ctx, t, n, ip, providers.InterfacePrimary)
		owned, err := e.Provider().ListOwned(ctx, e.Cluster())
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range owned {
			if r.Owner.Cluster != e.Cluster() {
				t.Errorf("listed a resource of cluster %q: %+v", r.Owner.Cluster, r)
			}
			if slices.Contains(foreign, r.IP) {
				t.Errorf("listed a foreign address: %+v", r)
			}
			found = found || (r.Kind == providers.ResourcePrivateIP && r.IP == ip)
		}
		if !found {
			t.Errorf("own address %s not listed: %+v", ip, owned)
		}
		for _, f := range foreign {
			err := e.Provider().ReleaseOwned(ctx, providers.OwnedResource{Kind: providers.ResourcePrivateIP, IP: f, Owner: e.owner()})
			if !providers.IsPermission(err) {
				t.Errorf("ReleaseOwned of foreign %s: want Permission, got %v", f, err)
			}
			if _, err := e.Provider().MoveIP(ctx, providers.MoveRequest{Owner: e.owner(), Current: providers.Assignment{IP: f}, To: e.Nodes("zone-a")[1]}); !providers.IsNotFound(err) {
				t.Errorf("MoveIP of foreign %s: want NotFound, got %v", f, err)
			}
			if h, _, ok := e.Holder(f); !ok || h != n.Name {
				t.Errorf("foreign %s disturbed: held by %q", f, h)
			}
		}
		// Garbage collection of everything listed leaves foreign resources alone.
		for _, r := range owned {
			if err := e.Provider().ReleaseOwned(ctx, r); err != nil {
				t.Errorf("ReleaseOwned(%+v): %v", r, err)
			}
		}
		if h, _, ok := e.Holder(ip); ok {
			t.Errorf("own %s still held by %s after GC", ip, h)
		}
		for _, f := range foreign {
			if _, _, ok := e.Holder(f); !ok {
				t.Errorf("GC released foreign %s", f)
			}
		}
	}},
	{name: "ThrottledWithinBudget", needs: []Feature{FeatureThrottling}, run: func(ctx context.Context, t *testing.T, e *env) {
		n := e.Nodes("zone-a")[0]
		ip := e.FreeAddress("zone-a")
		e.Throttle(2)
		e.ensure(ctx, t, n, ip, providers.InterfacePrimary)
		e.wantHolder(t, ip, n.Name)
	}},
	{name: "ThrottledPastBudget", needs: []Feature{FeatureThrottling}, run: func(ctx context.Context, t *testing.T, e *env) {
		n := e.Nodes("zone-a")[0]
		e.Throttle(-1)
		_, err := e.Provider().EnsureIP(ctx, providers.EnsureRequest{Owner: e.owner(), Node: n, IP: e.FreeAddress("zone-a"), Public: e.publicOnly})
		if !providers.IsThrottled(err) {
			t.Fatalf("sustained throttling: want Throttled, got %v", err)
		}
		if providers.RetryAfter(err) <= 0 {
			t.Errorf("no RetryAfter hint: %v", err)
		}
	}},
	{name: "FailAfterApplyNoSecondIP", needs: []Feature{FeatureFailAfterApply}, run: func(ctx context.Context, t *testing.T, e *env) {
		n := e.Nodes("zone-a")[0]
		ip := e.FreeAddress("zone-a")
		e.FailMutationsAfterApply()
		// The first attempt may fail (a call that cannot be retried blindly) or succeed (the
		// SDK retried an idempotent call); the coordinator retries until it succeeds.
		var err error
		for range 5 {
			if _, err = e.Provider().EnsureIP(ctx, providers.EnsureRequest{Owner: e.owner(), Node: n, IP: ip, Public: e.public}); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("EnsureIP never succeeded: %v", err)
		}
		e.ClearFaults()
		e.wantHolder(t, ip, n.Name)
		if got := e.Addresses(n.Name); len(got) != 1 {
			t.Errorf("node holds %v, want only %s", got, ip)
		}
		if e.public && e.PublicIPs() != 1 {
			t.Errorf("%d public IPs, want 1", e.PublicIPs())
		}
	}},
	{name: "DescribeLagNoDuplicate", needs: []Feature{FeatureDescribeLag}, run: func(ctx context.Context, t *testing.T, e *env) {
		n := e.Nodes("zone-a")[0]
		ip := e.FreeAddress("zone-a")
		before := e.Interfaces(n.Name)
		mode := providers.InterfacePrimary
		if slices.Contains(e.features, FeatureDedicatedInterface) {
			mode = providers.InterfaceDedicated
		}
		e.SetDescribeLag(time.Hour)
		for range 3 {
			e.ensure(ctx, t, n, ip, mode)
		}
		ip2 := e.FreeAddress("zone-a")
		e.ensure(ctx, t, n, ip2, mode)
		e.ClearFaults()
		e.wantHolder(t, ip, n.Name)
		e.wantHolder(t, ip2, n.Name)
		if got := e.Addresses(n.Name); len(got) != 2 {
			t.Errorf("node holds %v, want [%s %s]", got, ip, ip2)
		}
		if e.public && e.PublicIPs() != 2 {
			t.Errorf("%d public IPs, want 2", e.PublicIPs())
		}
		if mode == providers.InterfaceDedicated && e.Interfaces(n.Name) != before+1 {
			t.Errorf("%d interfaces, want %d", e.Interfaces(n.Name), before+1)
		}
	}},
	{name: "DedicatedInterfaceOnce", needs: []Feature{FeatureDedicatedInterface}, run: func(ctx context.Context, t *testing.T, e *env) {
		n, m := e.Nodes("zone-a")[0], e.Nodes("zone-a")[1]
		before := e.Interfaces(n.Name)
		var last *providers.Assignment
		for range 2 {
			last = e.ensure(ctx, t, n, e.FreeAddress("zone-a"), providers.InterfaceDedicated)
		}
		if got := e.Interfaces(n.Name); got != before+1 {
			t.Fatalf("%d interfaces after two dedicated addresses, want %d", got, before+1)
		}
		// A move between dedicated interfaces is one mutating call: the ownership is the ENI's.
		e.ensure(ctx, t, m, e.FreeAddress("zone-a"), providers.InterfaceDedicated)
		e.ResetCalls()
		if _, err := e.Provider().MoveIP(ctx, providers.MoveRequest{Owner: e.owner(), Current: *last, To: m}); err != nil {
			t.Fatal(err)
		}
		e.wantHolder(t, last.IP, m.Name)
		t.Logf("move between dedicated interfaces: %d mutating calls %v", e.MutatingCalls(), e.Calls())
		// Releasing every address removes the interface.
		for _, ip := range e.Addresses(n.Name) {
			if err := e.Provider().ReleaseIP(ctx, providers.ReleaseRequest{Owner: e.owner(), Current: providers.Assignment{IP: ip}}); err != nil {
				t.Fatal(err)
			}
		}
		if got := e.Interfaces(n.Name); got != before {
			t.Errorf("%d interfaces after releasing all, want %d", got, before)
		}
	}},
}

// ghostProviderID turns a providerID into one of a node that does not exist, keeping its
// scheme: the last path element becomes an unknown instance.
func ghostProviderID(id string) string {
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '/' {
			rest := id[i+1:]
			if len(rest) > 2 && rest[:2] == "i-" {
				return id[:i+1] + "i-0000000000000dead"
			}
			return id[:i+1] + "ghost"
		}
	}
	return id + "-ghost"
}
