package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/cmd/egressctl/internal/datapath"
	"github.com/egressd/egressd/gateway/agent"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/test/netns"
)

// TestList applies a State with the real datapath in a namespace node (pinning under a bpffs
// of the test's own), sends a ping through it, and reads it back with egressctl list.
func TestList(t *testing.T) {
	topo := netns.New(t, netns.Spec{Nodes: []netns.NodeSpec{{Name: "n1", Pods: []netns.PodSpec{{Name: "a"}, {Name: "b"}}}}})
	bpffs := t.TempDir()
	if err := unix.Mount("bpf", bpffs, "bpf", 0, ""); err != nil {
		t.Fatalf("mounting bpffs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(bpffs, unix.MNT_DETACH) })

	n, a, b := topo.Node("n1"), topo.Pod("a"), topo.Pod("b")
	z := topo.Zones[0]
	egress, remote := z.Addr(200), z.Addr(50)
	self, other := agent.GatewayID(n.IP), agent.GatewayID(remote)
	dst := netip.MustParsePrefix("203.0.113.0/24")
	excl := netip.MustParsePrefix("203.0.113.200/32")
	st := dataplane.State{
		NodeIP: n.IP,
		Pods: []dataplane.Pod{
			{Name: "a", IPs: []netip.Addr{a.IP, a.IP6}, Interface: a.HostIface, PolicySet: 3},
			{Name: "b", IPs: []netip.Addr{b.IP}, Interface: b.HostIface},
		},
		PolicySets: []dataplane.PolicySet{{ID: 3, Destinations: []dataplane.Destination{{Prefix: dst, Group: 7}}, Excluded: []netip.Prefix{excl}}},
		// This node is the group's healthy gateway (traffic stays local); the remote one is down.
		Groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{
			{ID: self, NodeIP: n.IP, EgressIPv4: egress, Healthy: true},
			{ID: other, NodeIP: remote, Healthy: false},
		}}},
		Gateway: &dataplane.GatewayRole{
			Groups:    []dataplane.ServedGroup{{Group: 7, EgressIPv4s: []netip.Addr{egress}}},
			Addresses: []dataplane.EgressAddress{{IP: egress, Interface: n.Link}},
		},
	}
	dp := dataplane.New(dataplane.Config{NetNS: n.Path(), PinRoot: filepath.Join(bpffs, "egressd")})
	t.Cleanup(func() { _ = dp.Remove(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := dp.Apply(ctx, st); err != nil {
		t.Fatalf("applying: %v", err)
	}
	if err := topo.RouteToNode(netip.PrefixFrom(egress, 32), n); err != nil {
		t.Fatal(err)
	}
	src, err := a.Ping(ctx, netip.MustParseAddr("203.0.113.10"))
	if err != nil || src != egress {
		t.Errorf("ping from a through the gateway: source %s, %v (want %s)", src, err, egress)
	}
	// The datapath's own handles are closed: list must open the pins by itself.
	if err := dp.Close(); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := run(t, "", "list", "--bpffs", bpffs)
	if code != ExitOK {
		t.Fatalf("list: code %d: %s", code, errOut)
	}
	t.Logf("egressctl list:\n%s", out)
	expectLines(t, "list", out,
		"Datapath pinned under "+filepath.Join(bpffs, "egressd", bpf.Version),
		fmt.Sprintf("%s 3", a.IP), fmt.Sprintf("%s 3", a.IP6), fmt.Sprintf("%s 0 (none: node IP)", b.IP),
		"3 203.0.113.0/24 group 7",
		"3 203.0.113.200/32 excluded (node IP)",
		fmt.Sprintf("7 %d %s yes no yes", self, n.IP),
		fmt.Sprintf("7 %d %s no no no", other, remote),
		"Gateway role: serves groups 7",
		fmt.Sprintf("egress address %s/32 on ifindex", egress),
		fmt.Sprintf("7 %s", n.IP), // the ping's counter
	)

	code, out, _ = run(t, "", "list", "--bpffs", bpffs, "-o", "json")
	var tab datapath.Table
	if err := json.Unmarshal([]byte(out), &tab); code != ExitOK || err != nil {
		t.Fatalf("list -o json: code %d, %v\n%s", code, err, out)
	}
	var pkts uint64
	for _, c := range tab.Counters {
		if c.Group == 7 && c.Gateway == self {
			pkts += c.Packets
		}
	}
	if len(tab.Endpoints) != 3 || len(tab.Rules) != 2 || len(tab.Groups) != 1 || len(tab.Groups[0].Gateways) != 2 || pkts == 0 {
		t.Errorf("list -o json: %+v (packets via self %d)", tab, pkts)
	}
	if !strings.Contains(tab.PinDir, bpffs) {
		t.Errorf("pin dir %s", tab.PinDir)
	}
}
