package ipalloc

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestPlace(t *testing.T) {
	ips := addrs("10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9")
	tests := []struct {
		name     string
		n        int               // place ips[:n]
		current  map[string]string // ip → node recorded with SetNode
		nodes    []Node
		want     map[string]string
		unplaced int
	}{
		{
			name:  "even spread, ties by name",
			n:     4,
			nodes: []Node{{"c", 5}, {"a", 5}, {"b", 5}},
			want:  map[string]string{"10.0.0.4": "a", "10.0.0.5": "b", "10.0.0.6": "c", "10.0.0.7": "a"},
		},
		{
			name:  "more free slots wins a tie in count",
			n:     3,
			nodes: []Node{{"a", 1}, {"b", 3}, {"c", 2}},
			want:  map[string]string{"10.0.0.4": "b", "10.0.0.5": "c", "10.0.0.6": "a"},
		},
		{
			name:     "never over capacity",
			n:        6,
			nodes:    []Node{{"a", 1}, {"b", 4}, {"c", 0}},
			want:     map[string]string{"10.0.0.4": "b", "10.0.0.5": "a", "10.0.0.6": "b", "10.0.0.7": "b", "10.0.0.8": "b"},
			unplaced: 1,
		},
		{
			name:     "no node",
			n:        2,
			want:     map[string]string{},
			unplaced: 2,
		},
		{
			name:     "negative free is none",
			n:        1,
			nodes:    []Node{{"a", -3}},
			want:     map[string]string{},
			unplaced: 1,
		},
		{
			name:    "addresses stay on their node, even a full one",
			n:       4,
			current: map[string]string{"10.0.0.4": "a", "10.0.0.5": "a", "10.0.0.6": "gone"},
			nodes:   []Node{{"a", 0}, {"b", 5}},
			want:    map[string]string{"10.0.0.4": "a", "10.0.0.5": "a", "10.0.0.6": "b", "10.0.0.7": "b"},
		},
		{
			name:    "moved addresses go to the node holding fewest",
			n:       5,
			current: map[string]string{"10.0.0.4": "a", "10.0.0.5": "a", "10.0.0.6": "b", "10.0.0.7": "dead", "10.0.0.8": "dead"},
			nodes:   []Node{{"a", 5}, {"b", 5}, {"c", 1}},
			want:    map[string]string{"10.0.0.4": "a", "10.0.0.5": "a", "10.0.0.6": "b", "10.0.0.7": "c", "10.0.0.8": "b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New()
			if err := a.AddSubnet("z", "s", netip.MustParsePrefix("10.0.0.0/28"), ReserveAWS); err != nil {
				t.Fatal(err)
			}
			for _, ip := range ips[:tt.n] {
				if err := a.Claim(Record{IP: ip, Zone: "z", Owner: "g", Node: tt.current[ip.String()]}); err != nil {
					t.Fatal(err)
				}
			}
			got, err := a.Place("z", ips[:tt.n], tt.nodes)
			var ce *CapacityError
			switch {
			case tt.unplaced == 0 && err != nil:
				t.Fatal(err)
			case tt.unplaced > 0 && (!IsNoCapacity(err) || !errors.As(err, &ce) || len(ce.Unplaced) != tt.unplaced || ce.Zone != "z"):
				t.Fatalf("want %d unplaced, got %v", tt.unplaced, err)
			}
			gotS := map[string]string{}
			for ip, n := range got {
				gotS[ip.String()] = n
			}
			if !maps.Equal(gotS, tt.want) {
				t.Fatalf("got %v\nwant %v", gotS, tt.want)
			}
			// Same answer whatever the input order.
			rev := slices.Clone(ips[:tt.n])
			slices.Reverse(rev)
			nodes := slices.Clone(tt.nodes)
			slices.Reverse(nodes)
			again, _ := a.Place("z", rev, nodes)
			if !maps.Equal(got, again) {
				t.Fatalf("order changed the placement: %v vs %v", got, again)
			}
		})
	}
}

func TestPlaceErrors(t *testing.T) {
	a := New()
	if err := a.AddSubnet("z", "s", netip.MustParsePrefix("10.0.0.0/28"), ReserveAWS); err != nil {
		t.Fatal(err)
	}
	if err := a.AddSubnet("y", "t", netip.MustParsePrefix("10.0.1.0/28"), ReserveAWS); err != nil {
		t.Fatal(err)
	}
	ip, _ := a.Allocate("z", "s", "g")
	other, _ := a.Allocate("y", "t", "g")
	tests := []struct {
		name  string
		ips   []netip.Addr
		nodes []Node
		want  error
		says  string
	}{
		{"not leased", addrs("10.0.0.9"), nil, ErrNotAllocated, "10.0.0.9"},
		{"other zone", []netip.Addr{other}, nil, ErrOutsideSubnet, `"y"`},
		{"listed twice", []netip.Addr{ip, ip}, nil, ErrInvalid, "twice"},
		{"node twice", []netip.Addr{ip}, []Node{{"a", 1}, {"a", 2}}, ErrInvalid, `"a"`},
		{"node without name", []netip.Addr{ip}, []Node{{"", 1}}, ErrInvalid, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Place("z", tt.ips, tt.nodes)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.says) || !strings.Contains(err.Error(), `"z"`) {
				t.Fatalf("got %v, want %v naming %s and the zone", err, tt.want, tt.says)
			}
		})
	}
}
