package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
	"github.com/egressd/egressd/ipalloc"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/static"
)

// placeAfterAllocate is the requeue after new EgressIPs were written: the next pass places them.
const placeAfterAllocate = 10 * time.Millisecond

// GatewayReconciler plans one EgressGateway and writes the plan as desired state: the group's
// EgressIPs (allocated, placed on spec.node, deleted when in excess) and the group's status
// (gateway_status.go). It makes no mutating cloud call: the EgressIPReconciler makes the cloud
// follow each EgressIP's spec.node and reports back in its status, which wakes this reconciler
// to write the group's CloudSynced condition.
type GatewayReconciler struct {
	*Coordinator
	probes *probeSet
	// recovering holds, by group, until when the controller's failed probes of gateways that
	// were not Unhealthy stay ignored after its path to the probe port came back
	// (PlanInput.ProbeGraceUntil).
	mu         sync.Mutex
	recovering map[string]time.Time
}

// NewGatewayReconciler returns the gateway controller's reconciler.
func NewGatewayReconciler(c *Coordinator) *GatewayReconciler {
	return &GatewayReconciler{Coordinator: c, probes: &probeSet{health: c.health, byGroup: map[string][]probe.Target{}},
		recovering: map[string]time.Time{}}
}

// probeGrace returns until when a group's gateways keep their state on failed controller
// probes after the controller's own path came back: the previous status said the probes were
// ignored (Degraded reason ControllerProbesFailing) and now some gateway answers. Each
// gateway's probe recovers on its own schedule, within a few probe intervals of the path; the
// first to answer must not turn the others Unhealthy (TestControllerProbesBlocked saw every
// zone's requests fail for 350 ms that way).
func (r *GatewayReconciler) probeGrace(gw *egressv1.EgressGateway, views []NodeView, now time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := meta.FindStatusCondition(gw.Status.Conditions, egressv1.ConditionDegraded)
	if c == nil || c.Reason != egressv1.ReasonControllerProbesFailing || controllerProbesFailing(views) != nil {
		delete(r.recovering, gw.Name)
		return time.Time{}
	}
	until, ok := r.recovering[gw.Name]
	if !ok {
		until = now.Add(probeRecoveryGrace)
		r.recovering[gw.Name] = until
	}
	return until
}

// probeRecoveryGrace: the default probe (100 ms × 3) recovers well within it.
const probeRecoveryGrace = 2 * time.Second

// addrSource is a group's address source resolved against the controller's providers.
type addrSource struct {
	kind egressv1.AddressSource
	// provider and providerType, of a Cloud source.
	provider     providers.Provider
	providerType string
}

// Reconcile implements reconcile.Reconciler.
func (r *GatewayReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, req.Name)
	if err != nil && r.metrics != nil {
		r.metrics.ReconcileErrors.WithLabelValues("egressgateway").Inc()
	}
	return res, err
}

func (r *GatewayReconciler) reconcile(ctx context.Context, name string) (ctrl.Result, error) {
	logger := log.FromContext(ctx).WithValues(keyGateway, name)
	gw := &egressv1.EgressGateway{}
	if err := r.client.Get(ctx, client.ObjectKey{Name: name}, gw); err != nil {
		if apierrors.IsNotFound(err) {
			r.selectors.forget(kindEgressGateway, types.NamespacedName{Name: name})
			return ctrl.Result{}, r.releaseGroup(ctx, name)
		}
		return ctrl.Result{}, err
	}
	if gw.DeletionTimestamp != nil {
		return ctrl.Result{}, r.releaseGroup(ctx, name)
	}
	if err := r.alloc.load(ctx, r.reader); err != nil {
		return ctrl.Result{}, err
	}
	if gw.Status.GroupID == 0 {
		if err := r.assignGroupID(ctx, gw); err != nil {
			return ctrl.Result{}, err
		}
	}

	src, cond := r.sourceOf(gw)
	if cond == nil && src.kind == egressv1.AddressSourceStatic {
		if err := r.static.SetPools(gw.Name, staticPools(gw.Spec.Addresses.Static)); err != nil {
			cond = &metav1.Condition{Type: egressv1.ConditionReady, Status: metav1.ConditionFalse, Reason: egressv1.ReasonInvalidAddresses,
				Message: fmt.Sprintf("spec.addresses.static: %v", err)}
		}
	}
	if cond != nil {
		r.recorder.Eventf(gw, nil, corev1.EventTypeWarning, cond.Reason, "Reconcile", cond.Message)
		return ctrl.Result{}, r.writeStatus(ctx, gw, nil, nil, []metav1.Condition{*cond})
	}

	nodes, leases, err := r.listInputs(ctx, gw)
	if err != nil {
		return ctrl.Result{}, err
	}
	byName := map[string]*corev1.Node{}
	for i := range nodes {
		byName[nodes[i].Name] = &nodes[i]
	}
	var discoverErrs []error
	var capacity func([]*corev1.Node) []int
	if src.kind == egressv1.AddressSourceCloud {
		capacity = func(ns []*corev1.Node) []int {
			r.prefetch(ctx, src.provider, ns)
			free := make([]int, len(ns))
			for i, n := range ns {
				info, err := r.discover(ctx, src.provider, n)
				if err != nil {
					discoverErrs = append(discoverErrs, fmt.Errorf("discovering node %s: %w", n.Name, err))
					continue
				}
				if err := r.alloc.registerSubnets(src.providerType, info); err != nil {
					discoverErrs = append(discoverErrs, err)
				}
				free[i] = info.Capacity.FreeIPSlots
			}
			return free
		}
	}
	views, err := r.nodeViews(gw, nodes, leases, capacity)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.probeTargets(gw, views)

	eips, err := r.ledger(ctx, gw.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if src.kind == egressv1.AddressSourceStatic {
		if eips, err = r.ensureStatic(ctx, gw, eips); err != nil {
			return ctrl.Result{}, err
		}
	}
	if src.kind == egressv1.AddressSourceCloud {
		discoverErrs = append(discoverErrs, r.resyncNotHeld(ctx, gw, src.provider, eips, byName))
	}
	now := r.clock.Now()
	in := PlanInput{Group: gw.Name, Spec: gw.Spec, Nodes: views, Previous: gw.Status, Now: now, ProbeGraceUntil: r.probeGrace(gw, views, now)}
	for _, e := range eips {
		ip, _ := netip.ParseAddr(e.Spec.IP)
		in.IPs = append(in.IPs, IPView{IP: ip, Zone: e.Spec.Zone, Node: e.Spec.Node, Held: e.Status.Node, Generation: e.Generation})
	}
	plan, err := PlanGateway(in, r.alloc.Allocator)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("planning %s: %w", gw.Name, err)
	}

	var errs []error
	allocated := false
	for _, zp := range plan.Zones {
		if src.kind == egressv1.AddressSourceCloud && zp.Want > 0 {
			n, err := r.allocate(ctx, gw, src, zp, byName)
			errs = append(errs, err)
			allocated = allocated || n > 0
		}
		for _, ip := range zp.Excess {
			errs = append(errs, deleteEgressIP(ctx, r.client, eipByIP(eips, ip)))
		}
	}
	for i := range eips {
		e := &eips[i]
		ip, _ := netip.ParseAddr(e.Spec.IP)
		if target, planned := placeOf(plan, ip); planned && e.Spec.Node != target {
			errs = append(errs, r.setDesiredNode(ctx, gw, e, target, views))
		}
	}
	errs = append(errs, discoverErrs...)

	if err := r.writeStatus(ctx, gw, &plan, eips, r.conditions(gw, &plan, eips, errors.Join(errs...))); err != nil {
		errs = append(errs, err)
	}
	r.observe(gw, &plan, eips)
	if allocated {
		// New ledger entries: place them on the next pass, at once.
		return ctrl.Result{RequeueAfter: placeAfterAllocate}, errors.Join(errs...)
	}
	if err := errors.Join(errs...); err != nil {
		logger.V(1).Info("reconcile incomplete", "error", err)
		return ctrl.Result{}, err
	}
	// Agent Lease expiry has no event: look again within the lease timeout. Reads come from
	// the cache; only the ledger list goes to the API server.
	requeue := minPositive(plan.Requeue, min(r.cfg.ResyncPeriod.Duration, r.cfg.AgentLeaseTimeout.Duration))
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// sourceOf resolves the group's address source, or the condition explaining why it can't.
func (r *GatewayReconciler) sourceOf(gw *egressv1.EgressGateway) (addrSource, *metav1.Condition) {
	a := gw.Spec.Addresses
	switch kind := a.Source(); kind {
	case egressv1.AddressSourceStatic, egressv1.AddressSourceNodeInterface:
		return addrSource{kind: kind}, nil
	case egressv1.AddressSourceCloud:
		p, ok := r.providers[a.Cloud.Provider]
		if !ok {
			names := make([]string, 0, len(r.providers))
			for n := range r.providers {
				names = append(names, n)
			}
			slices.Sort(names)
			msg := fmt.Sprintf("spec.addresses.cloud.provider %q is not configured in the controller (configured: %v)", a.Cloud.Provider, names)
			if a.Cloud.Provider == egressv1.ProviderStatic {
				msg += "; static pools are set in spec.addresses.static"
			}
			return addrSource{}, &metav1.Condition{Type: egressv1.ConditionReady, Status: metav1.ConditionFalse, Reason: egressv1.ReasonProviderNotFound, Message: msg}
		}
		typ, _ := ProviderType(a.Cloud.Provider, r.cfg.Providers[a.Cloud.Provider])
		return addrSource{kind: kind, provider: p, providerType: typ}, nil
	}
	return addrSource{}, &metav1.Condition{Type: egressv1.ConditionReady, Status: metav1.ConditionFalse, Reason: egressv1.ReasonInvalidAddresses, Message: "spec.addresses names no source"}
}

// assignGroupID gives the group the lowest number no other group has, and records it at once.
func (r *GatewayReconciler) assignGroupID(ctx context.Context, gw *egressv1.EgressGateway) error {
	var all egressv1.EgressGatewayList
	if err := r.reader.List(ctx, &all); err != nil {
		return err
	}
	used := map[int32]bool{}
	for _, g := range all.Items {
		used[g.Status.GroupID] = true
	}
	id := int32(1)
	for used[id] {
		id++
	}
	if id > 65535 {
		return fmt.Errorf("no free group id for %s: 65535 groups exist", gw.Name)
	}
	patch := client.MergeFrom(gw.DeepCopy())
	gw.Status.GroupID = id
	return r.client.Status().Patch(ctx, gw, patch)
}

// ensureStatic gives the static provider the group's pools and writes an EgressIP for every
// address of them.
func (r *GatewayReconciler) ensureStatic(ctx context.Context, gw *egressv1.EgressGateway, eips []egressv1.EgressIP) ([]egressv1.EgressIP, error) {
	have := map[string]bool{}
	for _, e := range eips {
		have[e.Spec.IP] = true
	}
	var errs []error
	for _, pool := range gw.Spec.Addresses.Static.Pools {
		prefix, err := netip.ParsePrefix(pool.Subnet)
		if err != nil {
			continue // rejected by the schema
		}
		if err := r.alloc.addSubnet(pool.Zone, pool.Subnet, prefix.Masked(), ipalloc.ReserveNone); err != nil {
			errs = append(errs, err)
		}
		for _, s := range pool.IPs {
			ip, err := netip.ParseAddr(s)
			if err != nil || have[ip.String()] {
				continue
			}
			e, err := r.createEgressIP(ctx, gw, ip, pool.Zone, pool.Subnet, egressv1.ProviderStatic, false)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, r.alloc.Claim(ipalloc.Record{IP: ip, Zone: pool.Zone, Subnet: pool.Subnet, Owner: gw.Name}))
			eips = append(eips, *e)
		}
	}
	return eips, errors.Join(errs...)
}

// staticPools are the group's pools as the static provider takes them.
func staticPools(a *egressv1.StaticAddresses) []static.Pool {
	pools := make([]static.Pool, 0, len(a.Pools))
	for _, p := range a.Pools {
		pools = append(pools, static.Pool{Zone: p.Zone, Subnet: p.Subnet, Interface: p.Interface, Addresses: p.IPs})
	}
	return pools
}

// allocate picks new addresses for a zone and writes their EgressIPs (ledger first: no cloud
// call happens until the next pass places them).
func (r *GatewayReconciler) allocate(ctx context.Context, gw *egressv1.EgressGateway, src addrSource, zp ZonePlan, nodes map[string]*corev1.Node) (int, error) {
	var node *corev1.Node
	for _, g := range zp.Gateways {
		if g.State == egressv1.GatewayActive || g.State == egressv1.GatewayStandby {
			node = nodes[g.Node]
			break
		}
	}
	if node == nil {
		return 0, nil
	}
	info, err := r.discover(ctx, src.provider, node)
	if err != nil {
		return 0, fmt.Errorf("discovering %s to allocate in zone %s: %w", node.Name, zp.Name, err)
	}
	if err := r.alloc.registerSubnets(src.providerType, info); err != nil {
		return 0, err
	}
	family := gw.Spec.Addresses.Cloud.Family
	subnet := pickSubnet(info, gw.Spec.Addresses.Cloud.SubnetSelector, family == egressv1.IPv6)
	if subnet == "" {
		return 0, fmt.Errorf("zone %s: node %s has no %s subnet matching spec.addresses.cloud.subnetSelector (family %s: the provider reports no such block)",
			zp.Name, node.Name, cmp.Or(family, egressv1.IPv4), cmp.Or(family, egressv1.IPv4))
	}
	created := 0
	for range zp.Want {
		ip, err := r.alloc.Allocate(zp.Name, subnet, gw.Name)
		if err != nil {
			r.recorder.Eventf(gw, nil, corev1.EventTypeWarning, egressv1.ReasonCapacityExhausted, "Allocate", "zone %s subnet %s: %v", zp.Name, subnet, err)
			return created, err
		}
		if _, err := r.createEgressIP(ctx, gw, ip, zp.Name, subnet, gw.Spec.Addresses.Cloud.Provider, gw.Spec.Addresses.Cloud.Public); err != nil {
			_ = r.alloc.Release(ip)
			return created, err
		}
		created++
	}
	return created, nil
}

// pickSubnet returns the allocation pool new addresses of the family come from: the first
// selected subnet, else the primary interface's subnet, else the first the node reports. A
// provider reports a subnet's IPv6 block as a pool of its own whose ID is the subnet's with a
// "#..." suffix (AWS: "#ipv6"); the selector and the interface name the subnet.
func pickSubnet(info *providers.NodeInfo, sel *egressv1.SubnetSelector, v6 bool) string {
	var pools []providers.Subnet
	for _, s := range info.Subnets {
		if s.CIDR.IsValid() && s.CIDR.Addr().Is6() == v6 || !s.CIDR.IsValid() && !v6 {
			pools = append(pools, s)
		}
	}
	subnetOf := func(s providers.Subnet) string { id, _, _ := strings.Cut(s.ID, "#"); return id }
	if sel != nil && len(sel.IDs) > 0 {
		for _, s := range pools {
			if slices.Contains(sel.IDs, s.ID) || slices.Contains(sel.IDs, subnetOf(s)) {
				return s.ID
			}
		}
		return ""
	}
	for _, itf := range info.Interfaces {
		if itf.DeviceIndex != 0 {
			continue
		}
		if !v6 {
			return itf.SubnetID
		}
		for _, s := range pools {
			if subnetOf(s) == itf.SubnetID {
				return s.ID
			}
		}
	}
	if len(pools) > 0 {
		return pools[0].ID
	}
	return ""
}

// createEgressIP writes the ledger entry for a new address, finalizer included, before any
// cloud call for it.
func (r *GatewayReconciler) createEgressIP(ctx context.Context, gw *egressv1.EgressGateway, ip netip.Addr, zone, subnet, provider string, public bool) (*egressv1.EgressIP, error) {
	e := &egressv1.EgressIP{
		ObjectMeta: metav1.ObjectMeta{
			Name:       egressv1.EgressIPName(ip),
			Labels:     map[string]string{egressv1.LabelGateway: gw.Name, egressv1.LabelZone: zone},
			Finalizers: []string{egressv1.FinalizerReleaseCloud},
		},
		Spec: egressv1.EgressIPSpec{IP: ip.String(), Gateway: gw.Name, Zone: zone, Provider: provider, Subnet: subnet, Public: public},
	}
	if err := r.client.Create(ctx, e); err != nil {
		return nil, fmt.Errorf("recording EgressIP %s: %w", ip, err)
	}
	return e, nil
}

// setDesiredNode records where an address should go, before the cloud is asked to put it there.
func (r *GatewayReconciler) setDesiredNode(ctx context.Context, gw *egressv1.EgressGateway, e *egressv1.EgressIP, target string, views []NodeView) error {
	from := e.Spec.Node
	patch := client.MergeFrom(e.DeepCopy())
	e.Spec.Node = target
	if err := r.client.Patch(ctx, e, patch); err != nil {
		return fmt.Errorf("recording %s's new node %q: %w", e.Spec.IP, target, err)
	}
	ip, _ := netip.ParseAddr(e.Spec.IP)
	_ = r.alloc.SetNode(ip, target)
	if from != "" && target != "" && r.metrics != nil {
		for _, v := range views {
			if v.Name == from && (!v.Ready || !v.AgentAlive || !v.ProbeUp || v.Cordoned || !v.Selected) {
				r.metrics.Failovers.WithLabelValues(gw.Name, e.Spec.Zone).Inc()
			}
		}
	}
	if from != "" {
		r.recorder.Eventf(gw, nil, corev1.EventTypeNormal, egressv1.ReasonMoving, "Place", "moving %s from %s to %s", e.Spec.IP, from, orNone(target))
		log.FromContext(ctx).Info("placing", keyGateway, gw.Name, keyIP, e.Spec.IP, keyFrom, from, keyNode, target)
	}
	return nil
}

// releaseGroup deletes every EgressIP of a deleted group (their finalizers release the cloud
// side). Works without a finalizer on the gateway, and without the garbage collector.
func (r *GatewayReconciler) releaseGroup(ctx context.Context, name string) error {
	eips, err := r.ledger(ctx, name)
	if err != nil {
		return err
	}
	r.probes.set(name, nil)
	// Its held addresses stay releasable: the static provider releases without the pool.
	errs := []error{r.static.SetPools(name, nil)}
	for i := range eips {
		if eips[i].DeletionTimestamp == nil {
			errs = append(errs, deleteEgressIP(ctx, r.client, &eips[i]))
		}
	}
	return errors.Join(errs...)
}

// probeTargets adds the group's gateways to the coordinator's probes.
func (r *GatewayReconciler) probeTargets(gw *egressv1.EgressGateway, views []NodeView) {
	var mine []probe.Target
	for _, v := range views {
		if v.UnderlayIP.IsValid() {
			mine = append(mine, contract.ProbeTarget(netip.AddrPortFrom(v.UnderlayIP, uint16(r.cfg.ProbePort)), gw.Spec.Health))
		}
	}
	r.probes.set(gw.Name, mine)
}

func placeOf(p Plan, ip netip.Addr) (string, bool) {
	for _, z := range p.Zones {
		if n, ok := z.Place[ip]; ok {
			return n, true
		}
	}
	return "", false
}

func eipByIP(eips []egressv1.EgressIP, ip netip.Addr) *egressv1.EgressIP {
	for i := range eips {
		if eips[i].Spec.IP == ip.String() {
			return &eips[i]
		}
	}
	return nil
}
