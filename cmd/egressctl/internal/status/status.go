// Package status builds egressctl status: every EgressGateway with its gateways by zone, its
// egress IPs and who holds them, its conditions, and the policies that use it, from what the
// coordinator wrote in the API.
package status

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
)

// Report is the whole status; it is also the -o json|yaml document.
type Report struct {
	Gateways []Gateway `json:"gateways"`
	// Orphans are policies whose gateway does not exist (only when no gateway was named).
	Orphans []Policy `json:"orphanPolicies,omitempty"`
}

// Gateway is one EgressGateway.
type Gateway struct {
	Name       string      `json:"name"`
	Mode       string      `json:"mode"`
	Affinity   string      `json:"zoneAffinity"`
	GroupID    int32       `json:"groupID,omitempty"`
	Ready      int32       `json:"readyGateways"`
	EgressIPs  []string    `json:"egressIPs,omitempty"`
	Conditions []Condition `json:"conditions,omitempty"`
	Zones      []Zone      `json:"zones,omitempty"`
	Policies   []Policy    `json:"policies,omitempty"`
	// Stale is set when the status reflects an older spec generation.
	Stale bool `json:"stale,omitempty"`
}

// Condition is a status condition.
type Condition struct {
	Type    string       `json:"type"`
	Status  string       `json:"status"`
	Reason  string       `json:"reason,omitempty"`
	Message string       `json:"message,omitempty"`
	Since   *metav1.Time `json:"since,omitempty"`
}

// Zone is one zone of a gateway group.
type Zone struct {
	Name      string     `json:"name"`
	Gateways  []Node     `json:"gateways,omitempty"`
	EgressIPs []EgressIP `json:"egressIPs,omitempty"`
}

// Node is one gateway node.
type Node struct {
	Node       string       `json:"node"`
	State      string       `json:"state"`
	Since      *metav1.Time `json:"since,omitempty"`
	UnderlayIP string       `json:"underlayIP,omitempty"`
	Reason     string       `json:"reason,omitempty"`
}

// EgressIP is an egress address, where the coordinator says it is and what the ledger
// (the EgressIP object) says.
type EgressIP struct {
	IP       string `json:"ip"`
	PublicIP string `json:"publicIP,omitempty"`
	// Holder is the node holding the address; empty while it moves.
	Holder string `json:"holder,omitempty"`
	// Desired is the node the coordinator wants it on (EgressIP spec.node).
	Desired string `json:"desired,omitempty"`
	// Assigned is the EgressIP's Assigned condition status, with its reason.
	Assigned       string `json:"assigned,omitempty"`
	AssignedReason string `json:"assignedReason,omitempty"`
}

// Policy is an EgressPolicy or ClusterEgressPolicy using a gateway.
type Policy struct {
	Kind        string `json:"kind"`
	Namespace   string `json:"namespace,omitempty"`
	Name        string `json:"name"`
	Gateway     string `json:"gateway"`
	Accepted    string `json:"accepted"`
	Ready       string `json:"ready"`
	Reason      string `json:"reason,omitempty"`
	MatchedPods int32  `json:"matchedPods"`
}

// Gather reads gateways, egress IPs and policies. With name set, only that gateway (an error
// when it does not exist).
func Gather(ctx context.Context, c client.Reader, name string) (*Report, error) {
	var gws []egressv1.EgressGateway
	if name != "" {
		var g egressv1.EgressGateway
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &g); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("EgressGateway %q not found", name)
			}
			return nil, fmt.Errorf("reading EgressGateway %s: %w", name, err)
		}
		gws = append(gws, g)
	} else {
		var l egressv1.EgressGatewayList
		if err := c.List(ctx, &l); err != nil {
			return nil, fmt.Errorf("listing EgressGateways: %w", err)
		}
		gws = l.Items
	}
	var eips egressv1.EgressIPList
	if err := c.List(ctx, &eips); err != nil {
		return nil, fmt.Errorf("listing EgressIPs: %w", err)
	}
	pols, err := policies(ctx, c)
	if err != nil {
		return nil, err
	}

	rep := &Report{}
	known := map[string]bool{}
	for i := range gws {
		known[gws[i].Name] = true
		rep.Gateways = append(rep.Gateways, gateway(&gws[i], eips.Items, pols))
	}
	slices.SortFunc(rep.Gateways, func(a, b Gateway) int { return strings.Compare(a.Name, b.Name) })
	if name == "" {
		for _, p := range pols {
			if !known[p.Gateway] {
				rep.Orphans = append(rep.Orphans, p)
			}
		}
	}
	return rep, nil
}

func policies(ctx context.Context, c client.Reader) ([]Policy, error) {
	var out []Policy
	cond := func(conds []metav1.Condition, t string) (string, string) {
		if c := meta.FindStatusCondition(conds, t); c != nil {
			return string(c.Status), c.Reason
		}
		return "Unknown", ""
	}
	add := func(kind, ns, name, gw string, st *egressv1.EgressPolicyStatus) {
		p := Policy{Kind: kind, Namespace: ns, Name: name, Gateway: gw, MatchedPods: st.MatchedPods}
		var ar, rr string
		p.Accepted, ar = cond(st.Conditions, egressv1.ConditionAccepted)
		p.Ready, rr = cond(st.Conditions, egressv1.ConditionReady)
		switch { // the reason worth reading: why it is not accepted, else why not ready
		case p.Accepted != "True":
			p.Reason = ar
		case p.Ready != "True":
			p.Reason = rr
		}
		out = append(out, p)
	}
	var l egressv1.EgressPolicyList
	if err := c.List(ctx, &l); err != nil {
		return nil, fmt.Errorf("listing EgressPolicies: %w", err)
	}
	for i := range l.Items {
		p := &l.Items[i]
		add("EgressPolicy", p.Namespace, p.Name, p.Spec.Gateway, &p.Status)
	}
	var cl egressv1.ClusterEgressPolicyList
	if err := c.List(ctx, &cl); err != nil {
		return nil, fmt.Errorf("listing ClusterEgressPolicies: %w", err)
	}
	for i := range cl.Items {
		p := &cl.Items[i]
		add("ClusterEgressPolicy", "", p.Name, p.Spec.Gateway, &p.Status)
	}
	slices.SortFunc(out, func(a, b Policy) int {
		return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

func gateway(g *egressv1.EgressGateway, eips []egressv1.EgressIP, pols []Policy) Gateway {
	out := Gateway{
		Name: g.Name, Mode: string(contract.Mode(&g.Spec)),
		Affinity: string(contract.ZoneAffinity(&g.Spec)), GroupID: g.Status.GroupID,
		Ready: g.Status.ReadyGateways, EgressIPs: g.Status.EgressIPs,
		Stale: g.Status.ObservedGeneration != 0 && g.Status.ObservedGeneration < g.Generation,
	}
	for _, t := range []string{egressv1.ConditionReady, egressv1.ConditionDegraded, egressv1.ConditionCloudSynced} {
		c := meta.FindStatusCondition(g.Status.Conditions, t)
		if c == nil {
			out.Conditions = append(out.Conditions, Condition{Type: t, Status: "Unknown", Reason: "NotReported"})
			continue
		}
		since := c.LastTransitionTime
		out.Conditions = append(out.Conditions, Condition{Type: t, Status: string(c.Status), Reason: c.Reason, Message: c.Message, Since: &since})
	}

	ledger := map[string]*egressv1.EgressIP{}
	for i := range eips {
		if eips[i].Spec.Gateway == g.Name {
			ledger[eips[i].Spec.IP] = &eips[i]
		}
	}
	zones := map[string]*Zone{}
	zone := func(name string) *Zone {
		if z, ok := zones[name]; ok {
			return z
		}
		z := &Zone{Name: name}
		zones[name] = z
		return z
	}
	for _, zs := range g.Status.Zones {
		z := zone(zs.Name)
		for _, n := range zs.Gateways {
			z.Gateways = append(z.Gateways, Node{Node: n.Node, State: string(n.State), Since: n.Since, UnderlayIP: n.UnderlayIP, Reason: n.Reason})
		}
		for _, h := range zs.EgressIPs {
			e := EgressIP{IP: h.IP, PublicIP: h.PublicIP, Holder: h.Node}
			if l := ledger[h.IP]; l != nil {
				fromLedger(&e, l)
				delete(ledger, h.IP)
			}
			z.EgressIPs = append(z.EgressIPs, e)
		}
	}
	// Addresses in the ledger that the gateway's status does not list yet (being provisioned).
	for _, l := range ledger {
		e := EgressIP{IP: l.Spec.IP, PublicIP: l.Status.PublicIP, Holder: l.Status.Node}
		fromLedger(&e, l)
		z := zone(l.Spec.Zone)
		z.EgressIPs = append(z.EgressIPs, e)
	}
	for _, z := range zones {
		slices.SortFunc(z.Gateways, func(a, b Node) int { return strings.Compare(a.Node, b.Node) })
		slices.SortFunc(z.EgressIPs, func(a, b EgressIP) int { return strings.Compare(a.IP, b.IP) })
		out.Zones = append(out.Zones, *z)
	}
	slices.SortFunc(out.Zones, func(a, b Zone) int { return strings.Compare(a.Name, b.Name) })
	for _, p := range pols {
		if p.Gateway == g.Name {
			out.Policies = append(out.Policies, p)
		}
	}
	return out
}

func fromLedger(e *EgressIP, l *egressv1.EgressIP) {
	e.Desired = l.Spec.Node
	if e.PublicIP == "" {
		e.PublicIP = l.Status.PublicIP
	}
	if e.Holder == "" {
		e.Holder = l.Status.Node
	}
	if c := meta.FindStatusCondition(l.Status.Conditions, egressv1.ConditionAssigned); c != nil {
		e.Assigned, e.AssignedReason = string(c.Status), c.Reason
	}
}

// WriteTable writes the report for people; now dates the SINCE columns.
func WriteTable(w io.Writer, r *Report, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(r.Gateways) == 0 {
		fmt.Fprintln(tw, "No EgressGateways.")
	}
	for i, g := range r.Gateways {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		group := "no group id yet"
		if g.GroupID != 0 {
			group = fmt.Sprintf("group %d", g.GroupID)
		}
		fmt.Fprintf(tw, "EgressGateway %s  (%s, %s, %s, %d ready)\n", g.Name, g.Mode, g.Affinity, group, g.Ready)
		if g.Stale {
			fmt.Fprintln(tw, "  (status is from an older generation: the coordinator has not caught up)")
		}
		for _, c := range g.Conditions {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, dash(c.Reason), Age(c.Since, now), c.Message)
		}
		fmt.Fprintf(tw, "  Egress IPs:\t%s\n", dash(strings.Join(g.EgressIPs, ", ")))
		fmt.Fprintln(tw)

		fmt.Fprintln(tw, "  ZONE\tGATEWAY\tSTATE\tSINCE\tUNDERLAY\tREASON")
		none := true
		for _, z := range g.Zones {
			for _, n := range z.Gateways {
				none = false
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", z.Name, n.Node, n.State, Age(n.Since, now), dash(n.UnderlayIP), n.Reason)
			}
		}
		if none {
			fmt.Fprintln(tw, "  (no gateway nodes)")
		}
		fmt.Fprintln(tw)

		fmt.Fprintln(tw, "  ZONE\tEGRESS IP\tPUBLIC IP\tHOLDER\tASSIGNED")
		none = true
		for _, z := range g.Zones {
			for _, e := range z.EgressIPs {
				none = false
				holder := e.Holder
				switch {
				case holder == "" && e.Desired != "":
					holder = "(moving to " + e.Desired + ")"
				case holder == "":
					holder = "(unplaced)"
				case e.Desired != "" && e.Desired != holder:
					holder += " (moving to " + e.Desired + ")"
				}
				assigned := dash(e.Assigned)
				if e.AssignedReason != "" && e.Assigned != "True" {
					assigned += " (" + e.AssignedReason + ")"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", z.Name, e.IP, dash(e.PublicIP), holder, assigned)
			}
		}
		if none {
			fmt.Fprintln(tw, "  (no egress IPs)")
		}
		fmt.Fprintln(tw)

		if len(g.Policies) == 0 {
			fmt.Fprintln(tw, "  (no policies use this gateway)")
			continue
		}
		fmt.Fprintln(tw, "  POLICY\tACCEPTED\tREADY\tPODS\tREASON")
		for _, p := range g.Policies {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\n", p.ref(), p.Accepted, p.Ready, p.MatchedPods, p.Reason)
		}
	}
	if len(r.Orphans) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "Policies whose EgressGateway does not exist:")
		fmt.Fprintln(tw, "  POLICY\tGATEWAY\tACCEPTED\tREASON")
		for _, p := range r.Orphans {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", p.ref(), p.Gateway, p.Accepted, p.Reason)
		}
	}
	return tw.Flush()
}

func (p Policy) ref() string {
	if p.Namespace == "" {
		return p.Kind + " " + p.Name
	}
	return p.Kind + " " + p.Namespace + "/" + p.Name
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Age is a kubectl-style age: 45s, 12m, 3h, 2d.
func Age(t *metav1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	d := now.Sub(t.Time)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
