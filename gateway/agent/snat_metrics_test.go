package agent

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/gateway/agent/dataplane"
)

// TestSNATSampler: an egress IP's destination exhausted (at its budget with no other IP of the
// group to overflow to) counts once per episode, one at its budget whose group still has room
// elsewhere does not count, the top destinations are bounded per IP, and an IP never exhausted
// is reported with 0.
func TestSNATSampler(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	d1, d2, d3 := netip.MustParseAddrPort("203.0.113.1:443"), netip.MustParseAddrPort("203.0.113.2:443"), netip.MustParseAddrPort("203.0.113.3:443")
	sample := func(use ...dataplane.SNATUse) dataplane.SNATUsage {
		return dataplane.SNATUsage{Budget: 4, Use: use}
	}
	var s snatSampler
	now := time.Unix(0, 0)
	steps := []struct {
		u          dataplane.SNATUsage
		exhaustedA uint64
	}{
		{sample(dataplane.SNATUse{EgressIP: a, Destination: d1, Proto: 6, Ports: 3}, dataplane.SNATUse{EgressIP: b, Destination: d1, Proto: 6, Ports: 1}), 0},
		// a is full, b takes the overflow: not exhausted.
		{sample(dataplane.SNATUse{EgressIP: a, Destination: d1, Proto: 6, Ports: 4}, dataplane.SNATUse{EgressIP: b, Destination: d1, Proto: 6, Ports: 2}), 0},
		{sample(dataplane.SNATUse{EgressIP: a, Destination: d1, Proto: 6, Ports: 4, Exhausted: true}), 1},
		{sample(dataplane.SNATUse{EgressIP: a, Destination: d1, Proto: 6, Ports: 4, Exhausted: true}), 1}, // still full: same episode
		{sample(dataplane.SNATUse{EgressIP: a, Destination: d1, Proto: 6, Ports: 3}), 1},
		{sample(dataplane.SNATUse{EgressIP: a, Destination: d1, Proto: 6, Ports: 4, Exhausted: true}, dataplane.SNATUse{EgressIP: a, Destination: d2, Proto: 17, Ports: 4, Exhausted: true}), 3},
	}
	for i, st := range steps {
		s.add(st.u, now)
		if got := s.exhausted[a]; got != st.exhaustedA {
			t.Errorf("sample %d: %s exhausted %d times, want %d", i, a, got, st.exhaustedA)
		}
		if n, ok := s.exhausted[b]; !ok || n != 0 {
			t.Errorf("sample %d: %s exhausted %d (reported %v), want 0 and reported", i, b, n, ok)
		}
	}
	s.add(sample(dataplane.SNATUse{EgressIP: a, Destination: d1, Ports: 3}, dataplane.SNATUse{EgressIP: a, Destination: d2, Ports: 2},
		dataplane.SNATUse{EgressIP: b, Destination: d3, Ports: 2}, dataplane.SNATUse{EgressIP: a, Destination: d3, Ports: 1}), now)
	top := s.top(2)
	if len(top) != 3 || top[0].Destination != d1 || top[1].Destination != d2 || top[2].EgressIP != b {
		t.Errorf("top 2 per IP: %+v, want a→d1, a→d2, b→d3", top)
	}
	// egressd_snat_connections counts every destination, beyond the top ones.
	if c := s.connections(); c[a] != 6 || c[b] != 2 {
		t.Errorf("connections per egress IP %v, want %s 6, %s 2", c, a, b)
	}
}
