package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

// An address the cloud holds through an address of its own choosing (status.privateAddressNotHeld:
// an ipConfiguration of an Azure Uniform scale-set instance's model, which an AKS upgrade
// resets to the scale set's) can be lost without any call of egressd's. The gateway controller
// checks, from the holder's discovery, that the address's NAT source is still on the node; when
// it is not, it records the address as held nowhere, and the EgressIP controller assigns it
// again (a MoveIP to the same node, which adds the ipConfiguration back). Discovery is cached
// for CapacityTTL and forgotten after each assignment; a view read during an assignment and
// kept past it makes one needless re-assignment, which finds the address held and writes
// nothing in the cloud.

// notHeldLost reports whether e, held by the cloud through its NAT source, is no longer held on
// its node as info (the node's discovery) shows it. Addresses the cloud holds themselves are
// not checked here.
func notHeldLost(e *egressv1.EgressIP, info *providers.NodeInfo) bool {
	if !e.Status.PrivateAddressNotHeld || e.Status.Node == "" || e.Status.Node != e.Spec.Node || e.DeletionTimestamp != nil || info == nil {
		return false
	}
	src, err := netip.ParseAddr(e.Status.PublicNATSource)
	if err != nil {
		return false // nothing to look for; the agent refuses to serve it
	}
	for _, itf := range info.Interfaces {
		if itf.PrimaryIP == src || slices.Contains(itf.SecondaryIPs, src) {
			return false
		}
	}
	return true
}

// resyncNotHeld clears status.node of the group's addresses the cloud no longer holds on their
// node (notHeldLost), with a Warning event and the Assigned condition saying why. Nodes whose
// discovery fails are skipped: the capacity pass reports them.
func (r *GatewayReconciler) resyncNotHeld(ctx context.Context, gw *egressv1.EgressGateway, p providers.Provider, eips []egressv1.EgressIP, byName map[string]*corev1.Node) error {
	var errs []error
	for i := range eips {
		e := &eips[i]
		n := byName[e.Status.Node]
		if n == nil || !e.Status.PrivateAddressNotHeld {
			continue
		}
		info, err := r.discover(ctx, p, n)
		if err != nil || !notHeldLost(e, info) {
			continue
		}
		msg := fmt.Sprintf("the cloud no longer holds %s on %s: its NAT source %s is gone from the node (an upgrade may have reset the instance's model); assigning it again, its public IP may change within the gateway's prefix",
			e.Spec.IP, n.Name, e.Status.PublicNATSource)
		r.recorder.Eventf(e, gw, corev1.EventTypeWarning, egressv1.ReasonMoving, "Resync", msg)
		patch := client.MergeFrom(e.DeepCopy())
		e.Status.Node = ""
		meta.SetStatusCondition(&e.Status.Conditions, metav1.Condition{Type: egressv1.ConditionAssigned, Status: metav1.ConditionFalse,
			Reason: egressv1.ReasonMoving, Message: msg, ObservedGeneration: e.Generation})
		if err := r.client.Status().Patch(ctx, e, patch); err != nil {
			errs = append(errs, fmt.Errorf("recording that the cloud lost %s: %w", e.Spec.IP, err))
		}
	}
	return errors.Join(errs...)
}
