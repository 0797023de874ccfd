package dataplane

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/egressd/egressd/bpf/marks"
)

// TestPublicSourceModel: a served group with a PublicSource gets its public4 chain (source and
// private destinations) only with an IPv4 egress IP; the table is rewritten when either
// changes; the state refuses a public source that is not IPv4 or has no IPv4 egress IP, and a
// private destination that is not an IPv4 prefix.
func TestPublicSourceModel(t *testing.T) {
	ip, pfx := netip.MustParseAddr, netip.MustParsePrefix
	d := New(Config{})
	role := func(src netip.Addr, private ...netip.Prefix) *GatewayRole {
		return &GatewayRole{
			Addresses: []EgressAddress{{IP: ip("10.0.0.200"), Interface: "eth0"}, {IP: ip("fd00::200"), Interface: "eth0"}},
			Groups: []ServedGroup{
				{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.200")}, PublicSource: src, Private: private},
				{Group: 8, EgressIPv6s: []netip.Addr{ip("fd00::200")}},
			},
		}
	}
	m := d.nftModel(role(ip("10.0.0.21"), pfx("10.0.0.0/8")), 1450)
	got, ok := m.public4[marks.Default().Local(7)]
	if !ok || got.source != ip("10.0.0.21") || !slices.Equal(got.private, []netip.Prefix{pfx("10.0.0.0/8")}) || len(m.public4) != 1 {
		t.Fatalf("public4 = %+v", m.public4)
	}
	if plain := d.nftModel(role(netip.Addr{}), 1450); len(plain.public4) != 0 || plain.key() == m.key() {
		t.Fatalf("without a public source: public4 %+v, key unchanged %v", plain.public4, plain.key() == m.key())
	}
	if other := d.nftModel(role(ip("10.0.0.21"), pfx("10.0.0.0/8"), pfx("35.0.0.0/8")), 1450); other.key() == m.key() {
		t.Fatal("a changed private list leaves the table key unchanged: the table would not be rewritten")
	}

	for _, c := range []struct {
		name string
		g    ServedGroup
		want string
	}{
		{"IPv6 public source", ServedGroup{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.200")}, PublicSource: ip("fd00::21")}, "public source"},
		{"no IPv4 egress IP", ServedGroup{Group: 7, EgressIPv6s: []netip.Addr{ip("fd00::200")}, PublicSource: ip("10.0.0.21")}, "public source"},
		{"IPv6 private destination", ServedGroup{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.200")}, PublicSource: ip("10.0.0.21"), Private: []netip.Prefix{pfx("fd00::/8")}}, "private destination"},
	} {
		s := State{NodeIP: ip("10.0.0.21"), Gateway: &GatewayRole{Addresses: role(netip.Addr{}).Addresses, Groups: []ServedGroup{c.g}}}
		if err := s.validate(marks.Default()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: validate = %v, want an error about the %s", c.name, err, c.want)
		}
	}
	ok4 := State{NodeIP: ip("10.0.0.21"), Gateway: role(ip("10.0.0.21"), pfx("10.0.0.0/8"))}
	if err := ok4.validate(marks.Default()); err != nil {
		t.Errorf("a valid public source: %v", err)
	}
}
