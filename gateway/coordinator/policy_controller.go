package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
)

// PolicyReconciler writes the status of EgressPolicies and ClusterEgressPolicies: whether the
// gateway exists and admits the policy's namespaces, whether the policy fits its prefix budget
// (contract.Admit, as the agents decide it), how many pods it selects, the egress IPs in use.
// What it cannot accept it says in a condition and an Event, and nothing else breaks.
type PolicyReconciler struct {
	*Coordinator
	// Cluster: reconcile ClusterEgressPolicies, else EgressPolicies.
	Cluster bool
}

// Reconcile implements reconcile.Reconciler.
func (r PolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var (
		obj        client.Object
		rule       egressv1.EgressPolicyRule
		status     *egressv1.EgressPolicyStatus
		namespaces []corev1.Namespace
		refusal    string // why the policy does not fit its prefix budget; empty: it fits
	)
	kind := kindEgressPolicy
	if r.Cluster {
		kind = kindClusterEgressPolicy
		p := &egressv1.ClusterEgressPolicy{}
		if err := r.client.Get(ctx, req.NamespacedName, p); err != nil {
			return ctrl.Result{}, r.ignoreNotFound(kind, req, err)
		}
		obj, rule, status = p, p.Spec.EgressPolicyRule, &p.Status
		sel, err := r.selectors.get(selectorKey{kind: kind, name: req.NamespacedName, field: fieldNamespaceSelector}, &p.Spec.NamespaceSelector)
		if err != nil {
			return ctrl.Result{}, err
		}
		var list corev1.NamespaceList
		if err := r.client.List(ctx, &list, client.MatchingLabelsSelector{Selector: sel}); err != nil {
			return ctrl.Result{}, err
		}
		namespaces = list.Items
		var all egressv1.ClusterEgressPolicyList
		if err := r.client.List(ctx, &all, client.UnsafeDisableDeepCopy); err != nil {
			return ctrl.Result{}, err
		}
		if adm := contract.AdmitClusterEgressPolicies(all.Items, r.cfg.PolicyPrefixBudget); !adm.Admits(p.Name) {
			refusal = adm.Refusal(p.Name, contract.Prefixes(&rule))
		}
	} else {
		p := &egressv1.EgressPolicy{}
		if err := r.client.Get(ctx, req.NamespacedName, p); err != nil {
			return ctrl.Result{}, r.ignoreNotFound(kind, req, err)
		}
		obj, rule, status = p, p.Spec, &p.Status
		ns := corev1.Namespace{}
		if err := r.client.Get(ctx, client.ObjectKey{Name: p.Namespace}, &ns); err != nil {
			return ctrl.Result{}, err
		}
		namespaces = []corev1.Namespace{ns}
		var all egressv1.EgressPolicyList
		if err := r.client.List(ctx, &all, client.InNamespace(p.Namespace), client.UnsafeDisableDeepCopy); err != nil {
			return ctrl.Result{}, err
		}
		if adm := contract.AdmitEgressPolicies(all.Items, r.cfg.PolicyPrefixBudget)[p.Namespace]; !adm.Admits(p.Name) {
			refusal = adm.Refusal(p.Name, contract.Prefixes(&rule))
		}
	}

	next := status.DeepCopy()
	next.ObservedGeneration = obj.GetGeneration()
	podSel, podSelErr := r.selectors.get(selectorKey{kind: kind, name: req.NamespacedName, field: fieldPodSelector}, &rule.PodSelector)
	accepted, ready := r.evaluate(ctx, rule, podSel, podSelErr, namespaces, refusal, next)
	accepted.ObservedGeneration, ready.ObservedGeneration = obj.GetGeneration(), obj.GetGeneration()
	meta.SetStatusCondition(&next.Conditions, accepted)
	meta.SetStatusCondition(&next.Conditions, ready)
	if prev := meta.FindStatusCondition(status.Conditions, egressv1.ConditionAccepted); accepted.Status == metav1.ConditionFalse &&
		(prev == nil || prev.Status != metav1.ConditionFalse || prev.Reason != accepted.Reason) {
		r.recorder.Eventf(obj, nil, corev1.EventTypeWarning, accepted.Reason, "Accept", accepted.Message)
	}
	if equality.Semantic.DeepEqual(next, status) {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFrom(obj.DeepCopyObject().(client.Object))
	*status = *next
	if err := r.client.Status().Patch(ctx, obj, patch); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("writing status of policy %s: %w", req.NamespacedName, err)
	}
	return ctrl.Result{}, nil
}

// ignoreNotFound is err, nil when the policy is gone; its parsed selectors go with it.
func (r PolicyReconciler) ignoreNotFound(kind string, req ctrl.Request, err error) error {
	if apierrors.IsNotFound(err) {
		r.selectors.forget(kind, req.NamespacedName)
		return nil
	}
	return err
}

// evaluate fills matched pods and egress IPs and returns the Accepted and Ready conditions.
// podSel is rule.PodSelector parsed (with podSelErr: no pod counted). refusal, when set, says
// why the policy does not fit its prefix budget.
func (r PolicyReconciler) evaluate(ctx context.Context, rule egressv1.EgressPolicyRule, podSel labels.Selector, podSelErr error, namespaces []corev1.Namespace,
	refusal string, st *egressv1.EgressPolicyStatus) (metav1.Condition, metav1.Condition) {
	acc := metav1.Condition{Type: egressv1.ConditionAccepted}
	ready := metav1.Condition{Type: egressv1.ConditionReady, Status: metav1.ConditionFalse}
	st.MatchedPods, st.EgressIPs = 0, nil

	if refusal != "" {
		// The agents skip it whole (contract.Admit), before they look at its gateway: it
		// steers no pod.
		acc.Status, acc.Reason, acc.Message = metav1.ConditionFalse, egressv1.ReasonPrefixBudgetExceeded, refusal
		ready.Reason, ready.Message = acc.Reason, acc.Message
		return acc, ready
	}

	gw := &egressv1.EgressGateway{}
	if err := r.client.Get(ctx, client.ObjectKey{Name: rule.Gateway}, gw); err != nil {
		acc.Status, acc.Reason = metav1.ConditionFalse, egressv1.ReasonGatewayNotFound
		acc.Message = fmt.Sprintf("spec.gateway %q: no such EgressGateway", rule.Gateway)
		if !apierrors.IsNotFound(err) {
			acc.Message = fmt.Sprintf("spec.gateway %q: %v", rule.Gateway, err)
		}
		ready.Reason, ready.Message = acc.Reason, acc.Message
		return acc, ready
	}
	var allowed, refused []string
	for _, ns := range namespaces {
		ok, err := contract.NamespaceAdmitted(gw.Spec.AllowedNamespaces, ns.Name, ns.Labels)
		if err != nil || !ok {
			refused = append(refused, ns.Name)
			continue
		}
		allowed = append(allowed, ns.Name)
	}
	if len(allowed) == 0 && len(namespaces) > 0 {
		acc.Status, acc.Reason = metav1.ConditionFalse, egressv1.ReasonNamespaceNotAllowed
		acc.Message = fmt.Sprintf("EgressGateway %s does not admit namespace(s) %s (spec.allowedNamespaces)", gw.Name, strings.Join(refused, ", "))
		ready.Reason, ready.Message = acc.Reason, acc.Message
		return acc, ready
	}
	acc.Status, acc.Reason = metav1.ConditionTrue, egressv1.ReasonAccepted
	acc.Message = fmt.Sprintf("steered through EgressGateway %s", gw.Name)
	if len(refused) > 0 {
		acc.Message += fmt.Sprintf("; namespaces not admitted by the gateway are left out: %s", strings.Join(refused, ", "))
	}

	if podSelErr == nil {
		for _, ns := range allowed {
			// Counting only: no deep copy of every matched pod out of the cache.
			var pods corev1.PodList
			if err := r.client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: podSel}, client.UnsafeDisableDeepCopy); err != nil {
				continue
			}
			for i := range pods.Items {
				if counted(&pods.Items[i]) {
					st.MatchedPods++
				}
			}
		}
	}
	st.EgressIPs = slices.Clone(gw.Status.EgressIPs)
	if meta.IsStatusConditionTrue(gw.Status.Conditions, egressv1.ConditionReady) {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, egressv1.ReasonAccepted, fmt.Sprintf("EgressGateway %s is ready", gw.Name)
	} else {
		ready.Reason, ready.Message = egressv1.ReasonPending, fmt.Sprintf("EgressGateway %s is not ready", gw.Name)
	}
	return acc, ready
}

// counted reports whether a selected pod counts in MatchedPods: the agent steers it
// (contract.Steerable, the rule the agent applies) and it is not being deleted (a terminating
// pod is still steered while it runs, but no longer counts as one the policy serves).
func counted(p *corev1.Pod) bool {
	return contract.Steerable(p) && p.DeletionTimestamp == nil
}
