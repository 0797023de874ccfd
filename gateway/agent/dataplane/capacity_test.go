package dataplane

import (
	"errors"
	"maps"
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/test/netns"
	"github.com/egressd/egressd/test/privileged"
)

// mapDump is every map a State fills.
type mapDump struct {
	endpoints map[netip.Addr]bpf.Endpoint
	rules     map[bpf.RuleKey]bpf.Rule
	groups    map[uint32][]bpf.Gateway
	served    []uint32
}

func dumpMaps(t *testing.T, d *Dataplane) mapDump {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	var m mapDump
	var err error
	if m.endpoints, err = d.dp.Endpoints(); err != nil {
		t.Fatal(err)
	}
	if m.rules, err = d.dp.Rules(); err != nil {
		t.Fatal(err)
	}
	if m.groups, err = d.dp.Groups(); err != nil {
		t.Fatal(err)
	}
	if m.served, err = d.dp.Served(); err != nil {
		t.Fatal(err)
	}
	return m
}

func capacityErr(t *testing.T, err error, mapName string, needed, available int) {
	t.Helper()
	var ce *CapacityError
	for _, e := range unjoin(err) {
		if errors.As(e, &ce) && ce.Map == mapName {
			if ce.Needed != needed || ce.Available != available {
				t.Errorf("%s: needed %d available %d, want %d and %d (%v)", mapName, ce.Needed, ce.Available, needed, available, err)
			}
			return
		}
	}
	t.Errorf("error %v names no overflow of map %s", err, mapName)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// TestApplyCapacity loads the datapath with 4 endpoints and 4 rules per
// family, applies states that do not fit (every map must stay as it was and
// the error must name the map, what it needs and what it holds), then a
// state that fits exactly, where a pod IP moves to a new policy set.
func TestApplyCapacity(t *testing.T) {
	privileged.Require(t, "network namespaces and eBPF")
	topo := netns.New(t, netns.Spec{Nodes: []netns.NodeSpec{{Name: "cap", Pods: []netns.PodSpec{{Name: "a"}}}}})
	n := topo.Node("cap")
	pod := n.Pods[0]
	d := New(Config{NetNS: n.Path(), PinRoot: filepath.Join(mountBPFFS(t), "cap"),
		Limits: bpf.Limits{Endpoints: 4, Rules: 4}})
	t.Cleanup(func() { _ = d.Remove(ctxT(t)) })

	groups := []Group{{ID: 1, Gateways: []GatewayNode{{ID: 1, NodeIP: n.IP, Healthy: true}}}}
	pfx := netip.MustParsePrefix
	set := func(id uint32, v4, v6 []string) PolicySet {
		ps := PolicySet{ID: id}
		for _, p := range append(v4, v6...) {
			ps.Destinations = append(ps.Destinations, Destination{Prefix: pfx(p), Group: 1})
		}
		return ps
	}
	first := State{
		NodeIP:     n.IP,
		Pods:       []Pod{{Name: "a", IPs: []netip.Addr{pod.IP, pod.IP6}, Interface: pod.HostIface, PolicySet: 1}},
		PolicySets: []PolicySet{set(1, []string{"203.0.113.0/24", "198.51.100.0/24"}, []string{"2001:db8:113::/64", "2001:db8:100::/64"})},
		Groups:     groups,
	}
	if err := d.Apply(ctxT(t), first); err != nil {
		t.Fatalf("applying the first state: %v", err)
	}
	before := dumpMaps(t, d)
	if len(before.endpoints) != 2 || len(before.rules) != 4 || len(before.groups) != 1 {
		t.Fatalf("first state: %d endpoints, %d rules, %d groups, want 2, 4, 1", len(before.endpoints), len(before.rules), len(before.groups))
	}

	// Five endpoints for four slots; set 2's three IPv4 rules would fit
	// alone, but not next to set 1's two while set 1 is replaced (rules are
	// upserted before stale ones go).
	tooBig := first
	tooBig.Pods = []Pod{first.Pods[0]}
	tooBig.Pods[0].PolicySet = 2
	for i := 1; i <= 3; i++ {
		tooBig.Pods = append(tooBig.Pods, Pod{Name: "x", IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 250, 0, byte(i)})}, PolicySet: 2})
	}
	tooBig.PolicySets = []PolicySet{set(2, []string{"192.0.2.0/24", "192.0.2.128/25", "192.0.2.192/26"}, nil)}
	err := d.Apply(ctxT(t), tooBig)
	if err == nil {
		t.Fatal("applying a state that overflows endpoints and rules4: no error")
	}
	capacityErr(t, err, "endpoints", 5, 4)
	capacityErr(t, err, "rules4", 5, 4)
	if after := dumpMaps(t, d); !reflect.DeepEqual(after, before) {
		t.Fatalf("a failed Apply changed the maps:\nbefore %+v\nafter  %+v", before, after)
	}

	// Fits exactly: pod a's IPv4 address is reused by a pod of set 2, its
	// IPv6 address is gone, set 1 is replaced by set 2 (2 + 2 IPv4 rules at
	// the peak, none of IPv6), and three more endpoints take the freed slot
	// and the two free ones.
	fits := State{NodeIP: n.IP, Groups: groups,
		Pods:       []Pod{{Name: "reuse", IPs: []netip.Addr{pod.IP}, Interface: pod.HostIface, PolicySet: 2}},
		PolicySets: []PolicySet{set(2, []string{"192.0.2.0/24", "192.0.2.128/25"}, nil)}}
	for i := 1; i <= 3; i++ {
		fits.Pods = append(fits.Pods, Pod{Name: "x", IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 250, 0, byte(i)})}, PolicySet: 2})
	}
	if err := d.Apply(ctxT(t), fits); err != nil {
		t.Fatalf("applying a state that fits exactly: %v", err)
	}
	got := dumpMaps(t, d)
	wantEP := map[netip.Addr]uint32{pod.IP: 2, netip.MustParseAddr("10.250.0.1"): 2,
		netip.MustParseAddr("10.250.0.2"): 2, netip.MustParseAddr("10.250.0.3"): 2}
	gotEP := map[netip.Addr]uint32{}
	for ip, ep := range got.endpoints {
		gotEP[ip] = ep.PolicySet
	}
	if !maps.Equal(gotEP, wantEP) {
		t.Errorf("endpoints %v, want %v", gotEP, wantEP)
	}
	if ep := got.endpoints[pod.IP]; ep.Ifindex != before.endpoints[pod.IP].Ifindex || ep.Ifindex == 0 {
		t.Errorf("reused IP: ifindex %d, want the pod interface's %d", ep.Ifindex, before.endpoints[pod.IP].Ifindex)
	}
	wantRules := map[bpf.RuleKey]bpf.Rule{
		{PolicySet: 2, Prefix: pfx("192.0.2.0/24")}:   {Group: 1},
		{PolicySet: 2, Prefix: pfx("192.0.2.128/25")}: {Group: 1},
	}
	if !maps.Equal(got.rules, wantRules) {
		t.Errorf("rules %v, want %v", got.rules, wantRules)
	}
	if len(got.groups) != 1 || len(got.groups[1]) != 1 {
		t.Errorf("groups %v, want group 1 with one gateway", got.groups)
	}

	// Shrinking back after a full map still works: the departed endpoints
	// are deleted before any is added.
	if err := d.Apply(ctxT(t), first); err != nil {
		t.Fatalf("applying the first state again: %v", err)
	}
	if again := dumpMaps(t, d); !reflect.DeepEqual(again, before) {
		t.Errorf("first state again:\nwant %+v\ngot  %+v", before, again)
	}
}

// TestApplyCapacityGroups fills the groups map to its real size (the
// compiled-in 4096, below the 65535 group ids allow): one group more fails
// naming groups with every map unchanged, and exactly the map's size applies.
func TestApplyCapacityGroups(t *testing.T) {
	privileged.Require(t, "network namespaces and eBPF")
	topo := netns.New(t, netns.Spec{Nodes: []netns.NodeSpec{{Name: "capg"}}})
	n := topo.Node("capg")
	d := New(Config{NetNS: n.Path(), PinRoot: filepath.Join(mountBPFFS(t), "capg")})
	t.Cleanup(func() { _ = d.Remove(ctxT(t)) })
	withGroups := func(count int) State {
		s := State{NodeIP: n.IP}
		for id := 1; id <= count; id++ {
			s.Groups = append(s.Groups, Group{ID: uint32(id), Gateways: []GatewayNode{{ID: 1, NodeIP: n.IP, Healthy: true}}})
		}
		return s
	}
	if err := d.Apply(ctxT(t), withGroups(1)); err != nil {
		t.Fatalf("applying one group: %v", err)
	}
	size := int(d.dp.Capacity().Groups)
	before := dumpMaps(t, d)
	err := d.Apply(ctxT(t), withGroups(size+1))
	capacityErr(t, err, "groups", size+1, size)
	if after := dumpMaps(t, d); !reflect.DeepEqual(after, before) {
		t.Fatalf("a failed Apply changed the maps: %d groups before, %d after", len(before.groups), len(after.groups))
	}
	if err := d.Apply(ctxT(t), withGroups(size)); err != nil {
		t.Fatalf("applying %d groups: %v", size, err)
	}
	if got := dumpMaps(t, d); len(got.groups) != size {
		t.Errorf("%d groups in the map, want %d", len(got.groups), size)
	}
}
