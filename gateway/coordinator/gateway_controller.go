package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
	"github.com/egressd/egressd/ipalloc"
	"github.com/egressd/egressd/providers"
)

// placeAfterAllocate is the requeue after new EgressIPs were written: the next pass places them.
const placeAfterAllocate = 10 * time.Millisecond

// GatewayReconciler reconciles one EgressGateway: plan, ledger, cloud, status.
type GatewayReconciler struct{ *Coordinator }

// source says where a group's addresses come from and who moves them.
type addrSource struct {
	kind         string // "cloud", "static", "nodeInterface"
	provider     providers.Provider
	providerType string
}

// Reconcile implements reconcile.Reconciler.
func (r GatewayReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, req.Name)
	if err != nil && r.metrics != nil {
		r.metrics.ReconcileErrors.WithLabelValues("egressgateway").Inc()
	}
	return res, err
}

func (r GatewayReconciler) reconcile(ctx context.Context, name string) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	gw := &egressv1.EgressGateway{}
	if err := r.client.Get(ctx, client.ObjectKey{Name: name}, gw); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.releaseGroup(ctx, name)
		}
		return ctrl.Result{}, err
	}
	if gw.DeletionTimestamp != nil {
		return ctrl.Result{}, r.releaseGroup(ctx, name)
	}
	if err := r.loadLedger(ctx); err != nil {
		return ctrl.Result{}, err
	}
	if gw.Status.GroupID == 0 {
		if err := r.assignGroupID(ctx, gw); err != nil {
			return ctrl.Result{}, err
		}
	}

	src, cond := r.sourceOf(gw)
	if cond != nil {
		r.recorder.Eventf(gw, nil, corev1.EventTypeWarning, cond.Reason, "Reconcile", cond.Message)
		return ctrl.Result{}, r.writeStatus(ctx, gw, nil, nil, []metav1.Condition{*cond})
	}

	nodes, leases, err := r.listInputs(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	byName := map[string]*corev1.Node{}
	for i := range nodes {
		byName[nodes[i].Name] = &nodes[i]
	}
	var discoverErrs []error
	var capacity func([]*corev1.Node) []int
	if src.kind == "cloud" {
		capacity = func(ns []*corev1.Node) []int {
			r.prefetch(ctx, src.provider, ns)
			free := make([]int, len(ns))
			for i, n := range ns {
				info, err := r.discover(ctx, src.provider, n)
				if err != nil {
					discoverErrs = append(discoverErrs, fmt.Errorf("discovering node %s: %w", n.Name, err))
					continue
				}
				if err := r.registerSubnets(src.providerType, info); err != nil {
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
	if src.kind == "static" {
		if eips, err = r.ensureStatic(ctx, gw, eips); err != nil {
			return ctrl.Result{}, err
		}
	}
	in := PlanInput{Spec: gw.Spec, Nodes: views, Previous: gw.Status, Now: r.clock.Now()}
	for _, e := range eips {
		ip, _ := netip.ParseAddr(e.Spec.IP)
		in.IPs = append(in.IPs, IPView{IP: ip, Zone: e.Spec.Zone, Node: e.Spec.Node})
	}
	plan, err := PlanGateway(in, r.alloc)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("planning %s: %w", gw.Name, err)
	}

	var errs []error
	requeue := plan.Requeue
	allocated := false
	for _, zp := range plan.Zones {
		if src.kind == "cloud" && zp.Want > 0 {
			n, err := r.allocate(ctx, gw, src, zp, byName)
			errs = append(errs, err)
			allocated = allocated || n > 0
		}
		for _, ip := range zp.Excess {
			errs = append(errs, r.deleteEgressIP(ctx, eipByIP(eips, ip)))
		}
	}
	for i := range eips {
		e := &eips[i]
		ip, _ := netip.ParseAddr(e.Spec.IP)
		target, planned := placeOf(plan, ip)
		if !planned {
			continue
		}
		if e.Spec.Node != target {
			if err := r.setDesiredNode(ctx, gw, e, target, views); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if target == "" || e.Status.Node == target {
			continue
		}
		wait, err := r.syncCloud(ctx, gw, src, e, byName[target])
		errs = append(errs, err)
		requeue = minPositive(requeue, wait)
	}
	errs = append(errs, discoverErrs...)

	if err := r.writeStatus(ctx, gw, &plan, eips, r.conditions(gw, &plan, eips, errors.Join(errs...))); err != nil {
		errs = append(errs, err)
	}
	r.observe(gw, &plan, eips)
	if allocated {
		// New ledger entries: place and assign them on the next pass, at once.
		return ctrl.Result{RequeueAfter: placeAfterAllocate}, errors.Join(errs...)
	}
	if err := errors.Join(errs...); err != nil {
		logger.V(1).Info("reconcile incomplete", "gateway", gw.Name, "error", err)
		if requeue > 0 {
			// Throttled: come back when the cloud said, not on the error backoff.
			return ctrl.Result{RequeueAfter: requeue}, nil
		}
		return ctrl.Result{}, err
	}
	// Agent Lease expiry has no event: look again within the lease timeout. Reads come from
	// the cache; only the ledger list goes to the API server.
	requeue = minPositive(requeue, min(r.cfg.ResyncPeriod.Duration, r.cfg.AgentLeaseTimeout.Duration))
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// sourceOf resolves the group's address source, or the condition explaining why it can't.
func (r GatewayReconciler) sourceOf(gw *egressv1.EgressGateway) (addrSource, *metav1.Condition) {
	a := gw.Spec.Addresses
	switch {
	case a.Static != nil:
		return addrSource{kind: "static"}, nil
	case a.NodeInterface != nil:
		return addrSource{kind: "nodeInterface"}, nil
	case a.Cloud != nil:
		p, ok := r.providers[a.Cloud.Provider]
		if !ok {
			names := make([]string, 0, len(r.providers))
			for n := range r.providers {
				names = append(names, n)
			}
			slices.Sort(names)
			return addrSource{}, &metav1.Condition{Type: egressv1.ConditionReady, Status: metav1.ConditionFalse, Reason: egressv1.ReasonProviderNotFound,
				Message: fmt.Sprintf("spec.addresses.cloud.provider %q is not configured in the controller (configured: %v)", a.Cloud.Provider, names)}
		}
		typ, _ := ProviderType(a.Cloud.Provider, r.cfg.Providers[a.Cloud.Provider])
		return addrSource{kind: "cloud", provider: p, providerType: typ}, nil
	}
	return addrSource{}, &metav1.Condition{Type: egressv1.ConditionReady, Status: metav1.ConditionFalse, Reason: egressv1.ReasonInvalidAddresses, Message: "spec.addresses names no source"}
}

// assignGroupID gives the group the lowest number no other group has, and records it at once.
func (r GatewayReconciler) assignGroupID(ctx context.Context, gw *egressv1.EgressGateway) error {
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

// ensureStatic writes an EgressIP for every address of the group's static pools.
func (r GatewayReconciler) ensureStatic(ctx context.Context, gw *egressv1.EgressGateway, eips []egressv1.EgressIP) ([]egressv1.EgressIP, error) {
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
		r.mu.Lock()
		key := pool.Zone + "/" + pool.Subnet
		if !r.subnets[key] {
			if err := r.alloc.AddSubnet(pool.Zone, pool.Subnet, prefix.Masked(), ipalloc.ReserveNone); err != nil {
				errs = append(errs, err)
			} else {
				r.subnets[key] = true
			}
		}
		r.mu.Unlock()
		for _, s := range pool.IPs {
			ip, err := netip.ParseAddr(s)
			if err != nil || have[ip.String()] {
				continue
			}
			e, err := r.createEgressIP(ctx, gw, ip, pool.Zone, pool.Subnet, "static", false)
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

// allocate picks new addresses for a zone and writes their EgressIPs (ledger first: no cloud
// call happens until the next pass places them).
func (r GatewayReconciler) allocate(ctx context.Context, gw *egressv1.EgressGateway, src addrSource, zp ZonePlan, nodes map[string]*corev1.Node) (int, error) {
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
	if err := r.registerSubnets(src.providerType, info); err != nil {
		return 0, err
	}
	subnet := pickSubnet(info, gw.Spec.Addresses.Cloud.SubnetSelector)
	if subnet == "" {
		return 0, fmt.Errorf("zone %s: node %s has no subnet matching spec.addresses.cloud.subnetSelector", zp.Name, node.Name)
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

func pickSubnet(info *providers.NodeInfo, sel *egressv1.SubnetSelector) string {
	if sel != nil && len(sel.IDs) > 0 {
		for _, s := range info.Subnets {
			if slices.Contains(sel.IDs, s.ID) {
				return s.ID
			}
		}
		return ""
	}
	for _, itf := range info.Interfaces {
		if itf.DeviceIndex == 0 {
			return itf.SubnetID
		}
	}
	if len(info.Subnets) > 0 {
		return info.Subnets[0].ID
	}
	return ""
}

// createEgressIP writes the ledger entry for a new address, finalizer included, before any
// cloud call for it.
func (r GatewayReconciler) createEgressIP(ctx context.Context, gw *egressv1.EgressGateway, ip netip.Addr, zone, subnet, provider string, public bool) (*egressv1.EgressIP, error) {
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
func (r GatewayReconciler) setDesiredNode(ctx context.Context, gw *egressv1.EgressGateway, e *egressv1.EgressIP, target string, views []NodeView) error {
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
	}
	return nil
}

// syncCloud makes the cloud hold e on node: ensure the first time, move afterwards. It returns
// how long to wait before retrying when the cloud throttled us.
func (r GatewayReconciler) syncCloud(ctx context.Context, gw *egressv1.EgressGateway, src addrSource, e *egressv1.EgressIP, node *corev1.Node) (time.Duration, error) {
	if node == nil {
		return 0, fmt.Errorf("node %s of %s is gone", e.Spec.Node, e.Spec.IP)
	}
	if !r.begin(e.Name, "sync") {
		return 0, nil
	}
	defer r.end(e.Name)
	ip, _ := netip.ParseAddr(e.Spec.IP)

	if src.kind != "cloud" {
		// Static addresses move by the agents' gratuitous ARP / unsolicited NA: the ledger is
		// the only state.
		return 0, r.setAssigned(ctx, e, &providers.Assignment{IP: ip, Node: node.Name}, nil)
	}
	owner := providers.Owner{Cluster: r.cfg.ClusterName, Gateway: gw.Name}
	var (
		a   *providers.Assignment
		err error
	)
	fresh := e.Status.Handle.Interface == "" && e.Status.Node == ""
	if fresh {
		mode := providers.InterfaceMode(gw.Spec.Addresses.Cloud.Interface)
		if mode == "" {
			mode = providers.InterfacePrimary
		}
		a, err = src.provider.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeRef(node), IP: ip, Subnet: e.Spec.Subnet, Public: e.Spec.Public, Interface: mode})
	} else {
		a, err = src.provider.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: assignmentOf(e), To: nodeRef(node)})
		if err == nil && r.metrics != nil {
			r.metrics.IPMoves.WithLabelValues(gw.Name, src.provider.Name()).Inc()
		}
	}
	r.nodes.forget(src.provider.Name() + "/" + node.Name)
	if e.Status.Node != "" {
		r.nodes.forget(src.provider.Name() + "/" + e.Status.Node)
	}
	if err != nil && fresh && providers.IsConflict(err) {
		// Something egressd does not know holds the address (another instance, a CNI's pod
		// IP): it was never ours, so mark it taken and let the next pass allocate another.
		return placeAfterAllocate, r.abandonTaken(ctx, gw, e, ip, err)
	}
	if err != nil {
		reason := egressv1.ReasonProviderError
		switch {
		case providers.IsCapacityExhausted(err):
			reason = egressv1.ReasonCapacityExhausted
		case providers.IsThrottled(err):
			reason = egressv1.ReasonThrottled
		}
		r.recorder.Eventf(e, gw, corev1.EventTypeWarning, reason, "Assign", "assigning %s to %s: %v", e.Spec.IP, node.Name, err)
		wait := providers.RetryAfter(err)
		if providers.IsThrottled(err) && wait == 0 {
			wait = time.Second
		}
		return wait, errors.Join(fmt.Errorf("assigning %s to %s: %w", e.Spec.IP, node.Name, err), r.setAssigned(ctx, e, nil, &metav1.Condition{
			Type: egressv1.ConditionAssigned, Status: metav1.ConditionFalse, Reason: reason, Message: err.Error(),
		}))
	}
	r.recorder.Eventf(e, gw, corev1.EventTypeNormal, egressv1.ReasonAssigned, "Assign", "%s held by %s on %s", e.Spec.IP, a.InterfaceID, node.Name)
	return 0, r.setAssigned(ctx, e, a, nil)
}

// abandonTaken drops the ledger entry of an address the cloud refused because something else
// holds it. No cloud state of egressd's stands behind it (EnsureIP's assignment failed), so the
// finalizer is removed without a release; an ownership tag or public IP the provider may have
// created first is tagged as this cluster's and garbage collection releases it.
func (r GatewayReconciler) abandonTaken(ctx context.Context, gw *egressv1.EgressGateway, e *egressv1.EgressIP, ip netip.Addr, cause error) error {
	_ = r.alloc.Release(ip)
	markErr := r.alloc.MarkInUse(e.Spec.Zone, e.Spec.Subnet, ip)
	r.recorder.Eventf(gw, nil, corev1.EventTypeNormal, egressv1.ReasonAddressInUse, "Allocate",
		"%s is held outside egressd in zone %s (%v); allocating another address", ip, e.Spec.Zone, cause)
	patch := client.MergeFrom(e.DeepCopy())
	controllerutil.RemoveFinalizer(e, egressv1.FinalizerReleaseCloud)
	if err := r.client.Patch(ctx, e, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("dropping the finalizer of %s, taken outside egressd: %w", ip, err)
	}
	return errors.Join(markErr, r.deleteEgressIP(ctx, e))
}

// setAssigned writes where the cloud holds the address (a != nil) or why it does not.
func (r GatewayReconciler) setAssigned(ctx context.Context, e *egressv1.EgressIP, a *providers.Assignment, failed *metav1.Condition) error {
	patch := client.MergeFrom(e.DeepCopy())
	if a != nil {
		e.Status.Node = a.Node
		if e.Status.Node == "" {
			e.Status.Node = e.Spec.Node
		}
		e.Status.InterfaceMAC = a.InterfaceMAC
		e.Status.PublicIP = ""
		if a.PublicIP.IsValid() {
			e.Status.PublicIP = a.PublicIP.String()
		}
		e.Status.Handle = egressv1.ProviderHandle{Interface: a.InterfaceID, Attachment: a.Attachment, PublicAllocation: a.PublicAllocation, PublicAssociation: a.PublicAssociation}
		meta.SetStatusCondition(&e.Status.Conditions, metav1.Condition{Type: egressv1.ConditionAssigned, Status: metav1.ConditionTrue,
			Reason: egressv1.ReasonAssigned, Message: fmt.Sprintf("held by %s on %s", orNone(a.InterfaceID), e.Status.Node), ObservedGeneration: e.Generation})
	} else {
		failed.ObservedGeneration = e.Generation
		meta.SetStatusCondition(&e.Status.Conditions, *failed)
	}
	if err := r.client.Status().Patch(ctx, e, patch); err != nil {
		return fmt.Errorf("recording the assignment of %s: %w", e.Spec.IP, err)
	}
	return nil
}

func assignmentOf(e *egressv1.EgressIP) providers.Assignment {
	ip, _ := netip.ParseAddr(e.Spec.IP)
	pub, _ := netip.ParseAddr(e.Status.PublicIP)
	return providers.Assignment{
		IP: ip, Node: e.Status.Node, InterfaceID: e.Status.Handle.Interface, InterfaceMAC: e.Status.InterfaceMAC,
		Subnet: e.Spec.Subnet, Attachment: e.Status.Handle.Attachment, PublicIP: pub,
		PublicAllocation: e.Status.Handle.PublicAllocation, PublicAssociation: e.Status.Handle.PublicAssociation,
	}
}

// deleteEgressIP deletes a ledger entry; its finalizer releases the cloud side.
func (r GatewayReconciler) deleteEgressIP(ctx context.Context, e *egressv1.EgressIP) error {
	if e == nil {
		return nil
	}
	if err := r.client.Delete(ctx, e); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting EgressIP %s: %w", e.Name, err)
	}
	return nil
}

// releaseGroup deletes every EgressIP of a deleted group (their finalizers release the cloud
// side). Works without a finalizer on the gateway, and without the garbage collector.
func (r GatewayReconciler) releaseGroup(ctx context.Context, name string) error {
	eips, err := r.ledger(ctx, name)
	if err != nil {
		return err
	}
	r.setProbeTargets(name, nil)
	var errs []error
	for i := range eips {
		if eips[i].DeletionTimestamp == nil {
			errs = append(errs, r.deleteEgressIP(ctx, &eips[i]))
		}
	}
	return errors.Join(errs...)
}

// probeTargets adds the group's gateways to the coordinator's probes.
func (r GatewayReconciler) probeTargets(gw *egressv1.EgressGateway, views []NodeView) {
	var mine []probe.Target
	for _, v := range views {
		if v.UnderlayIP.IsValid() {
			mine = append(mine, contract.ProbeTarget(netip.AddrPortFrom(v.UnderlayIP, uint16(r.cfg.ProbePort)), gw.Spec.Health))
		}
	}
	r.setProbeTargets(gw.Name, mine)
}

func (r GatewayReconciler) conditions(gw *egressv1.EgressGateway, plan *Plan, eips []egressv1.EgressIP, syncErr error) []metav1.Condition {
	var unhealthy, active, total int
	for _, z := range plan.Zones {
		for _, g := range z.Gateways {
			total++
			switch g.State {
			case egressv1.GatewayUnhealthy:
				unhealthy++
			case egressv1.GatewayActive:
				active++
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
	degraded := metav1.Condition{Type: egressv1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: egressv1.ReasonAllGatewaysHealthy, Message: "all gateways healthy, all egress IPs placed"}
	if unhealthy > 0 || len(unplaced) > 0 {
		degraded.Status, degraded.Reason = metav1.ConditionTrue, egressv1.ReasonSomeGatewaysDown
		degraded.Message = fmt.Sprintf("%d of %d gateways unhealthy; unplaced egress IPs: %v", unhealthy, total, unplaced)
	}
	synced := metav1.Condition{Type: egressv1.ConditionCloudSynced, Status: metav1.ConditionTrue, Reason: egressv1.ReasonSynced, Message: "the cloud holds every placed egress IP where the ledger says"}
	if len(unassigned) > 0 || syncErr != nil {
		synced.Status, synced.Reason = metav1.ConditionFalse, egressv1.ReasonMoving
		synced.Message = fmt.Sprintf("not yet where the ledger says: %v", unassigned)
		if syncErr != nil {
			synced.Reason = egressv1.ReasonProviderError
			switch {
			case providers.IsCapacityExhausted(syncErr) || ipalloc.IsExhausted(syncErr):
				synced.Reason = egressv1.ReasonCapacityExhausted
			case providers.IsThrottled(syncErr):
				synced.Reason = egressv1.ReasonThrottled
			}
			synced.Message = truncate(syncErr.Error(), 1000)
		}
	}
	return []metav1.Condition{ready, degraded, synced}
}

// writeStatus writes the group's status when it changed.
func (r GatewayReconciler) writeStatus(ctx context.Context, gw *egressv1.EgressGateway, plan *Plan, eips []egressv1.EgressIP, conds []metav1.Condition) error {
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

func (r GatewayReconciler) observe(gw *egressv1.EgressGateway, plan *Plan, eips []egressv1.EgressIP) {
	if r.metrics == nil {
		return
	}
	r.metrics.Gateways.DeletePartialMatch(map[string]string{"gateway": gw.Name})
	r.metrics.EgressIPs.DeletePartialMatch(map[string]string{"gateway": gw.Name})
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
