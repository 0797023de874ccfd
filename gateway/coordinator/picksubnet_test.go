package coordinator

import (
	"net/netip"
	"testing"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

// cloud.family picks the pool of its family: on a dual-stack node, IPv4 addresses come from
// the primary interface's subnet as before, IPv6 ones from that subnet's IPv6 block (reported
// as a pool of its own, "<subnet>#ipv6"); a selector names the subnet for both.
func TestPickSubnetFamily(t *testing.T) {
	info := &providers.NodeInfo{
		Interfaces: []providers.Interface{{DeviceIndex: 0, SubnetID: "subnet-b"}},
		Subnets: []providers.Subnet{
			{ID: "subnet-a", CIDR: netip.MustParsePrefix("10.0.1.0/24")},
			{ID: "subnet-a#ipv6", CIDR: netip.MustParsePrefix("2001:db8:0:1::/64")},
			{ID: "subnet-b", CIDR: netip.MustParsePrefix("10.0.2.0/24")},
			{ID: "subnet-b#ipv6", CIDR: netip.MustParsePrefix("2001:db8:0:2::/64")},
		},
	}
	sel := &egressv1.SubnetSelector{IDs: []string{"subnet-a"}}
	for _, tc := range []struct {
		name string
		sel  *egressv1.SubnetSelector
		v6   bool
		want string
	}{
		{"IPv4, primary interface's subnet", nil, false, "subnet-b"},
		{"IPv6, primary interface's subnet's block", nil, true, "subnet-b#ipv6"},
		{"IPv4, selected", sel, false, "subnet-a"},
		{"IPv6, block of the selected subnet", sel, true, "subnet-a#ipv6"},
	} {
		if got := pickSubnet(info, tc.sel, tc.v6); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	v4only := &providers.NodeInfo{Interfaces: info.Interfaces, Subnets: info.Subnets[2:3]}
	if got := pickSubnet(v4only, nil, true); got != "" {
		t.Errorf("IPv6 on an IPv4-only node: %q, want none (an error naming the family)", got)
	}
}
