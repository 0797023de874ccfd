package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/bpf/marks"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/ipalloc"
	"github.com/egressd/egressd/providers"
)

// The group's status: the plan's gateway states, the egress IPs with their holders, the
// Ready, Degraded and CloudSynced conditions, and the group's gauges. Written by the gateway
// controller after each pass; the cloud's side of it is read from the EgressIPs' status.

// conditions are the group's Ready, Degraded and CloudSynced conditions, from the plan, the
// ledger and the error of the pass.
func (r *GatewayReconciler) conditions(gw *egressv1.EgressGateway, plan *Plan, eips []egressv1.EgressIP, planErr error) []metav1.Condition {
	var unhealthy, active, draining, total int
	for _, z := range plan.Zones {
		for _, g := range z.Gateways {
			total++
			switch g.State {
			case egressv1.GatewayUnhealthy:
				unhealthy++
			case egressv1.GatewayActive:
				active++
			case egressv1.GatewayDraining:
				draining++
			}
		}
	}
	var unassigned, unplaced []string
	for _, e := range eips {
		switch {
		case e.Spec.Node == "":
			unplaced = append(unplaced, e.Spec.IP)
		case e.Status.Node != e.Spec.Node:
			unassigned = append(unassigned, e.Spec.IP)
		}
	}
	ready := metav1.Condition{Type: egressv1.ConditionReady, Status: metav1.ConditionTrue, Reason: egressv1.ReasonAllGatewaysHealthy,
		Message: fmt.Sprintf("%d active gateways, %d egress IPs", active, len(eips))}
	switch {
	case total == 0:
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, egressv1.ReasonNoGatewayNodes, "no node matches spec.nodeSelector"
	case active == 0:
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, egressv1.ReasonPending, "no gateway holds an egress IP yet"
	}
	if id, max := gw.Status.GroupID, r.cfg.MaxGroupID(); id > 0 && uint32(id) > max {
		// Never a silent cut: an agent skips a group its mark layout cannot carry.
		ready.Status, ready.Reason = metav1.ConditionFalse, egressv1.ReasonGroupIDTooLarge
		ready.Message = fmt.Sprintf("group id %d does not fit the agents' packet mark layout (markMask %s carries group ids 1-%d): "+
			"no node steers to this group or serves it; widen agent.markMask or remove EgressGateways", id, cmp.Or(r.cfg.MarkMask, fmt.Sprintf("%#08x", marks.DefaultMask)), max)
	}
	degraded := metav1.Condition{Type: egressv1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: egressv1.ReasonAllGatewaysHealthy, Message: "all gateways healthy, all egress IPs placed"}
	if unhealthy > 0 || len(unplaced) > 0 {
		degraded.Status, degraded.Reason = metav1.ConditionTrue, egressv1.ReasonSomeGatewaysDown
		degraded.Message = fmt.Sprintf("%d of %d gateways unhealthy; unplaced egress IPs: %v", unhealthy, total, unplaced)
	}
	if listed := active + draining; listed > contract.MaxGatewaysPerGroup {
		// Never a silent cut: the agents list only the first ones.
		msg := fmt.Sprintf("%d Active or Draining gateways, but a node's datapath lists at most %d (zone-local first): "+
			"the others never carry traffic; set spec.zones.maxGatewaysPerZone or split the group", listed, contract.MaxGatewaysPerGroup)
		if degraded.Status == metav1.ConditionTrue {
			msg += "; " + degraded.Message
		}
		degraded.Status, degraded.Reason, degraded.Message = metav1.ConditionTrue, egressv1.ReasonTooManyGateways, truncate(msg, 1000)
	}
	if len(plan.ProbesIgnored) > 0 {
		// Said first: it is why nothing else moved, and what an operator must fix.
		msg := fmt.Sprintf("the coordinator's probes to UDP port %d fail for every gateway of the group while their agents renew their Leases "+
			"and their Nodes are Ready; the controller's own path is taken to be cut, so %s keep their state and egress IPs",
			r.cfg.ProbePort, strings.Join(plan.ProbesIgnored, ", "))
		if degraded.Status == metav1.ConditionTrue {
			msg += "; " + degraded.Message
		}
		degraded.Status, degraded.Reason, degraded.Message = metav1.ConditionTrue, egressv1.ReasonControllerProbesFailing, truncate(msg, 1000)
	}
	synced := metav1.Condition{Type: egressv1.ConditionCloudSynced, Status: metav1.ConditionTrue, Reason: egressv1.ReasonSynced, Message: "the cloud holds every placed egress IP where the ledger says"}
	// The EgressIP controller reports each address's cloud call in its Assigned condition; the
	// group's own errors (allocation, discovery, ledger writes) come in planErr.
	failed := assignFailure(eips)
	if len(unassigned) > 0 || planErr != nil || failed != nil {
		synced.Status, synced.Reason = metav1.ConditionFalse, egressv1.ReasonMoving
		synced.Message = fmt.Sprintf("not yet where the ledger says: %v", unassigned)
		switch {
		case planErr != nil:
			synced.Reason = egressv1.ReasonProviderError
			switch {
			case providers.IsCapacityExhausted(planErr) || ipalloc.IsExhausted(planErr):
				synced.Reason = egressv1.ReasonCapacityExhausted
			case providers.IsThrottled(planErr):
				synced.Reason = egressv1.ReasonThrottled
			}
			synced.Message = truncate(planErr.Error(), 1000)
		case failed != nil:
			synced.Reason = failed.Reason
			synced.Message = truncate(fmt.Sprintf("%s: %s", failed.ip, failed.Message), 1000)
		}
	}
	return []metav1.Condition{ready, degraded, synced}
}

// failedAssign is an EgressIP's Assigned=False condition, with its address.
type failedAssign struct {
	metav1.Condition
	ip string
}

// assignFailure is the first address still away from its desired node whose last cloud call
// failed, by address order.
func assignFailure(eips []egressv1.EgressIP) *failedAssign {
	for _, e := range eips {
		if e.Spec.Node == "" || e.Status.Node == e.Spec.Node || e.DeletionTimestamp != nil {
			continue
		}
		if c := meta.FindStatusCondition(e.Status.Conditions, egressv1.ConditionAssigned); c != nil && c.Status == metav1.ConditionFalse {
			return &failedAssign{Condition: *c, ip: e.Spec.IP}
		}
	}
	return nil
}

// writeStatus writes the group's status when it changed.
func (r *GatewayReconciler) writeStatus(ctx context.Context, gw *egressv1.EgressGateway, plan *Plan, eips []egressv1.EgressIP, conds []metav1.Condition) error {
	st := gw.Status.DeepCopy()
	st.ObservedGeneration = gw.Generation
	for _, c := range conds {
		c.ObservedGeneration = gw.Generation
		meta.SetStatusCondition(&st.Conditions, c)
	}
	if plan != nil {
		st.Zones = nil
		st.ReadyGateways = 0
		set := map[string]bool{}
		for _, zp := range plan.Zones {
			zs := egressv1.ZoneStatus{Name: zp.Name, Gateways: zp.Gateways}
			for _, g := range zp.Gateways {
				if g.State == egressv1.GatewayActive || g.State == egressv1.GatewayStandby {
					st.ReadyGateways++
				}
			}
			for _, e := range eips {
				if e.Spec.Zone != zp.Name || e.DeletionTimestamp != nil {
					continue
				}
				h := egressv1.EgressIPHolder{IP: e.Spec.IP, PublicIP: e.Status.PublicIP}
				if e.Status.Node == e.Spec.Node {
					h.Node = e.Status.Node
				}
				zs.EgressIPs = append(zs.EgressIPs, h)
				set[e.Spec.IP] = true
				if e.Status.PublicIP != "" {
					set[e.Status.PublicIP] = true
				}
			}
			st.Zones = append(st.Zones, zs)
		}
		st.EgressIPs = sortedAddrs(set)
	}
	if equality.Semantic.DeepEqual(st, &gw.Status) {
		return nil
	}
	patch := client.MergeFrom(gw.DeepCopy())
	gw.Status = *st
	if err := r.client.Status().Patch(ctx, gw, patch); err != nil {
		return fmt.Errorf("writing status of %s: %w", gw.Name, err)
	}
	return nil
}

func (r *GatewayReconciler) observe(gw *egressv1.EgressGateway, plan *Plan, eips []egressv1.EgressIP) {
	if r.metrics == nil {
		return
	}
	r.metrics.Gateways.DeletePartialMatch(map[string]string{"gateway": gw.Name})
	r.metrics.EgressIPs.DeletePartialMatch(map[string]string{"gateway": gw.Name})
	r.metrics.ControllerProbesFailing.WithLabelValues(gw.Name).Set(float64(b2i(len(plan.ProbesIgnored) > 0)))
	for _, z := range plan.Zones {
		counts := map[egressv1.GatewayState]int{}
		for _, g := range z.Gateways {
			counts[g.State]++
		}
		for _, s := range []egressv1.GatewayState{egressv1.GatewayActive, egressv1.GatewayStandby, egressv1.GatewayDraining, egressv1.GatewayUnhealthy} {
			r.metrics.Gateways.WithLabelValues(gw.Name, z.Name, string(s)).Set(float64(counts[s]))
		}
		var yes, no int
		for _, e := range eips {
			if e.Spec.Zone != z.Name {
				continue
			}
			if e.Status.Node != "" && e.Status.Node == e.Spec.Node {
				yes++
			} else {
				no++
			}
		}
		r.metrics.EgressIPs.WithLabelValues(gw.Name, z.Name, "true").Set(float64(yes))
		r.metrics.EgressIPs.WithLabelValues(gw.Name, z.Name, "false").Set(float64(no))
	}
}

func sortedAddrs(set map[string]bool) []string {
	addrs := make([]netip.Addr, 0, len(set))
	for s := range set {
		if a, err := netip.ParseAddr(s); err == nil {
			addrs = append(addrs, a)
		}
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
