package dataplane

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]PortRange{"": {}, "1024-65535": {1024, 65535}, "40000-40000": {40000, 40000}} {
		if got, err := ParsePortRange(in); err != nil || got != want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0-10", "20-10", "1024", "1024-", "a-b", "1024-70000", " 1-2", "1-2x"} {
		if got, err := ParsePortRange(in); err == nil {
			t.Errorf("ParsePortRange(%q) = %v, want an error", in, got)
		}
	}
	if n := (PortRange{40000, 40015}).Size(); n != 16 {
		t.Errorf("size of 40000-40015: %d", n)
	}
}

// TestSNATIPs: a group's flows spread over its IPs on the interface of the lowest one, lowest
// first; IPs on other interfaces are left out (the group's route uses one interface).
func TestSNATIPs(t *testing.T) {
	ip := netip.MustParseAddr
	ifaceOf := map[netip.Addr]string{ip("10.0.0.150"): "eth1", ip("10.0.0.200"): "eth0", ip("10.0.0.201"): "eth0", ip("10.0.0.100"): "eth0"}
	for _, c := range []struct {
		in   []netip.Addr
		want []netip.Addr
	}{
		{nil, nil},
		{[]netip.Addr{ip("10.0.0.150"), ip("10.0.0.200"), ip("10.0.0.201")}, []netip.Addr{ip("10.0.0.150")}},
		{[]netip.Addr{ip("10.0.0.100"), ip("10.0.0.150"), ip("10.0.0.200"), ip("10.0.0.201")}, []netip.Addr{ip("10.0.0.100"), ip("10.0.0.200"), ip("10.0.0.201")}},
	} {
		var got []netip.Addr
		for _, b := range snatIPs(c.in, ifaceOf) {
			a, _ := netip.AddrFromSlice(b)
			got = append(got, a)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("snatIPs(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
