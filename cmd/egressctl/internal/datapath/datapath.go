// Package datapath builds egressctl list: the node's datapath tables read from the maps the
// agent pinned on bpffs (read-only), as rows for people or as a JSON/YAML document.
package datapath

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/egressd/egressd/bpf"
)

// Table is the node's datapath; it is also the -o json|yaml document.
type Table struct {
	PinDir    string     `json:"pinDir"`
	Endpoints []Endpoint `json:"endpoints"`
	Rules     []Rule     `json:"rules"`
	Groups    []Group    `json:"groups"`
	// Served are the groups this node forwards for as a gateway.
	Served []uint32 `json:"servedGroups,omitempty"`
	// EgressAddrs are the egress addresses the agent put on this node's interfaces.
	EgressAddrs []EgressAddr `json:"egressAddresses,omitempty"`
	Counters    []Counter    `json:"counters"`
}

// Endpoint is a local pod address.
type Endpoint struct {
	IP        string `json:"ip"`
	PolicySet uint32 `json:"policySet"`
	Ifindex   uint32 `json:"ifindex"`
}

// Rule is a destination prefix of a policy set.
type Rule struct {
	PolicySet   uint32 `json:"policySet"`
	Destination string `json:"destination"`
	Group       uint32 `json:"group,omitempty"`
	Excluded    bool   `json:"excluded,omitempty"`
}

// Group is a gateway group and its gateways in datapath order.
type Group struct {
	ID       uint32    `json:"id"`
	Gateways []Gateway `json:"gateways"`
}

// Gateway is one gateway of a group.
type Gateway struct {
	ID       uint32 `json:"id"`
	Underlay string `json:"underlayIP"`
	Healthy  bool   `json:"healthy"`
	// Draining gateways keep their established flows and get no new ones.
	Draining bool `json:"draining,omitempty"`
	Local    bool `json:"local,omitempty"`
}

// EgressAddr is an address the agent added to an interface.
type EgressAddr struct {
	Prefix  string `json:"prefix"`
	Ifindex int    `json:"ifindex"`
}

// Counter is the traffic of a group through one gateway.
type Counter struct {
	Group uint32 `json:"group"`
	// Gateway is the gateway id: 0 when none could be chosen, 0xffffffff for the traffic this
	// node forwards as a gateway.
	Gateway uint32            `json:"gateway"`
	Via     string            `json:"via"`
	Packets uint64            `json:"packets"`
	Bytes   uint64            `json:"bytes"`
	Drops   map[string]uint64 `json:"drops,omitempty"`
}

// Read reads the tables of the datapath pinned under pinRoot (<bpffs>/egressd).
func Read(pinRoot string) (*Table, error) {
	r, err := bpf.OpenPinned(pinRoot)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	t := &Table{PinDir: r.Dir()}

	eps, err := r.Endpoints()
	if err != nil {
		return nil, err
	}
	for ip, ep := range eps {
		t.Endpoints = append(t.Endpoints, Endpoint{IP: ip.String(), PolicySet: ep.PolicySet, Ifindex: ep.Ifindex})
	}
	slices.SortFunc(t.Endpoints, func(a, b Endpoint) int {
		return netip.MustParseAddr(a.IP).Compare(netip.MustParseAddr(b.IP))
	})

	rules, err := r.Rules()
	if err != nil {
		return nil, err
	}
	type sortRule struct {
		k bpf.RuleKey
		v bpf.Rule
	}
	var rs []sortRule
	for k, v := range rules {
		rs = append(rs, sortRule{k, v})
	}
	slices.SortFunc(rs, func(a, b sortRule) int {
		return cmp.Or(cmp.Compare(a.k.PolicySet, b.k.PolicySet), a.k.Prefix.Addr().Compare(b.k.Prefix.Addr()),
			cmp.Compare(a.k.Prefix.Bits(), b.k.Prefix.Bits()))
	})
	for _, x := range rs {
		t.Rules = append(t.Rules, Rule{PolicySet: x.k.PolicySet, Destination: x.k.Prefix.String(), Group: x.v.Group, Excluded: x.v.Excluded})
	}

	groups, err := r.Groups()
	if err != nil {
		return nil, err
	}
	underlay := map[uint32]string{}
	for id, gws := range groups {
		g := Group{ID: id}
		for _, gw := range gws {
			u := gw.Underlay.String()
			underlay[gw.ID] = u
			g.Gateways = append(g.Gateways, Gateway{ID: gw.ID, Underlay: u, Healthy: gw.Healthy, Draining: gw.Draining, Local: gw.Local})
		}
		t.Groups = append(t.Groups, g)
	}
	slices.SortFunc(t.Groups, func(a, b Group) int { return cmp.Compare(a.ID, b.ID) })

	if t.Served, err = r.Served(); err != nil {
		return nil, err
	}
	slices.Sort(t.Served)
	owned, err := r.OwnedAddrs()
	if err != nil {
		return nil, err
	}
	for _, a := range owned {
		t.EgressAddrs = append(t.EgressAddrs, EgressAddr{Prefix: a.Prefix.String(), Ifindex: a.Ifindex})
	}
	slices.SortFunc(t.EgressAddrs, func(a, b EgressAddr) int { return strings.Compare(a.Prefix, b.Prefix) })

	stats, err := r.Stats()
	if err != nil {
		return nil, err
	}
	for k, s := range stats {
		c := Counter{Group: k.Group, Gateway: k.Gateway, Packets: s.Packets, Bytes: s.Bytes, Via: via(k.Gateway, underlay)}
		for i, n := range s.Drops {
			if n > 0 {
				if c.Drops == nil {
					c.Drops = map[string]uint64{}
				}
				c.Drops[bpf.DropReasonNames[i]] = n
			}
		}
		t.Counters = append(t.Counters, c)
	}
	slices.SortFunc(t.Counters, func(a, b Counter) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Gateway, b.Gateway))
	})
	return t, nil
}

// via names a counter's gateway: its underlay IP when a group lists it, else the id read as
// an IPv4 address (the agent's gateway ids are underlay IPs, big-endian).
func via(id uint32, underlay map[uint32]string) string {
	switch id {
	case 0:
		return "(no gateway)"
	case bpf.GatewaySelf:
		return "(forwarded as gateway)"
	}
	if u, ok := underlay[id]; ok {
		return u
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], id)
	return netip.AddrFrom4(b).String() + " (not listed)"
}

// WriteText writes the tables for people.
func WriteText(w io.Writer, t *Table) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Datapath pinned under %s\n\n", t.PinDir)

	fmt.Fprintln(tw, "POD IP\tPOLICY SET\tIFINDEX")
	for _, e := range t.Endpoints {
		set := fmt.Sprint(e.PolicySet)
		if e.PolicySet == 0 {
			set = "0 (none: node IP)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\n", e.IP, set, e.Ifindex)
	}
	if len(t.Endpoints) == 0 {
		fmt.Fprintln(tw, "(no pod endpoints)\t\t")
	}

	fmt.Fprintln(tw, "\nPOLICY SET\tDESTINATION\tACTION")
	for _, r := range t.Rules {
		action := fmt.Sprintf("group %d", r.Group)
		if r.Excluded {
			action = "excluded (node IP)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", r.PolicySet, r.Destination, action)
	}
	if len(t.Rules) == 0 {
		fmt.Fprintln(tw, "(no rules)\t\t")
	}

	fmt.Fprintln(tw, "\nGROUP\tGATEWAY ID\tUNDERLAY IP\tHEALTHY\tDRAINING\tLOCAL")
	for _, g := range t.Groups {
		if len(g.Gateways) == 0 {
			fmt.Fprintf(tw, "%d\t(no gateway: traffic dropped)\t\t\t\t\n", g.ID)
		}
		for _, gw := range g.Gateways {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\n", g.ID, gw.ID, gw.Underlay, yesNo(gw.Healthy), yesNo(gw.Draining), yesNo(gw.Local))
		}
	}
	if len(t.Groups) == 0 {
		fmt.Fprintln(tw, "(no groups)\t\t\t\t\t")
	}

	if len(t.Served) > 0 || len(t.EgressAddrs) > 0 {
		served := make([]string, len(t.Served))
		for i, s := range t.Served {
			served[i] = fmt.Sprint(s)
		}
		fmt.Fprintf(tw, "\nGateway role: serves groups %s\n", dash(strings.Join(served, ", ")))
		for _, a := range t.EgressAddrs {
			fmt.Fprintf(tw, "  egress address %s on ifindex %d\n", a.Prefix, a.Ifindex)
		}
	}

	fmt.Fprintln(tw, "\nGROUP\tVIA\tPACKETS\tBYTES\tDROPS")
	for _, c := range t.Counters {
		var drops []string
		for _, name := range bpf.DropReasonNames {
			if n := c.Drops[name]; n > 0 {
				drops = append(drops, fmt.Sprintf("%s=%d", name, n))
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\n", c.Group, c.Via, c.Packets, c.Bytes, dash(strings.Join(drops, " ")))
	}
	if len(t.Counters) == 0 {
		fmt.Fprintln(tw, "(no traffic counted yet)\t\t\t\t")
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
