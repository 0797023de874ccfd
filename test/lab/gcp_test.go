package lab

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/test/cloudsim/gcp/gcefabric"
)

// TestGCPPublicEgress is GKE public egress end to end in the GCP lab (2 zones × 2 gateways,
// the real controller with provider gcp on the Compute Engine simulator, the real agents, a
// router applying GCE's rules: gcefabric). The demo group has cloud.public on: every zone's
// egress IP is an alias IP on its holder and a static external address through the holder's
// access config, which translates only the holder's primary address. The monitors' requests
// to the internet must show the external addresses and those to the on-premises network the
// alias IPs. A packet to the internet from an alias IP is dropped by the fabric (so the check
// can fail). The holder of zone a's IP is cold-crashed: the access config moves to the zone's
// other gateway (deleted on the old holder, added on the new), both destinations see the same
// addresses again, and the fabric dropped no user traffic for a wrong source.
func TestGCPPublicEgress(t *testing.T) {
	l, ctx, _, mons := monitoredLab(t, Config{Cloud: CloudGCP, Zones: 2})
	fabric := l.GCEFabric()
	v, err := l.WaitFor(ctx, time.Minute, "every egress IP with its public IP", func(v GatewayView) bool {
		return l.AllActive(v) && len(v.Public) == len(v.Holders)
	})
	if err != nil {
		t.Fatal(err)
	}
	onPrem := Monitors{}
	for _, p := range l.Monitors {
		onPrem = append(onPrem, NewMonitor(p, l.OnPrem))
	}
	octx, ocancel := context.WithCancel(ctx)
	odone := make(chan struct{})
	go func() { defer close(odone); onPrem.Run(octx) }()
	t.Cleanup(func() { ocancel(); <-odone })

	untranslated := func() uint64 {
		t.Helper()
		n, err := fabric.Untranslated()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// seen checks, over a few seconds of both monitors from now, that the internet saw exactly
	// the group's external addresses and the on-premises network its alias IPs, and that the
	// simulator translates each external address from its holder's primary address.
	seen := func(phase string, v GatewayView) {
		t.Helper()
		st := l.GCE.Snapshot()
		for alias, node := range v.Holders {
			n := l.Node(node)
			if key := gcefabric.InstanceKey(GCPProject, n.Zone.Name, n.Name); st.Aliases[alias] != key || st.External[v.Public[alias]] != key {
				t.Fatalf("%s: the simulator has alias %s on %q and %s's access config on %q, want both on %s",
					phase, alias, st.Aliases[alias], v.Public[alias], st.External[v.Public[alias]], key)
			}
			if st.NAT[v.Public[alias]] != n.IP.String() {
				t.Fatalf("%s: %s translates %q, want %s's primary address %s", phase, v.Public[alias], st.NAT[v.Public[alias]], node, n.IP)
			}
		}
		from := time.Now()
		time.Sleep(3 * time.Second)
		pub, priv := mons.Since(from), onPrem.Since(from)
		wantPub, wantPriv := egressSources(v), slices.Sorted(maps.Keys(v.Holders))
		if got := sources(pub); !slices.Equal(got, wantPub) {
			t.Fatalf("%s: the internet saw %v, want the external addresses %v", phase, got, wantPub)
		}
		if got := sources(priv); !slices.Equal(got, wantPriv) {
			t.Fatalf("%s: the on-premises network saw %v, want the alias IPs %v", phase, got, wantPriv)
		}
		t.Logf("%s: internet saw %v (%d requests, %d failed), on-premises %v (%d requests, %d failed)",
			phase, wantPub, len(pub), failed(pub), wantPriv, len(priv), failed(priv))
	}
	seen("before the crash", v)

	// A wrong source fails: from the alias, the internet is out of reach and the fabric counts
	// the drop. Until then it has dropped nothing.
	victim := holderIn(t, v, l, l.Config.zone(0))
	alias := v.HeldBy(victim)[0]
	public := v.Public[alias]
	if n := untranslated(); n != 0 {
		t.Fatalf("the fabric dropped %d internet-bound packets of untranslated sources before the probe", n)
	}
	if src, err := getFrom(l.Node(victim).Namespace, netip.MustParseAddr(alias), l.Echo); err == nil {
		t.Fatalf("a connection from the alias %s on %s reached the internet (seen from %s): GCE translates only the primary address", alias, victim, src)
	}
	probed := untranslated()
	drops, err := fabric.DroppedSources()
	if err != nil {
		t.Fatal(err)
	}
	if probed == 0 || drops[netip.MustParseAddr(alias)] != probed {
		t.Fatalf("after a SYN from the alias %s: %d dropped, by source %v", alias, probed, drops)
	}
	t.Logf("a connection from the alias %s on %s to the internet: refused by the fabric, %d packets dropped", alias, victim, probed)

	// Cold-crash zone a's holder: its alias and access config move to the zone's other gateway.
	l.GCE.ResetCalls()
	crash, err := l.ColdCrash(ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	moved, err := l.WaitFor(ctx, time.Minute, alias+" and "+public+" off "+victim, func(v GatewayView) bool {
		h := v.Holders[alias]
		return h != "" && h != victim && v.States[h] == "Active" && v.Public[alias] == public && l.ZonesHeld(v)
	})
	if err != nil {
		t.Fatal(err)
	}
	calls := l.GCE.CallCounts()
	heir := moved.Holders[alias]
	oldKey := gcefabric.InstanceKey(GCPProject, l.Node(victim).Zone.Name, victim)
	newKey := gcefabric.InstanceKey(GCPProject, l.Node(heir).Zone.Name, heir)
	var natOff, natOn time.Time
	for _, e := range l.GCE.Events() {
		if e.IP != public || e.At.Before(crash.At) {
			continue
		}
		switch {
		case e.Kind == "nat-" && e.Instance == oldKey:
			natOff = e.At
		case e.Kind == "nat+" && e.Instance == newKey:
			natOn = e.At
		}
	}
	if natOff.IsZero() || natOn.IsZero() || natOn.Before(natOff) {
		t.Fatalf("%s's access config: deleted on %s at %v, added on %s at %v; events %+v", public, victim, natOff, heir, natOn, l.GCE.Events())
	}
	if src, ok := l.GCE.Egress(l.Node(victim).IP.String()); ok {
		t.Fatalf("the crashed %s's primary address still leaves with %s", victim, src)
	}
	t.Logf("cold crash of %s: %s's access config deleted %s and added on %s %s after the crash; status Active on %s after %s; calls %v",
		victim, public, natOff.Sub(crash.At).Round(time.Millisecond), heir, natOn.Sub(crash.At).Round(time.Millisecond),
		heir, time.Since(crash.At).Round(time.Millisecond), calls)
	seen("after the move", moved)

	// No user request was dropped for a wrong source, before, during or after the move.
	if n := untranslated(); n != probed {
		drops, _ := fabric.DroppedSources()
		t.Fatalf("the fabric dropped %d internet-bound packets of untranslated sources besides the probe's %d: by source %v", n-probed, probed, drops)
	}
	pub := mons.Since(crash.At)
	t.Logf("internet-bound requests from the crash on: %d, %d failed; on-premises: %d, %d failed",
		len(pub), failed(pub), len(onPrem.Since(crash.At)), failed(onPrem.Since(crash.At)))
}

func failed(s []Sample) int {
	n := 0
	for _, x := range s {
		if !x.OK() {
			n++
		}
	}
	return n
}
