package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

// busyRetry is how soon an EgressIP whose other operation is in flight is looked at again.
const busyRetry = 100 * time.Millisecond

// EgressIPReconciler makes the cloud hold one address where its ledger entry says (spec.node),
// and releases the cloud side of a deleted entry before its finalizer. It owns the EgressIP's
// Assigned condition and status, and is the only caller of a provider's EnsureIP, MoveIP and
// ReleaseIP; the gateway controller only writes the ledger.
type EgressIPReconciler struct {
	*Coordinator
	inflight *inflight
}

// NewEgressIPReconciler returns the EgressIP controller's reconciler.
func NewEgressIPReconciler(c *Coordinator) *EgressIPReconciler {
	return &EgressIPReconciler{Coordinator: c, inflight: &inflight{ops: map[types.UID]string{}}}
}

// inflight remembers the cloud operations in progress by EgressIP UID, so that an address is
// never acted on twice at once, whatever a stale cache or a requeue says; a recreated EgressIP
// of the same address is a new UID.
type inflight struct {
	mu  sync.Mutex
	ops map[types.UID]string
}

// begin marks an operation in flight; false when one already is.
func (f *inflight) begin(uid types.UID, op string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, busy := f.ops[uid]; busy {
		return false
	}
	f.ops[uid] = op
	return true
}

func (f *inflight) end(uid types.UID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ops, uid)
}

// Reconcile implements reconcile.Reconciler.
func (r *EgressIPReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, req.Name)
	if err != nil && r.metrics != nil {
		r.metrics.ReconcileErrors.WithLabelValues("egressip").Inc()
	}
	return res, err
}

func (r *EgressIPReconciler) reconcile(ctx context.Context, name string) (ctrl.Result, error) {
	e := &egressv1.EgressIP{}
	if err := r.client.Get(ctx, client.ObjectKey{Name: name}, e); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if e.DeletionTimestamp == nil && (e.Spec.Node == "" || e.Status.Node == e.Spec.Node) {
		return ctrl.Result{}, nil // in place, or not placed: nothing to do in the cloud
	}
	if e.DeletionTimestamp != nil && !controllerutil.ContainsFinalizer(e, egressv1.FinalizerReleaseCloud) {
		return ctrl.Result{}, nil
	}
	if !r.inflight.begin(e.UID, "reconcile") {
		return ctrl.Result{RequeueAfter: busyRetry}, nil
	}
	defer r.inflight.end(e.UID)
	// The cache may be behind our own last write (a sync that just recorded status.node):
	// acting on it would call the cloud twice for one move. Decide from the API server.
	if err := r.reader.Get(ctx, client.ObjectKey{Name: name}, e); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	switch {
	case e.DeletionTimestamp != nil:
		if !controllerutil.ContainsFinalizer(e, egressv1.FinalizerReleaseCloud) {
			return ctrl.Result{}, nil
		}
		return r.release(ctx, e)
	case e.Spec.Node == "" || e.Status.Node == e.Spec.Node:
		return ctrl.Result{}, nil
	}
	wait, err := r.sync(ctx, e)
	if err != nil && wait > 0 {
		// Throttled: come back when the cloud said, not on the error backoff.
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	return ctrl.Result{RequeueAfter: wait}, err
}

// sync makes the cloud hold e on spec.node: ensure the first time, move afterwards. It returns
// how long to wait before retrying when the cloud throttled us.
func (r *EgressIPReconciler) sync(ctx context.Context, e *egressv1.EgressIP) (time.Duration, error) {
	gw := &egressv1.EgressGateway{}
	if err := r.client.Get(ctx, client.ObjectKey{Name: e.Spec.Gateway}, gw); err != nil {
		// A deleted group's addresses are deleted by the gateway controller, not moved.
		return 0, client.IgnoreNotFound(err)
	}
	node := &corev1.Node{}
	if err := r.client.Get(ctx, client.ObjectKey{Name: e.Spec.Node}, node); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, fmt.Errorf("node %s of %s is gone", e.Spec.Node, e.Spec.IP)
		}
		return 0, err
	}
	p, ok := r.providerOf(e.Spec.Provider)
	if !ok {
		// The gateway controller reports the unknown provider on the group.
		return 0, fmt.Errorf("assigning %s: provider %q not configured", e.Spec.IP, e.Spec.Provider)
	}
	if !controllerutil.ContainsFinalizer(e, egressv1.FinalizerReleaseCloud) {
		// The gateway controller creates every EgressIP with it; one that lost it gets it back
		// before the cloud holds anything for it, so its deletion still releases the address.
		patch := client.MergeFrom(e.DeepCopy())
		controllerutil.AddFinalizer(e, egressv1.FinalizerReleaseCloud)
		if err := r.client.Patch(ctx, e, patch); err != nil {
			return 0, fmt.Errorf("adding the finalizer of %s before assigning it: %w", e.Spec.IP, err)
		}
	}
	ip, _ := netip.ParseAddr(e.Spec.IP)
	owner := providers.Owner{Cluster: r.cfg.ClusterName, Gateway: e.Spec.Gateway}
	var (
		a   *providers.Assignment
		err error
	)
	fresh := e.Status.Handle.Interface == "" && e.Status.Node == ""
	if fresh {
		mode := providers.InterfacePrimary
		if c := gw.Spec.Addresses.Cloud; c != nil && c.Interface != "" {
			mode = providers.InterfaceMode(c.Interface)
		}
		a, err = p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeRef(node), IP: ip, Subnet: e.Spec.Subnet, Public: e.Spec.Public, Interface: mode})
	} else {
		a, err = p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: assignmentOf(e), To: nodeRef(node)})
		if err == nil && r.metrics != nil {
			r.metrics.IPMoves.WithLabelValues(e.Spec.Gateway, p.Name()).Inc()
		}
	}
	r.nodes.forget(p.Name() + "/" + node.Name)
	if e.Status.Node != "" {
		r.nodes.forget(p.Name() + "/" + e.Status.Node)
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
	r.recorder.Eventf(e, gw, corev1.EventTypeNormal, egressv1.ReasonAssigned, "Assign", "%s held by %s on %s", e.Spec.IP, orNone(a.InterfaceID), node.Name)
	return 0, r.setAssigned(ctx, e, a, nil)
}

// release releases the cloud side of a deleted EgressIP, gives the address back to the
// allocator and removes the finalizer.
func (r *EgressIPReconciler) release(ctx context.Context, e *egressv1.EgressIP) (ctrl.Result, error) {
	p, ok := r.providerOf(e.Spec.Provider)
	if !ok {
		r.recorder.Eventf(e, nil, corev1.EventTypeWarning, egressv1.ReasonProviderNotFound, "Release",
			"provider %q is not configured: the cloud side of %s cannot be released", e.Spec.Provider, e.Spec.IP)
		return ctrl.Result{}, fmt.Errorf("releasing %s: provider %q not configured", e.Spec.IP, e.Spec.Provider)
	}
	err := p.ReleaseIP(ctx, providers.ReleaseRequest{
		Owner:   providers.Owner{Cluster: r.cfg.ClusterName, Gateway: e.Spec.Gateway},
		Current: assignmentOf(e),
	})
	if err != nil {
		r.recorder.Eventf(e, nil, corev1.EventTypeWarning, egressv1.ReasonProviderError, "Release", "releasing %s: %v", e.Spec.IP, err)
		if wait := providers.RetryAfter(err); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
		return ctrl.Result{}, fmt.Errorf("releasing %s: %w", e.Spec.IP, err)
	}
	if e.Status.Node != "" {
		r.nodes.forget(p.Name() + "/" + e.Status.Node)
	}
	if ip, err := netip.ParseAddr(e.Spec.IP); err == nil {
		_ = r.alloc.Release(ip) // not leased (never loaded) is fine
	}
	patch := client.MergeFrom(e.DeepCopy())
	controllerutil.RemoveFinalizer(e, egressv1.FinalizerReleaseCloud)
	if err := r.client.Patch(ctx, e, patch); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("removing the finalizer of %s: %w", e.Name, err)
	}
	return ctrl.Result{}, nil
}

// abandonTaken drops the ledger entry of an address the cloud refused because something else
// holds it. No cloud state of egressd's stands behind it (EnsureIP's assignment failed), so the
// finalizer is removed without a release; an ownership tag or public IP the provider may have
// created first is tagged as this cluster's and garbage collection releases it. The gateway
// controller, woken by the deletion, allocates another address.
func (r *EgressIPReconciler) abandonTaken(ctx context.Context, gw *egressv1.EgressGateway, e *egressv1.EgressIP, ip netip.Addr, cause error) error {
	_ = r.alloc.Release(ip)
	markErr := r.alloc.MarkInUse(e.Spec.Zone, e.Spec.Subnet, ip)
	r.recorder.Eventf(gw, nil, corev1.EventTypeNormal, egressv1.ReasonAddressInUse, "Allocate",
		"%s is held outside egressd in zone %s (%v); allocating another address", ip, e.Spec.Zone, cause)
	patch := client.MergeFrom(e.DeepCopy())
	controllerutil.RemoveFinalizer(e, egressv1.FinalizerReleaseCloud)
	if err := r.client.Patch(ctx, e, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("dropping the finalizer of %s, taken outside egressd: %w", ip, err)
	}
	return errors.Join(markErr, deleteEgressIP(ctx, r.client, e))
}

// setAssigned writes where the cloud holds the address (a != nil) or why it does not.
func (r *EgressIPReconciler) setAssigned(ctx context.Context, e *egressv1.EgressIP, a *providers.Assignment, failed *metav1.Condition) error {
	patch := client.MergeFrom(e.DeepCopy())
	if a != nil {
		e.Status.Node = a.Node
		if e.Status.Node == "" {
			e.Status.Node = e.Spec.Node
		}
		e.Status.InterfaceMAC = a.InterfaceMAC
		e.Status.PublicIP, e.Status.PublicNATSource = "", ""
		e.Status.PrivateAddressNotHeld = a.PrivateAddressNotHeld
		if a.PublicIP.IsValid() {
			e.Status.PublicIP = a.PublicIP.String()
			if a.PublicNATSource.IsValid() {
				e.Status.PublicNATSource = a.PublicNATSource.String()
			}
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
	natSrc, _ := netip.ParseAddr(e.Status.PublicNATSource)
	return providers.Assignment{
		IP: ip, Node: e.Status.Node, InterfaceID: e.Status.Handle.Interface, InterfaceMAC: e.Status.InterfaceMAC,
		Subnet: e.Spec.Subnet, Attachment: e.Status.Handle.Attachment, PublicIP: pub, PublicNATSource: natSrc,
		PublicAllocation: e.Status.Handle.PublicAllocation, PublicAssociation: e.Status.Handle.PublicAssociation,
		PrivateAddressNotHeld: e.Status.PrivateAddressNotHeld,
	}
}

// deleteEgressIP deletes a ledger entry; its finalizer releases the cloud side.
func deleteEgressIP(ctx context.Context, c client.Client, e *egressv1.EgressIP) error {
	if e == nil {
		return nil
	}
	if err := c.Delete(ctx, e); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting EgressIP %s: %w", e.Name, err)
	}
	return nil
}
