package dataplane

import (
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/egressd/egressd/test/netns"
)

// TestSetIPv4DevConf checks that the netlink path sets what the sysctl files show, from values
// that differ from the kernel's defaults for a new device (rp_filter follows
// net.ipv4.conf.default, forwarding is 1 with ip_forward, accept_local is 0).
func TestSetIPv4DevConf(t *testing.T) {
	topo := netns.New(t, netns.Spec{Prefix: "edtc-", Nodes: []netns.NodeSpec{{Name: "n"}}, NoHostileRules: true})
	n := topo.Nodes[0]
	err := n.Do(func() error {
		for _, want := range []map[int]uint32{
			{devconfRPFilter: 2, devconfForwarding: 0, devconfAcceptLocal: 1},
			{devconfRPFilter: 0, devconfForwarding: 1, devconfAcceptLocal: 0},
		} {
			l, err := netlink.LinkByName(n.Link)
			if err != nil {
				return err
			}
			if err := setIPv4DevConf(l.Attrs().Index, n.Link, want); err != nil {
				return err
			}
			for k, v := range want {
				file := map[int]string{devconfRPFilter: "rp_filter", devconfForwarding: "forwarding", devconfAcceptLocal: "accept_local"}[k]
				b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + n.Link + "/" + file)
				if err != nil {
					return err
				}
				if got := strings.TrimSpace(string(b)); got != string(rune('0'+v)) {
					t.Errorf("%s: %s, want %d", file, got, v)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
