package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

// TestPrefixBudgetFreedByADeletion runs the controllers as Setup wires them: deleting the
// oldest policy of a namespace re-evaluates the others, and the one it kept out is accepted,
// with no event on that policy itself.
func TestPrefixBudgetFreedByADeletion(t *testing.T) {
	e := newEnv(t, 1, 1, nil)
	// The policies name a gateway that does not exist, so no gateway event reconciles them:
	// only the deletion can. The budget is checked before the gateway, as the agents do.
	absent := e.gateway + "-absent"
	ns := e.gateway + "-ns"
	ensureNamespace(t, ns)

	scheme, err := newScheme()
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(rest.CopyConfig(server.Config), manager.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)}, Cache: cacheOptions(e.cfg.Namespace),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.cfg
	cfg.PolicyPrefixBudget.Namespace = 10
	c := New(Options{Config: cfg, Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("egressd-coordinator"),
		Providers: map[string]providers.Provider{"aws": e.prov}, Health: e.health})
	if err := Setup(mgr, c, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	pol := func(name string, n int) *egressv1.EgressPolicy {
		p := &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: egressv1.EgressPolicyRule{
			PodSelector: metav1.LabelSelector{}, Gateway: absent}}
		for i := range n {
			p.Spec.DestinationCIDRs = append(p.Spec.DestinationCIDRs, fmt.Sprintf("10.9.%d.0/24", i))
		}
		if err := server.Client.Create(e.ctx, p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = server.Client.Delete(context.Background(), p) })
		return p
	}
	accepted := func(p *egressv1.EgressPolicy) metav1.Condition {
		got := &egressv1.EgressPolicy{}
		if err := server.Client.Get(e.ctx, client.ObjectKeyFromObject(p), got); err != nil {
			t.Fatal(err)
		}
		return cond(got.Status.Conditions, egressv1.ConditionAccepted)
	}
	// waitFor fails the test when the controllers have not got there within a minute: it
	// bounds a hang, it does not measure anything.
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within a minute", what)
			}
		}
	}

	a := pol("a", 8)
	b := pol("b", 5) // 8 + 5 > 10
	waitFor("verdict on both policies", func() bool {
		return accepted(a).Reason == egressv1.ReasonGatewayNotFound && accepted(b).Reason == egressv1.ReasonPrefixBudgetExceeded
	})
	if err := server.Client.Delete(e.ctx, a); err != nil {
		t.Fatal(err)
	}
	waitFor("b re-evaluated once a is deleted", func() bool { return accepted(b).Reason == egressv1.ReasonGatewayNotFound })
}
