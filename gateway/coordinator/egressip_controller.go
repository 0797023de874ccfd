package coordinator

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

// EgressIPReconciler releases the cloud side of a deleted EgressIP, then its finalizer.
type EgressIPReconciler struct{ *Coordinator }

// Reconcile implements reconcile.Reconciler.
func (r EgressIPReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	e := &egressv1.EgressIP{}
	if err := r.client.Get(ctx, req.NamespacedName, e); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if e.DeletionTimestamp == nil || !controllerutil.ContainsFinalizer(e, egressv1.FinalizerReleaseCloud) {
		return ctrl.Result{}, nil
	}
	if !r.begin(e.Name, "release") {
		// A sync of the same address is in flight; release right after it.
		return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	defer r.end(e.Name)

	if e.Spec.Provider != "static" {
		p, ok := r.providers[e.Spec.Provider]
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
