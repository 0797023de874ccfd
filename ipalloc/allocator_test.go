package ipalloc

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// drain allocates until the pool is exhausted and returns what it handed out.
func drain(t *testing.T, a *Allocator, zone, subnet string) []netip.Addr {
	t.Helper()
	var got []netip.Addr
	for {
		ip, err := a.Allocate(zone, subnet, "o")
		if IsExhausted(err) {
			return got
		}
		if err != nil {
			t.Fatalf("allocate: %v", err)
		}
		got = append(got, ip)
		if len(got) > 1<<12 {
			t.Fatal("pool never exhausted")
		}
	}
}

func TestReservationProfiles(t *testing.T) {
	tests := []struct {
		name        string
		prefix      string
		res         Reservation
		first, last string
		n           int
	}{
		{"aws v4", "10.0.0.0/28", ReserveAWS, "10.0.0.4", "10.0.0.14", 11},
		{"azure v4", "10.0.0.0/28", ReserveAzure, "10.0.0.4", "10.0.0.14", 11},
		{"gcp v4", "10.0.0.0/28", ReserveGCP, "10.0.0.2", "10.0.0.13", 12},
		{"none v4", "10.0.0.0/28", ReserveNone, "10.0.0.0", "10.0.0.15", 16},
		{"custom v4", "10.0.0.0/28", Reservation{First: 1, Last: 3}, "10.0.0.1", "10.0.0.12", 12},
		{"aws v6", "2001:db8::/124", ReserveAWS, "2001:db8::4", "2001:db8::e", 11},
		{"gcp v6", "2001:db8::/124", ReserveGCP, "2001:db8::2", "2001:db8::d", 12},
		{"aws /32 all reserved", "10.0.0.7/32", ReserveAWS, "", "", 0},
		{"gcp /30 all reserved", "10.0.0.4/30", ReserveGCP, "", "", 0},
		{"aws /29", "10.0.0.8/29", ReserveAWS, "10.0.0.12", "10.0.0.14", 3},
		{"unmasked prefix", "10.0.0.9/29", ReserveAWS, "10.0.0.12", "10.0.0.14", 3},
		{"v4 /0 none", "0.0.0.0/0", ReserveNone, "0.0.0.0", "", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New()
			if err := a.AddSubnet("z", "s", netip.MustParsePrefix(tt.prefix), tt.res); err != nil {
				t.Fatal(err)
			}
			if tt.n < 0 { // too big to drain: check the first address only
				ip, err := a.Allocate("z", "s", "o")
				if err != nil || ip != netip.MustParseAddr(tt.first) {
					t.Fatalf("got %v, %v; want %s", ip, err, tt.first)
				}
				return
			}
			n, err := a.Available("z", "s")
			if err != nil || n != uint64(tt.n) {
				t.Fatalf("Available = %d, %v; want %d", n, err, tt.n)
			}
			got := drain(t, a, "z", "s")
			if len(got) != tt.n {
				t.Fatalf("handed out %d addresses, want %d: %v", len(got), tt.n, got)
			}
			if tt.n > 0 && (got[0].String() != tt.first || got[len(got)-1].String() != tt.last) {
				t.Fatalf("range %s..%s, want %s..%s", got[0], got[len(got)-1], tt.first, tt.last)
			}
		})
	}
}

func TestReservationByName(t *testing.T) {
	for _, name := range []string{"none", "aws", "azure", "gcp"} {
		r, err := ReservationByName(name)
		if err != nil || r.Name != name {
			t.Errorf("ReservationByName(%q) = %v, %v", name, r, err)
		}
	}
	if _, err := ReservationByName("oci"); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown profile: %v", err)
	}
}

// TestNeverAllocates checks each rule that keeps an address out, alone, on a 10.0.0.0/28 AWS
// subnet (usable .4 to .14).
func TestNeverAllocates(t *testing.T) {
	tests := []struct {
		name  string
		setup func(a *Allocator) error
		skip  []string // usable addresses that must not come out
	}{
		{"nothing", func(a *Allocator) error { return nil }, nil},
		{"node primary IPs", func(a *Allocator) error {
			a.SetNodeIPs(addrs("10.0.0.4", "10.0.0.9", "10.0.0.14", "192.168.1.1"))
			return nil
		}, []string{"10.0.0.4", "10.0.0.9", "10.0.0.14"}},
		{"node IPs replaced", func(a *Allocator) error {
			a.SetNodeIPs(addrs("10.0.0.4", "10.0.0.5"))
			a.SetNodeIPs(addrs("10.0.0.6"))
			return nil
		}, []string{"10.0.0.6"}},
		{"cloud in use", func(a *Allocator) error {
			return a.MarkInUse("z", "s", addrs("10.0.0.5", "10.0.0.6", "10.0.0.0")...)
		}, []string{"10.0.0.5", "10.0.0.6"}},
		{"cloud in use snapshot", func(a *Allocator) error {
			if err := a.MarkInUse("z", "s", addrs("10.0.0.5", "10.0.0.6")...); err != nil {
				return err
			}
			return a.SetInUse("z", "s", addrs("10.0.0.7"))
		}, []string{"10.0.0.7"}},
		{"user exclusions", func(a *Allocator) error {
			return a.Exclude(netip.MustParsePrefix("10.0.0.8/30"), netip.MustParsePrefix("10.0.0.13/32"), netip.MustParsePrefix("2001:db8::/32"))
		}, []string{"10.0.0.8", "10.0.0.9", "10.0.0.10", "10.0.0.11", "10.0.0.13"}},
		{"overlapping exclusions", func(a *Allocator) error {
			return a.Exclude(netip.MustParsePrefix("10.0.0.8/30"), netip.MustParsePrefix("10.0.0.8/29"), netip.MustParsePrefix("10.0.0.9/32"))
		}, []string{"10.0.0.8", "10.0.0.9", "10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"}},
		{"exclusions replaced", func(a *Allocator) error {
			if err := a.Exclude(netip.MustParsePrefix("10.0.0.0/24")); err != nil {
				return err
			}
			return a.SetExcluded([]netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.4/127")})
		}, []string{"10.0.0.4", "10.0.0.5"}},
		{"everything at once", func(a *Allocator) error {
			a.SetNodeIPs(addrs("10.0.0.4"))
			if err := a.Exclude(netip.MustParsePrefix("10.0.0.4/30")); err != nil {
				return err
			}
			if err := a.Claim(Record{IP: netip.MustParseAddr("10.0.0.8"), Zone: "z", Owner: "x"}); err != nil {
				return err
			}
			return a.MarkInUse("z", "s", addrs("10.0.0.8", "10.0.0.14")...)
		}, []string{"10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.14"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New()
			if err := a.AddSubnet("z", "s", netip.MustParsePrefix("10.0.0.0/28"), ReserveAWS); err != nil {
				t.Fatal(err)
			}
			if err := tt.setup(a); err != nil {
				t.Fatal(err)
			}
			var want []netip.Addr
			for i := 4; i <= 14; i++ {
				ip := netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
				if !slices.Contains(tt.skip, ip.String()) {
					want = append(want, ip)
				}
			}
			if n, _ := a.Available("z", "s"); n != uint64(len(want)) {
				t.Errorf("Available = %d, want %d", n, len(want))
			}
			if got := drain(t, a, "z", "s"); !slices.Equal(got, want) {
				t.Fatalf("handed out %v\nwant %v", got, want)
			}
			checkInvariants(t, a)
		})
	}
}

func TestRulesApplyToLaterPools(t *testing.T) {
	a := New()
	a.SetNodeIPs(addrs("10.0.0.4"))
	if err := a.Exclude(netip.MustParsePrefix("10.0.0.5/32")); err != nil {
		t.Fatal(err)
	}
	if err := a.AddSubnet("z", "s", netip.MustParsePrefix("10.0.0.0/28"), ReserveAWS); err != nil {
		t.Fatal(err)
	}
	if ip, err := a.Allocate("z", "s", "o"); err != nil || ip.String() != "10.0.0.6" {
		t.Fatalf("got %v, %v; want 10.0.0.6", ip, err)
	}
}

func TestStaticRange(t *testing.T) {
	a := New()
	if err := a.AddRange("z", "static", netip.MustParseAddr("192.0.2.250"), netip.MustParseAddr("192.0.3.1")); err != nil {
		t.Fatal(err)
	}
	got := drain(t, a, "z", "static")
	want := addrs("192.0.2.250", "192.0.2.251", "192.0.2.252", "192.0.2.253", "192.0.2.254", "192.0.2.255", "192.0.3.0", "192.0.3.1")
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range [][2]string{{"192.0.2.2", "192.0.2.1"}, {"192.0.2.1", "2001:db8::1"}} {
		if err := a.AddRange("z", "bad", netip.MustParseAddr(bad[0]), netip.MustParseAddr(bad[1])); !errors.Is(err, ErrInvalid) {
			t.Errorf("AddRange(%s, %s) = %v, want ErrInvalid", bad[0], bad[1], err)
		}
	}
}

func TestLargeIPv6Subnet(t *testing.T) {
	a := New()
	if err := a.AddSubnet("z", "v6", netip.MustParsePrefix("2001:db8:0:1::/64"), ReserveAWS); err != nil {
		t.Fatal(err)
	}
	n, _ := a.Available("z", "v6")
	if n != 1<<64-5 {
		t.Fatalf("Available = %d, want 2^64-5", n)
	}
	// Exclude the lower half and a bit: allocation must jump the range, not walk it.
	if err := a.Exclude(netip.MustParsePrefix("2001:db8:0:1::/65"), netip.MustParsePrefix("2001:db8:0:1:8000::/120")); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.Available("z", "v6"); n != 1<<63-1-256 {
		t.Fatalf("Available = %d, want 2^63-257", n)
	}
	for i := range 1000 {
		ip, err := a.Allocate("z", "v6", "o")
		if err != nil {
			t.Fatal(err)
		}
		want := netip.MustParseAddr("2001:db8:0:1:8000::100")
		for range i {
			want = want.Next()
		}
		if ip != want {
			t.Fatalf("allocation %d = %s, want %s", i, ip, want)
		}
	}
	// The very last addresses: exclude all but the last usable one.
	b := New()
	if err := b.AddSubnet("z", "v6", netip.MustParsePrefix("2001:db8::/64"), ReserveGCP); err != nil {
		t.Fatal(err)
	}
	if err := b.Exclude(netip.MustParsePrefix("2001:db8::/65"), netip.MustParsePrefix("2001:db8::8000:0:0:0/66"),
		netip.MustParsePrefix("2001:db8::c000:0:0:0/67"), netip.MustParsePrefix("2001:db8::e000:0:0:0/68")); err != nil {
		t.Fatal(err)
	}
	if err := b.Exclude(netip.MustParsePrefix("2001:db8::f000:0:0:0/68")); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, b, "z", "v6"); len(got) != 0 {
		t.Fatalf("fully excluded /64 handed out %v", got)
	}
	if err := b.SetExcluded([]netip.Prefix{netip.MustParsePrefix("2001:db8::/65"), netip.MustParsePrefix("2001:db8::8000:0:0:0/65")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Allocate("z", "v6", "o"); !IsExhausted(err) {
		t.Fatalf("exhausted by exclusion: %v", err)
	}
	checkInvariants(t, a)
	checkInvariants(t, b)
}

func TestErrorsNameZoneAndSubnet(t *testing.T) {
	a := New()
	if err := a.AddSubnet("eu-1a", "subnet-0abc", netip.MustParsePrefix("10.0.0.0/30"), ReserveGCP); err != nil {
		t.Fatal(err)
	}
	_, err := a.Allocate("eu-1a", "subnet-0abc", "gw")
	var se *SubnetError
	if !IsExhausted(err) || !errors.As(err, &se) || se.Zone != "eu-1a" || se.Subnet != "subnet-0abc" {
		t.Fatalf("exhausted: %v", err)
	}
	for _, want := range []string{`"eu-1a"`, `"subnet-0abc"`, "no free address"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %s", err, want)
		}
	}
	if _, err := a.Allocate("eu-1b", "subnet-0abc", "gw"); !IsUnknownSubnet(err) || !strings.Contains(err.Error(), `"eu-1b"`) {
		t.Errorf("unknown subnet: %v", err)
	}
	if err := a.MarkInUse("eu-1a", "subnet-0abc", netip.MustParseAddr("10.0.1.1")); !errors.Is(err, ErrOutsideSubnet) || !strings.Contains(err.Error(), "subnet-0abc") {
		t.Errorf("in use outside: %v", err)
	}
	err = a.Release(netip.MustParseAddr("10.0.0.1"))
	if !IsNotAllocated(err) || !strings.Contains(err.Error(), "subnet-0abc") {
		t.Errorf("release: %v", err)
	}
}

func TestAddSubnet(t *testing.T) {
	a := New()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.AddSubnet("z", "s1", netip.MustParsePrefix("10.0.0.0/24"), ReserveAWS))
	must(a.AddSubnet("z", "s1", netip.MustParsePrefix("10.0.0.0/24"), ReserveAWS)) // same again: no-op
	must(a.AddSubnet("z", "s6", netip.MustParsePrefix("2001:db8::/64"), ReserveAWS))
	tests := []struct {
		name, zone, id, prefix string
		res                    Reservation
		want                   error
	}{
		{"overlap", "z2", "s2", "10.0.0.128/25", ReserveAWS, ErrOverlap},
		{"covering overlap", "z2", "s2", "10.0.0.0/16", ReserveAWS, ErrOverlap},
		{"v6 overlap", "z2", "s2", "2001:db8::/48", ReserveAWS, ErrOverlap},
		{"same id, other range", "z", "s1", "10.0.1.0/24", ReserveAWS, ErrInvalid},
		{"same id, other profile", "z", "s1", "10.0.0.0/24", ReserveGCP, ErrInvalid},
		{"empty zone", "", "s", "10.1.0.0/24", ReserveAWS, ErrInvalid},
		{"empty id", "z", "", "10.1.0.0/24", ReserveAWS, ErrInvalid},
		{"negative reservation", "z", "s", "10.1.0.0/24", Reservation{First: -1}, ErrInvalid},
		{"v6 /0", "z", "s", "::/0", ReserveAWS, ErrInvalid},
		{"4in6", "z", "s", "::ffff:10.1.0.0/120", ReserveAWS, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.AddSubnet(tt.zone, tt.id, netip.MustParsePrefix(tt.prefix), tt.res)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if err := a.AddSubnet("z", "s", netip.Prefix{}, ReserveAWS); !errors.Is(err, ErrInvalid) {
		t.Errorf("invalid prefix: %v", err)
	}
	// Removing: refused while leased, allowed after release.
	ip, err := a.Allocate("z", "s1", "o")
	must(err)
	if err := a.RemoveSubnet("z", "s1"); !errors.Is(err, ErrSubnetInUse) {
		t.Fatalf("remove leased subnet: %v", err)
	}
	must(a.Release(ip))
	must(a.RemoveSubnet("z", "s1"))
	must(a.RemoveSubnet("z", "s1"))
	must(a.AddSubnet("z2", "s2", netip.MustParsePrefix("10.0.0.0/16"), ReserveAWS))
	checkInvariants(t, a)
}

func TestReleaseThenAllocate(t *testing.T) {
	a := New()
	if err := a.AddSubnet("z", "s", netip.MustParsePrefix("10.0.0.0/28"), ReserveAWS); err != nil {
		t.Fatal(err)
	}
	all := drain(t, a, "z", "s")
	for _, i := range []int{7, 2, 9} {
		if err := a.Release(all[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Release(all[2]); !IsNotAllocated(err) {
		t.Fatalf("double release: %v", err)
	}
	// Lowest first, whatever the release order.
	got := drain(t, a, "z", "s")
	if want := []netip.Addr{all[2], all[7], all[9]}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// A released address the cloud still reports in use stays out.
	if err := a.MarkInUse("z", "s", all[0]); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(all[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate("z", "s", "o"); !IsExhausted(err) {
		t.Fatalf("in-use address handed out: %v", err)
	}
	if err := a.SetInUse("z", "s", nil); err != nil {
		t.Fatal(err)
	}
	if ip, err := a.Allocate("z", "s", "o"); err != nil || ip != all[0] {
		t.Fatalf("got %v, %v; want %s", ip, err, all[0])
	}
	checkInvariants(t, a)
}

func TestRebuild(t *testing.T) {
	r := func(ip, zone, subnet, owner, node string) Record {
		return Record{IP: netip.MustParseAddr(ip), Zone: zone, Subnet: subnet, Owner: owner, Node: node}
	}
	setup := func(t *testing.T) *Allocator {
		a := New()
		if err := a.AddSubnet("z", "s", netip.MustParsePrefix("10.0.0.0/28"), ReserveAWS); err != nil {
			t.Fatal(err)
		}
		return a
	}
	t.Run("reclaimed before anything new", func(t *testing.T) {
		a := setup(t)
		err := a.Rebuild([]Record{r("10.0.0.4", "z", "s", "g1", "n1"), r("10.0.0.6", "z", "", "g2", "")})
		if err != nil {
			t.Fatal(err)
		}
		ip, err := a.Allocate("z", "s", "g3")
		if err != nil || ip.String() != "10.0.0.5" {
			t.Fatalf("got %v, %v; want 10.0.0.5", ip, err)
		}
		if ip, _ := a.Allocate("z", "s", "g3"); ip.String() != "10.0.0.7" {
			t.Fatalf("got %v, want 10.0.0.7", ip)
		}
		rec, ok := a.Lookup(netip.MustParseAddr("10.0.0.6"))
		if !ok || rec.Subnet != "s" || rec.Owner != "g2" {
			t.Fatalf("lookup: %+v %v (subnet filled in from the pool)", rec, ok)
		}
	})
	t.Run("rebuild replaces leases", func(t *testing.T) {
		a := setup(t)
		if _, err := a.Allocate("z", "s", "old"); err != nil {
			t.Fatal(err)
		}
		if err := a.Rebuild([]Record{r("10.0.0.9", "z", "s", "g", "")}); err != nil {
			t.Fatal(err)
		}
		if got := a.Records(); len(got) != 1 || got[0].IP.String() != "10.0.0.9" {
			t.Fatalf("records %v", got)
		}
		checkInvariants(t, a)
	})
	t.Run("conflict names both claimants", func(t *testing.T) {
		a := setup(t)
		err := a.Rebuild([]Record{
			r("10.0.0.5", "z", "s", "gw-b", "n2"),
			r("10.0.0.5", "z", "s", "gw-a", "n1"),
			r("10.0.0.5", "z", "s", "gw-a", "n1"), // identical duplicate: not a conflict
			r("10.0.0.7", "z", "s", "gw-c", ""),
		})
		var ce *ConflictError
		if !IsConflict(err) || !errors.As(err, &ce) {
			t.Fatalf("want a conflict, got %v", err)
		}
		if ce.Held.Owner != "gw-a" || ce.Claim.Owner != "gw-b" || ce.Addr.String() != "10.0.0.5" {
			t.Fatalf("conflict %+v", ce)
		}
		for _, want := range []string{"10.0.0.5", `"gw-a"`, `"gw-b"`, `"z"`, `"s"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q does not name %s", err, want)
			}
		}
		// Not resolved silently: the address stays held, the other records are reclaimed.
		if rec, _ := a.Lookup(netip.MustParseAddr("10.0.0.5")); rec.Owner != "gw-a" {
			t.Fatalf("held by %q", rec.Owner)
		}
		if _, ok := a.Lookup(netip.MustParseAddr("10.0.0.7")); !ok {
			t.Fatal("10.0.0.7 not reclaimed")
		}
		if ip, _ := a.Allocate("z", "s", "x"); ip.String() != "10.0.0.4" {
			t.Fatalf("got %v", ip)
		}
		if ip, _ := a.Allocate("z", "s", "x"); ip.String() != "10.0.0.6" {
			t.Fatalf("got %v", ip)
		}
	})
	t.Run("same order whatever the input order", func(t *testing.T) {
		a, b := setup(t), setup(t)
		recs := []Record{r("10.0.0.5", "z", "s", "gw-b", ""), r("10.0.0.5", "z", "s", "gw-a", "")}
		errA := a.Rebuild(recs)
		slices.Reverse(recs)
		errB := b.Rebuild(recs)
		if errA == nil || errA.Error() != errB.Error() || !slices.Equal(a.Records(), b.Records()) {
			t.Fatalf("%v\n%v", errA, errB)
		}
	})
	bad := []struct {
		name string
		rec  Record
		want error
	}{
		{"reserved first", r("10.0.0.3", "z", "s", "g", ""), ErrReserved},
		{"reserved last", r("10.0.0.15", "z", "", "g", ""), ErrReserved},
		{"other zone", r("10.0.0.5", "y", "s", "g", ""), ErrOutsideSubnet},
		{"other subnet", r("10.0.0.5", "z", "t", "g", ""), ErrOutsideSubnet},
		{"outside its subnet", r("10.0.1.5", "z", "s", "g", ""), ErrOutsideSubnet},
		{"no owner", r("10.0.0.5", "z", "s", "", ""), ErrInvalid},
		{"no zone", r("10.0.0.5", "", "s", "g", ""), ErrInvalid},
		{"no address", Record{Zone: "z", Owner: "g"}, ErrInvalid},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			a := setup(t)
			err := a.Rebuild([]Record{tt.rec, r("10.0.0.10", "z", "s", "ok", "")})
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if got := a.Records(); len(got) != 1 || got[0].Owner != "ok" {
				t.Fatalf("records %v", got)
			}
		})
	}
	t.Run("accepts excluded, in use and node addresses", func(t *testing.T) {
		a := setup(t)
		a.SetNodeIPs(addrs("10.0.0.4"))
		if err := a.Exclude(netip.MustParsePrefix("10.0.0.5/32")); err != nil {
			t.Fatal(err)
		}
		if err := a.MarkInUse("z", "s", addrs("10.0.0.6")...); err != nil {
			t.Fatal(err)
		}
		recs := []Record{r("10.0.0.4", "z", "s", "g", ""), r("10.0.0.5", "z", "s", "g", ""), r("10.0.0.6", "z", "s", "g", "")}
		if err := a.Rebuild(recs); err != nil {
			t.Fatal(err)
		}
		if ip, _ := a.Allocate("z", "s", "x"); ip.String() != "10.0.0.7" {
			t.Fatalf("got %v", ip)
		}
		for _, ip := range addrs("10.0.0.4", "10.0.0.5", "10.0.0.6") {
			if err := a.Release(ip); err != nil {
				t.Fatal(err)
			}
		}
		if ip, _ := a.Allocate("z", "s", "x"); ip.String() != "10.0.0.8" {
			t.Fatalf("released but still blocked addresses handed out: %v", ip)
		}
		checkInvariants(t, a)
	})
	t.Run("records before their subnet", func(t *testing.T) {
		a := New()
		err := a.Rebuild([]Record{r("10.0.0.4", "z", "s", "g", "n"), r("10.0.0.6", "z", "", "g", ""), r("2001:db8::9", "z", "v6", "g", "")})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.AddSubnet("z", "s", netip.MustParsePrefix("10.0.0.0/28"), ReserveAWS); err != nil {
			t.Fatal(err)
		}
		if got := drain(t, a, "z", "s"); len(got) != 9 || got[0].String() != "10.0.0.5" {
			t.Fatalf("got %v", got)
		}
		// A pending record that does not fit its subnet keeps the subnet out.
		if err := a.AddSubnet("z", "v6", netip.MustParsePrefix("2001:db8:1::/64"), ReserveAWS); !errors.Is(err, ErrOutsideSubnet) {
			t.Fatalf("got %v", err)
		}
		if err := a.AddSubnet("z", "v6", netip.MustParsePrefix("2001:db8::/120"), ReserveGCP); err != nil {
			t.Fatal(err)
		}
		if err := a.Rebuild([]Record{r("10.0.1.1", "y", "", "g", "")}); err != nil {
			t.Fatal(err)
		}
		if err := a.AddSubnet("z", "s2", netip.MustParsePrefix("10.0.1.0/24"), ReserveNone); !errors.Is(err, ErrOutsideSubnet) {
			t.Fatalf("record of zone y in a subnet of zone z: %v", err)
		}
		if err := a.Rebuild([]Record{r("10.0.1.1", "z", "", "g", "")}); err != nil {
			t.Fatal(err)
		}
		if err := a.AddSubnet("z", "s2", netip.MustParsePrefix("10.0.1.0/24"), ReserveAWS); !errors.Is(err, ErrReserved) {
			t.Fatalf("record on a reserved address: %v", err)
		}
		checkInvariants(t, a)
	})
}

func TestClaim(t *testing.T) {
	a := New()
	if err := a.AddSubnet("z", "s", netip.MustParsePrefix("10.0.0.0/28"), ReserveAWS); err != nil {
		t.Fatal(err)
	}
	rec := Record{IP: netip.MustParseAddr("::ffff:10.0.0.5"), Zone: "z", Owner: "g"}
	if err := a.Claim(rec); err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(rec); err != nil {
		t.Fatalf("claim again: %v", err)
	}
	rec.Owner = "h"
	if err := a.Claim(rec); !IsConflict(err) {
		t.Fatalf("claim by another: %v", err)
	}
	if err := a.SetNode(netip.MustParseAddr("10.0.0.5"), "n1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Lookup(netip.MustParseAddr("10.0.0.5")); got.Node != "n1" || got.Owner != "g" || got.Subnet != "s" {
		t.Fatalf("lookup %+v", got)
	}
	if err := a.SetNode(netip.MustParseAddr("10.0.0.6"), "n1"); !IsNotAllocated(err) {
		t.Fatalf("set node of a free address: %v", err)
	}
	if _, err := a.Allocate("z", "s", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty owner: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	a := New()
	if err := a.AddSubnet("z", "s", netip.MustParsePrefix("10.0.0.0/24"), ReserveAWS); err != nil {
		t.Fatal(err)
	}
	got := make([][]netip.Addr, 4)
	done := make(chan int)
	for g := range got {
		go func() {
			defer func() { done <- g }()
			for i := range 100 {
				ip, err := a.Allocate("z", "s", "o")
				if err != nil {
					if !IsExhausted(err) {
						t.Error(err)
					}
					return
				}
				if i%3 == 0 {
					if err := a.Release(ip); err != nil {
						t.Error(err)
					}
					continue
				}
				got[g] = append(got[g], ip)
				_, _ = a.Place("z", []netip.Addr{ip}, []Node{{"n", 1}})
				_ = a.SetNode(ip, "n")
			}
		}()
	}
	for range got {
		<-done
	}
	seen := map[netip.Addr]bool{}
	for _, ips := range got {
		for _, ip := range ips {
			if seen[ip] {
				t.Fatalf("%s handed out twice", ip)
			}
			seen[ip] = true
		}
	}
	if recs := a.Records(); len(recs) != len(seen) {
		t.Fatalf("%d records, %d addresses held", len(recs), len(seen))
	}
	checkInvariants(t, a)
}

// TestRegionalSubnet: a subnet that spans zones (GCE subnetworks and Azure subnets are
// regional) is added by each zone under the same ID and range, and the zones share one pool:
// no address is handed out twice across them, a claim of either zone fits, a third zone that
// did not add it does not, and a zone removes its share only without leases of its own while
// the others keep allocating. A different range under the same ID, or another ID over the
// same range, is still refused.
func TestRegionalSubnet(t *testing.T) {
	a := New()
	pfx := netip.MustParsePrefix("10.0.0.0/28")
	for _, z := range []string{"a", "b"} {
		if err := a.AddSubnet(z, "s", pfx, ReserveGCP); err != nil {
			t.Fatalf("zone %s adds the regional subnet: %v", z, err)
		}
	}
	if err := a.AddSubnet("c", "s", netip.MustParsePrefix("10.0.0.0/27"), ReserveGCP); !errors.Is(err, ErrOverlap) {
		t.Errorf("same ID, another range: %v, want an overlap", err)
	}
	if err := a.AddSubnet("c", "t", pfx, ReserveGCP); !errors.Is(err, ErrOverlap) {
		t.Errorf("another ID, same range: %v, want an overlap", err)
	}
	ipA, err := a.Allocate("a", "s", "ga")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(Record{IP: netip.MustParseAddr("10.0.0.5"), Zone: "b", Subnet: "s", Owner: "gb"}); err != nil {
		t.Errorf("claim in zone b: %v", err)
	}
	if err := a.Claim(Record{IP: netip.MustParseAddr("10.0.0.6"), Zone: "c", Subnet: "s", Owner: "gc"}); !errors.Is(err, ErrOutsideSubnet) {
		t.Errorf("claim in zone c, which did not add the subnet: %v, want outside the subnet", err)
	}
	got := append([]netip.Addr{ipA, netip.MustParseAddr("10.0.0.5")}, drain(t, a, "b", "s")...)
	slices.SortFunc(got, netip.Addr.Compare)
	if n := len(slices.Compact(slices.Clone(got))); n != len(got) || n != 16-4 {
		t.Errorf("zones a and b got %d addresses (%d distinct) of 12: %v", len(got), n, got)
	}
	if _, err := a.Allocate("a", "s", "x"); !IsExhausted(err) {
		t.Errorf("zone a after zone b drained the shared pool: %v, want exhausted", err)
	}
	if err := a.RemoveSubnet("a", "s"); !errors.Is(err, ErrSubnetInUse) {
		t.Errorf("zone a removes its share while it holds %s: %v, want in use", ipA, err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Release(ipA))
	must(a.RemoveSubnet("a", "s"))
	if _, err := a.Allocate("a", "s", "x"); !errors.Is(err, ErrUnknownSubnet) {
		t.Errorf("zone a after removing its share: %v, want unknown subnet", err)
	}
	if ip, err := a.Allocate("b", "s", "x"); err != nil || ip != ipA {
		t.Errorf("zone b after zone a left: %s, %v; want the freed %s", ip, err, ipA)
	}
}
