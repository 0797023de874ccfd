package coordinator

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/contract"
)

// TestTooManyGatewaysIsDegraded: a group with more Active or Draining gateways than a node's
// datapath lists says so in Degraded (TooManyGateways), rather than having the agents cut it
// silently; Standby gateways do not count, and 8 is fine.
func TestTooManyGatewaysIsDegraded(t *testing.T) {
	if contract.MaxGatewaysPerGroup != bpf.MaxGateways {
		t.Fatalf("contract.MaxGatewaysPerGroup %d, the datapath lists %d", contract.MaxGatewaysPerGroup, bpf.MaxGateways)
	}
	plan := func(active, draining, standby int) *Plan {
		var gws []egressv1.GatewayNodeStatus
		add := func(n int, st egressv1.GatewayState) {
			for i := range n {
				gws = append(gws, egressv1.GatewayNodeStatus{Node: fmt.Sprintf("%s-%d", st, i), State: st})
			}
		}
		add(active, egressv1.GatewayActive)
		add(draining, egressv1.GatewayDraining)
		add(standby, egressv1.GatewayStandby)
		return &Plan{Zones: []ZonePlan{{Name: "a", Gateways: gws}}}
	}
	r := &GatewayReconciler{Coordinator: &Coordinator{}}
	for _, c := range []struct {
		active, draining, standby int
		want                      string
	}{
		{8, 0, 4, egressv1.ReasonAllGatewaysHealthy},
		{7, 2, 0, egressv1.ReasonTooManyGateways},
		{9, 0, 0, egressv1.ReasonTooManyGateways},
	} {
		conds := r.conditions(&egressv1.EgressGateway{}, plan(c.active, c.draining, c.standby), nil, nil)
		d := meta.FindStatusCondition(conds, egressv1.ConditionDegraded)
		if d == nil || d.Reason != c.want {
			t.Errorf("%d active, %d draining, %d standby: Degraded %+v, want reason %s", c.active, c.draining, c.standby, d, c.want)
			continue
		}
		if c.want == egressv1.ReasonTooManyGateways && !strings.Contains(d.Message, fmt.Sprintf("%d Active or Draining", c.active+c.draining)) {
			t.Errorf("message %q does not count the gateways", d.Message)
		}
	}
}

// TestGroupIDTooLargeIsNotReady: a group whose id the agents' mark layout cannot carry (the
// agents skip it, GroupIDTooLarge) is Ready=False with that reason, never silently unused; an
// id that fits is not.
func TestGroupIDTooLargeIsNotReady(t *testing.T) {
	active := &Plan{Zones: []ZonePlan{{Name: "a", Gateways: []egressv1.GatewayNodeStatus{{Node: "n", State: egressv1.GatewayActive}}}}}
	for _, c := range []struct {
		mask string
		id   int32
		want string
	}{
		{"", 65535, egressv1.ReasonAllGatewaysHealthy},
		{"0x00003fff", 511, egressv1.ReasonAllGatewaysHealthy},
		{"0x00003fff", 512, egressv1.ReasonGroupIDTooLarge},
		{"0xffff0000", 2048, egressv1.ReasonGroupIDTooLarge},
	} {
		cfg, err := ParseConfig([]byte("clusterName: c\nmarkMask: \"" + c.mask + "\"\n"))
		if err != nil {
			t.Fatal(err)
		}
		r := &GatewayReconciler{Coordinator: &Coordinator{cfg: cfg}}
		gw := &egressv1.EgressGateway{Status: egressv1.EgressGatewayStatus{GroupID: c.id}}
		ready := meta.FindStatusCondition(r.conditions(gw, active, nil, nil), egressv1.ConditionReady)
		if ready == nil || ready.Reason != c.want {
			t.Errorf("mask %q group %d: Ready %+v, want reason %s", c.mask, c.id, ready, c.want)
			continue
		}
		if c.want == egressv1.ReasonGroupIDTooLarge && (ready.Status != "False" || !strings.Contains(ready.Message, fmt.Sprintf("group id %d", c.id))) {
			t.Errorf("mask %q group %d: Ready %+v, want False naming the id", c.mask, c.id, ready)
		}
	}
	if _, err := ParseConfig([]byte("clusterName: c\nmarkMask: \"0x1f\"\n")); err == nil || !strings.Contains(err.Error(), "markMask") {
		t.Errorf("a 5-bit markMask: %v, want the config refused naming markMask", err)
	}
}
