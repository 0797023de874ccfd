package explain

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteText writes the explanation for people.
func WriteText(w io.Writer, ex *Explanation) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	where := ""
	if ex.Node != "" {
		where = " on node " + ex.Node
		if ex.Zone != "" {
			where += ", zone " + ex.Zone
		}
	}
	ips := ""
	if len(ex.PodIPs) > 0 {
		ips = " (" + strings.Join(ex.PodIPs, ", ") + ")"
	}
	fmt.Fprintf(tw, "Pod %s/%s%s%s\n\n", ex.Namespace, ex.Pod, ips, where)

	if !ex.Selected {
		fmt.Fprintf(tw, "Not steered: %s\n", ex.Why)
	} else {
		var applying []string
		for _, v := range ex.Policies {
			if v.Applies {
				applying = append(applying, fmt.Sprintf("%s %s -> EgressGateway %s", v.Kind, v.Ref(), v.Gateway))
			}
		}
		fmt.Fprintf(tw, "Policy: %s\n", strings.Join(applying, "\n        "))
		fmt.Fprintf(tw, "  (policy set %d as computed now; the agent's id on the node can differ, see 'egressctl list')\n\n", ex.PolicySet)
		fmt.Fprintln(tw, "DESTINATION\tGATEWAY\tGROUP\tFROM")
		for _, d := range ex.Destinations {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", d.Prefix, d.Gateway, d.Group, strings.Join(d.Policies, ", "))
		}
		for _, e := range ex.Excluded {
			fmt.Fprintf(tw, "%s\texcluded (leaves with the node IP)\t-\t\n", e)
		}
		for _, g := range ex.Groups {
			fmt.Fprintf(tw, "\nGateway group %s (group %d, %s, %s), as node %s uses it:\n", g.Gateway, g.ID, g.Mode, g.Affinity, ex.Node)
			fmt.Fprintln(tw, "  GATEWAY\tZONE\tSTATE\tUNDERLAY\tHEALTHY\tEGRESS IP\tPUBLIC IP\tNOTE")
			if len(g.Used) == 0 {
				fmt.Fprintln(tw, "  (none: traffic to this group's destinations is dropped until a gateway is usable)\t\t\t\t\t\t\t")
			}
			for _, u := range g.Used {
				healthy := "no"
				if u.Healthy {
					healthy = "yes"
					if ex.HealthAssumed && !u.Self {
						healthy = "assumed"
					}
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", u.Node, u.Zone, u.State, u.UnderlayIP, healthy,
					dash(strings.Trim(u.EgressIPv4+" "+u.EgressIPv6, " ")), dash(u.PublicIP), u.Note)
			}
			for _, u := range g.Unused {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\tnot used: %s\n", u.Node, u.Zone, u.State, dash(u.UnderlayIP), "-", "-", "-", u.Note)
			}
			if len(g.EgressIPs) > 0 {
				fmt.Fprintf(tw, "  Egress IPs: traffic leaves with %s\n", strings.Join(g.EgressIPs, ", "))
				if len(g.Used) > 1 {
					fmt.Fprintln(tw, "  (new flows hash over the healthy gateways that are not draining; a flow keeps its gateway while it is healthy)")
				}
			} else {
				fmt.Fprintln(tw, "  Egress IPs: none usable: new flows to this group's destinations are dropped")
			}
			if len(g.DrainingIPs) > 0 {
				fmt.Fprintf(tw, "  Established flows on draining gateways still leave with %s\n", strings.Join(g.DrainingIPs, ", "))
			}
		}
		if ex.HealthAssumed {
			fmt.Fprintf(tw, "\nHealth: the agent's probe results are not visible from the API; every Active or Draining gateway is\n"+
				"assumed healthy. The agent on %s takes unresponsive ones out on its own within failureThreshold x interval.\n", ex.Node)
		}
	}

	if len(ex.Policies) > 0 {
		fmt.Fprintln(tw, "\nPolicies considered:")
		fmt.Fprintln(tw, "  APPLIES\tPOLICY\tGATEWAY\tPRIORITY\tREASON")
		for _, v := range ex.Policies {
			yes := "no"
			if v.Applies {
				yes = "yes"
			}
			fmt.Fprintf(tw, "  %s\t%s %s\t%s\t%d\t%s\n", yes, v.Kind, v.Ref(), v.Gateway, v.Priority, v.Reason)
		}
	}
	if len(ex.Problems) > 0 {
		fmt.Fprintln(tw, "\nProblems the agent would log:")
		for _, p := range ex.Problems {
			fmt.Fprintf(tw, "  %s\n", p.String())
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
