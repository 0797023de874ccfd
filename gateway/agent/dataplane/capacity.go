package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/egressd/egressd/bpf"
)

// CapacityError is returned by Apply when a state does not fit the bpf maps.
// Apply returns it before writing anything, so the datapath keeps the last
// state that was applied.
type CapacityError struct {
	Map       string // bpf map name: endpoints, rules4, rules6, groups, served, sources
	Needed    int    // entries the map must hold while the state is applied
	Available int    // the map's max_entries
}

func (e *CapacityError) Error() string {
	return fmt.Sprintf("bpf map %s: state needs %d entries, map holds %d", e.Map, e.Needed, e.Available)
}

// plan is what applyMaps writes, with the map contents it was computed
// against (read under d.mu, which every writer of these maps holds).
type plan struct {
	wantRules map[bpf.RuleKey]bpf.Rule
	haveRules map[bpf.RuleKey]bpf.Rule
	haveEP    map[netip.Addr]bpf.Endpoint
	haveG     map[uint32][]bpf.Gateway
	// Sources (node entries included) this state admits, and those the map
	// holds.
	wantSources map[bpf.Source]bool
	haveSources map[bpf.Source]bool
}

// wantSources are the source map entries of a gateway role: one per pod
// address and group, and one per node.
func wantSources(r *GatewayRole) map[bpf.Source]bool {
	want := map[bpf.Source]bool{}
	if r == nil {
		return want
	}
	for _, s := range r.Sources {
		want[bpf.Source{Node: s.Node, Group: s.Group, Pod: s.Pod.Unmap()}] = true
	}
	for _, n := range r.Nodes {
		want[bpf.Source{Node: n}] = true
	}
	return want
}

func wantRules(s *State) map[bpf.RuleKey]bpf.Rule {
	want := map[bpf.RuleKey]bpf.Rule{}
	for _, ps := range s.PolicySets {
		for _, dst := range ps.Destinations {
			want[bpf.RuleKey{PolicySet: ps.ID, Prefix: dst.Prefix.Masked()}] = bpf.Rule{Group: dst.Group}
		}
		for _, ex := range ps.Excluded {
			want[bpf.RuleKey{PolicySet: ps.ID, Prefix: ex.Masked()}] = bpf.Rule{Excluded: true}
		}
	}
	return want
}

// unionSize counts the keys of have and want together: the peak size of a
// map written by upserting want before deleting the keys of have it lacks.
func unionSize[K comparable, V any](have map[K]V, want map[K]bool) int {
	n := len(have)
	for k := range want {
		if _, ok := have[k]; !ok {
			n++
		}
	}
	return n
}

// byFamily splits the keys of rules into IPv4 and IPv6 (the rules4 and
// rules6 maps).
func byFamily(rules map[bpf.RuleKey]bpf.Rule) (v4, v6 map[bpf.RuleKey]bool) {
	v4, v6 = map[bpf.RuleKey]bool{}, map[bpf.RuleKey]bool{}
	for k := range rules {
		if k.Prefix.Addr().Is4() {
			v4[k] = true
		} else {
			v6[k] = true
		}
	}
	return v4, v6
}

// planMaps reads the maps and checks that s fits them at every step of the
// write order of applyMaps and applyGateway. The peak of each map is:
//   - endpoints: the desired entries only, since departed endpoints are
//     deleted before any is added;
//   - rules4, rules6, groups, served, sources: old and new entries together, since
//     new ones are written before stale ones go (no window where a prefix
//     or group present before and after is missing).
//
// It returns a *CapacityError for each map that would overflow (joined).
func (d *Dataplane) planMaps(s *State) (*plan, error) {
	dp := d.dp
	p := &plan{wantRules: wantRules(s), wantSources: wantSources(s.Gateway)}
	var err error
	if p.haveRules, err = dp.Rules(); err != nil {
		return nil, err
	}
	if p.haveEP, err = dp.Endpoints(); err != nil {
		return nil, err
	}
	if p.haveG, err = dp.Groups(); err != nil {
		return nil, err
	}
	served, err := dp.Served()
	if err != nil {
		return nil, err
	}
	if p.haveSources, err = dp.Sources(); err != nil {
		return nil, err
	}
	if s.Gateway != nil && s.Gateway.KeepSources {
		for src := range p.haveSources {
			p.wantSources[src] = true
		}
	}
	capa := dp.Capacity()

	wantEP := map[netip.Addr]bool{}
	for _, pod := range s.Pods {
		for _, ip := range pod.IPs {
			wantEP[ip.Unmap()] = true
		}
	}
	have4, have6 := byFamily(p.haveRules)
	want4, want6 := byFamily(p.wantRules)
	wantG := map[uint32]bool{}
	for _, g := range s.Groups {
		wantG[g.ID] = true
	}
	haveServed := map[uint32]bool{}
	for _, id := range served {
		haveServed[id] = true
	}
	wantServed := map[uint32]bool{}
	if s.Gateway != nil {
		for _, g := range s.Gateway.Groups {
			wantServed[g.Group] = true
		}
	}
	var errs []error
	for _, c := range []struct {
		name      string
		needed    int
		available uint32
	}{
		{"endpoints", len(wantEP), capa.Endpoints},
		{"rules4", unionSize(have4, want4), capa.Rules4},
		{"rules6", unionSize(have6, want6), capa.Rules6},
		{"groups", unionSize(p.haveG, wantG), capa.Groups},
		{"served", unionSize(haveServed, wantServed), capa.Served},
		{"sources", unionSize(p.haveSources, p.wantSources), capa.Sources},
	} {
		if c.needed > int(c.available) {
			errs = append(errs, &CapacityError{Map: c.name, Needed: c.needed, Available: int(c.available)})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}
