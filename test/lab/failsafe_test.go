package lab

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
)

// TestControllerProbesBlocked drops the controller's probes with an nftables rule in the
// control-plane namespace (as a NetworkPolicy in its namespace would) while the agents, their
// Leases and the datapath are untouched: no gateway fails, no egress IP moves, the monitor's
// requests keep succeeding, and Degraded says ControllerProbesFailing until the rule is removed.
func TestControllerProbesBlocked(t *testing.T) {
	l, ctx, before, mon := monitoredLab(t, Config{})
	time.Sleep(3 * time.Second)

	cp := l.CP
	const table = "egressd_lab_cut"
	nft := func(args ...string) {
		t.Helper()
		if out, err := cp.Run("nft", args...); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	nft("add", "table", "inet", table)
	t.Cleanup(func() { _, _ = cp.Run("nft", "delete", "table", "inet", table) })
	nft("add", "chain", "inet", table, "out", "{ type filter hook output priority 0 ; }")
	nft("add", "rule", "inet", table, "out", "udp", "dport", fmt.Sprint(contract.DefaultProbePort), "counter", "drop")
	at := time.Now()

	degraded := func(reason string) func(context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			gw, err := l.GatewayStatus(ctx)
			if err != nil {
				return false, err
			}
			c := meta.FindStatusCondition(gw.Status.Conditions, egressv1.ConditionDegraded)
			return c != nil && c.Reason == reason, nil
		}
	}
	waitCond := func(what string, f func(context.Context) (bool, error)) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < time.Minute {
			if ok, err := f(ctx); err == nil && ok {
				return time.Since(start)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: not within a minute\ncontroller log:\n%s", what, Tail(l.LogPath(""), 20))
		return 0
	}
	took := waitCond("Degraded=ControllerProbesFailing", degraded(egressv1.ReasonControllerProbesFailing))
	t.Logf("Degraded=ControllerProbesFailing %s after the rule", took.Round(10*time.Millisecond))
	// Well past the agents' Lease timeout: the Leases must keep being renewed.
	time.Sleep(12 * time.Second)
	during, err := l.View(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := degraded(egressv1.ReasonControllerProbesFailing)(ctx); !ok {
		t.Errorf("Degraded no longer ControllerProbesFailing 12 s into the cut")
	}
	if !l.AllActive(during) || !slices.Equal(before.EgressIPs, during.EgressIPs) || fmt.Sprint(before.Holders) != fmt.Sprint(during.Holders) {
		t.Errorf("during the cut: states %v holders %v, before: states %v holders %v", during.States, during.Holders, before.States, before.Holders)
	}
	out, _ := cp.Run("nft", "list", "chain", "inet", table, "out")
	t.Logf("rule in the control-plane namespace: %s", out)

	nft("delete", "table", "inet", table)
	restored := time.Now()
	took = waitCond("Degraded cleared", degraded(egressv1.ReasonAllGatewaysHealthy))
	t.Logf("Degraded cleared %s after the rule was removed", took.Round(10*time.Millisecond))
	time.Sleep(2 * time.Second)
	r := Analyze(mon.Samples(), Event{Name: "controller probes blocked", At: at, RestoredAt: restored, End: time.Now()})
	t.Logf("controller probes blocked for %s: %d requests, %d failed, outage %s, longest gap %s",
		restored.Sub(at).Round(100*time.Millisecond), r.Requests, r.Failed, r.Outage, r.LongestGap)
	if r.Failed != 0 {
		var fails []string
		for _, s := range mon.Since(at) {
			if !s.OK() {
				fails = append(fails, fmt.Sprintf("%s %s +%s: %s", s.Pod, s.Sent.Format("15:04:05.000"), s.Sent.Sub(at).Round(time.Millisecond), s.Err))
			}
		}
		t.Errorf("%d of %d requests failed while only the controller's probes were blocked (rule removed at +%s):\n%s",
			r.Failed, r.Requests, restored.Sub(at).Round(time.Millisecond), strings.Join(fails, "\n"))
	}
	if seen, want := sources(mon.Since(at)), egressSources(before); !slices.Equal(seen, want) {
		t.Errorf("during the cut the echo server saw %v, want the egress IPs %v", seen, want)
	}
}
