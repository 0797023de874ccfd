// Package gcefabric makes a test bed's router (test/netns) follow the Compute Engine simulator
// (test/cloudsim/gcp) as GCE's fabric does: an alias IP range reaches the instance holding it,
// and a packet towards the internet leaves only from an address an access config translates,
// the primary internal address of its interface, SNATed to the access config's natIP; from any
// other source (an alias IP, a primary without access config) it is dropped and counted.
// Traffic to other destinations (on-premises networks, peerings: no NAT) keeps its source.
// The agents' namespace test and the lab (test/lab, Config.Cloud "gcp") use it.
package gcefabric

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	gcpsim "github.com/egressd/egressd/test/cloudsim/gcp"
	"github.com/egressd/egressd/test/netns"
)

// The outside of a GCE bed, as the external host's addresses (netns.Spec.External, with the
// prefix the router routes to it): Internet is reached through GCE's internet gateway, where an
// access config's one-to-one NAT applies (198.20/16 is in no range of
// egressv1.DefaultPrivateCIDRs); OnPrem is a network the VPC routes to without NAT (a VPN, a
// peering), a private destination of cloud.privateCIDRs. The simulator's external addresses
// (203.0.113.0/24, 198.51.100.0/24) are in neither.
var (
	Internet = netip.MustParsePrefix("198.20.0.10/24")
	OnPrem   = netip.MustParsePrefix("172.16.0.10/24")
)

// Table is the nftables table (family ip) in the router namespace holding the access configs'
// one-to-one NAT and the drop of untranslated internet-bound packets.
const Table = "edlab_gce"

// extLink is the router's link towards the outside (test/netns), where the internet begins.
const extLink = "ext0"

// InstanceKey names an instance as the simulator's State does (project/zone/name).
func InstanceKey(project, zone, name string) string { return project + "/" + zone + "/" + name }

// Fabric is the router of a bed following a Compute simulator. Create it with New; call Sync,
// or Run.
type Fabric struct {
	sim      *gcpsim.Sim
	topo     *netns.Topology
	nodeOf   map[string]*netns.Node // InstanceKey → bed node
	internet netip.Prefix
	dir      string

	mu     sync.Mutex
	routes map[string]string // alias → InstanceKey
	nat    map[string]string // natIP → primary, as applied; nil before the first apply
	err    error             // last error of Run's syncs
}

// New returns the fabric of topo following sim: nodeOf maps each instance (InstanceKey) to its
// node, internet is the destination range behind the router's outside link where GCE's
// internet gateway (and so the access configs' NAT) applies, dir holds the nftables file.
func New(sim *gcpsim.Sim, topo *netns.Topology, nodeOf map[string]*netns.Node, internet netip.Prefix, dir string) *Fabric {
	return &Fabric{sim: sim, topo: topo, nodeOf: maps.Clone(nodeOf), internet: internet.Masked(), dir: dir,
		routes: map[string]string{}}
}

// Run syncs every poll until ctx ends. An error does not stop it: Err returns the last one.
func (f *Fabric) Run(ctx context.Context, poll time.Duration) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		err := f.Sync()
		f.mu.Lock()
		f.err = err
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Err returns the error of Run's last sync (nil when it succeeded).
func (f *Fabric) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Sync applies the simulator's current state: alias routes, and the NAT table when the access
// configs changed.
func (f *Fabric) Sync() error {
	st := f.sim.Snapshot()
	f.mu.Lock()
	defer f.mu.Unlock()
	for alias, key := range st.Aliases {
		n := f.nodeOf[key]
		if f.routes[alias] == key || n == nil {
			continue
		}
		if err := f.topo.RouteToNode(netip.PrefixFrom(netip.MustParseAddr(alias), 32), n); err != nil {
			return err
		}
		f.routes[alias] = key
	}
	for alias := range f.routes {
		if _, ok := st.Aliases[alias]; !ok {
			if err := f.topo.Unroute(netip.PrefixFrom(netip.MustParseAddr(alias), 32)); err != nil {
				return err
			}
			delete(f.routes, alias)
		}
	}
	if f.nat != nil && maps.Equal(f.nat, st.NAT) {
		return nil
	}
	if err := f.applyTable(st.NAT); err != nil {
		return err
	}
	f.nat = st.NAT
	return nil
}

// applyTable writes the fabric's table in one nftables transaction: whole the first time, then
// in place (the set of translated sources and the NAT chain flushed and refilled), so that the
// drop counters survive every change of the access configs.
func (f *Fabric) applyTable(nat map[string]string) error {
	var b strings.Builder
	if f.nat == nil {
		fmt.Fprintf(&b, "table ip %s\ndelete table ip %s\ntable ip %s {\n  counter untranslated {}\n", Table, Table, Table)
		b.WriteString("  set translated {\n    type ipv4_addr\n  }\n")
		b.WriteString("  set dropped {\n    type ipv4_addr\n    size 65536\n    flags dynamic\n    counter\n  }\n")
		b.WriteString("  chain forward {\n    type filter hook forward priority filter - 10; policy accept;\n")
		fmt.Fprintf(&b, "    oifname %q ip daddr %s ip saddr != @translated update @dropped { ip saddr } counter name \"untranslated\" drop\n  }\n",
			extLink, f.internet)
		b.WriteString("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n  }\n}\n")
	}
	fmt.Fprintf(&b, "flush set ip %s translated\nflush chain ip %s postrouting\n", Table, Table)
	natIPs := slices.Sorted(maps.Keys(nat))
	if len(natIPs) > 0 {
		primaries := make([]string, len(natIPs))
		for i, n := range natIPs {
			primaries[i] = nat[n]
		}
		fmt.Fprintf(&b, "add element ip %s translated { %s }\n", Table, strings.Join(primaries, ", "))
	}
	for _, n := range natIPs {
		fmt.Fprintf(&b, "add rule ip %s postrouting oifname %q ip daddr %s ip saddr %s snat to %s\n", Table, extLink, f.internet, nat[n], n)
	}
	if err := f.topo.Router.ApplyNFT(filepath.Join(f.dir, "gce.nft"), b.String()); err != nil {
		return fmt.Errorf("applying the GCE fabric table: %w", err)
	}
	return nil
}

// Routes returns what the fabric applied: alias → instance (InstanceKey), natIP → the primary
// address it translates.
func (f *Fabric) Routes() (aliases, nat map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.routes), maps.Clone(f.nat)
}

// Untranslated is how many packets towards the internet the fabric dropped for a source no
// access config translated at the time, since the fabric's first sync.
func (f *Fabric) Untranslated() (uint64, error) {
	out, err := f.topo.Router.Run("nft", "-j", "list", "counter", "ip", Table, "untranslated")
	if err != nil {
		return 0, fmt.Errorf("reading the GCE fabric's untranslated counter: %w: %s", err, out)
	}
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Packets uint64 `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return 0, fmt.Errorf("parsing the GCE fabric's untranslated counter: %w", err)
	}
	for _, x := range doc.Nftables {
		if x.Counter != nil {
			return x.Counter.Packets, nil
		}
	}
	return 0, fmt.Errorf("no untranslated counter in %s", out)
}

// DroppedSources returns Untranslated by source address.
func (f *Fabric) DroppedSources() (map[netip.Addr]uint64, error) {
	elems, err := f.topo.Router.NFTSetCounters("ip", Table, "dropped")
	if err != nil {
		return nil, fmt.Errorf("reading the GCE fabric's dropped sources: %w", err)
	}
	res := map[netip.Addr]uint64{}
	for _, e := range elems {
		if len(e.Val) != 1 {
			continue
		}
		ip, err := netip.ParseAddr(e.Val[0])
		if err != nil {
			return nil, fmt.Errorf("parsing the GCE fabric's dropped sources: %w", err)
		}
		res[ip] += e.Packets
	}
	return res, nil
}
