package lab

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/contract"
)

// TestAgentRestartKeepsForwarding kills the agent of a gateway that holds an egress IP, for
// less than its Lease lasts (ShortDown), while the monitors send new connections through it,
// and checks what the datapath must keep doing while the agent is gone and while the
// restarted one starts: the gateway drops no tunnelled frame as foreign (foreign_node,
// foreign_source: a restarted agent keeps the sources its datapath admits until it has read
// the cluster), it stays Active in every reading of the status, no long-lived connection
// breaks, and its egress IP does not move. Before, the restarted agent's first Apply emptied the sources map, and every new
// connection through the gateway was dropped until its cluster view synced.
func TestAgentRestartKeepsForwarding(t *testing.T) {
	l, ctx, before, mons := monitoredLab(t, Config{Zones: 2})
	// Long-lived connections through every gateway: a steady stream of segments through the
	// crashed one, besides the monitors' new connections.
	conns := l.NewConns(ctx, ConnOptions{})
	t.Cleanup(conns.Close)
	if err := conns.Open(ctx, egressSources(before)); err != nil {
		t.Fatal(err)
	}
	vctx, vcancel := context.WithCancel(ctx)
	defer vcancel()
	views := l.RecordViews(vctx, 50*time.Millisecond)
	name := holderIn(t, before, l, zoneName(0))
	var ips []string // as the echo server sees them: the public IP where there is one
	for _, ip := range before.HeldBy(name) {
		ips = append(ips, cmpOr(before.Public[ip], ip))
	}
	foreign := func() uint64 {
		t.Helper()
		r, err := bpf.OpenPinned(filepath.Join(l.bpffs, name, "egressd"))
		if err != nil {
			t.Fatalf("reading %s's datapath: %v", name, err)
		}
		defer r.Close()
		stats, err := r.Stats()
		if err != nil {
			t.Fatalf("reading %s's counters: %v", name, err)
		}
		var n uint64
		for _, s := range stats {
			n += s.Drops[bpf.DropForeignNode] + s.Drops[bpf.DropForeignSource]
		}
		return n
	}
	time.Sleep(2 * time.Second)
	if got := throughAfter(mons.Samples(), ips, time.Time{}); got == 0 {
		t.Fatalf("no monitor request left through %s's %v before the crash", name, ips)
	}
	f0 := foreign()
	moves0 := len(l.Moves())

	inc, err := l.CrashAgent(ctx, l.ShortDown(), name)
	if err != nil {
		t.Fatal(err)
	}
	// The restarted agent is up (its Lease renewed), and new connections went through the
	// gateway again: with the bug, only once its cluster view had synced.
	key := client.ObjectKey{Namespace: contract.DefaultNamespace, Name: contract.AgentLeaseName(name)}
	if _, err := l.WaitFor(ctx, time.Minute, name+"'s Lease renewed by the restarted agent", func(GatewayView) bool {
		var lease coordinationv1.Lease
		return l.API.Client.Get(ctx, key, &lease) == nil && lease.Spec.RenewTime != nil && lease.Spec.RenewTime.After(inc.RestoredAt)
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for throughAfter(mons.Samples(), ips, inc.RestoredAt) < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 20 monitor requests through %v succeeded in the minute after %s's agent restarted", ips, name)
		}
		_ = sleep(ctx, 100*time.Millisecond)
	}
	vcancel()

	if n := foreign() - f0; n != 0 {
		t.Errorf("%s dropped %d tunnelled frames as foreign (foreign_node, foreign_source) across its agent's restart", name, n)
	}
	for _, v := range views.Views() {
		if v.At.Before(inc.At) {
			continue
		}
		if s := v.View.States[name]; s != string(egressv1.GatewayActive) {
			t.Errorf("%s was %s at %s (%s after the crash), want Active throughout: its Lease never expired and its datapath answered",
				name, s, v.At.Format("15:04:05.000"), v.At.Sub(inc.At).Round(time.Millisecond))
			break
		}
	}
	for _, c := range conns.Records() {
		if c.Err != "" {
			t.Errorf("long-lived connection %d from %s (%s) broke across %s's agent restart: %s", c.ID, c.Pod, c.Local, name, c.Err)
		}
	}
	if moves := l.Moves()[moves0:]; len(moves) != 0 {
		t.Errorf("egress IPs moved across an agent restart: %+v", moves)
	}
	failed := 0
	for _, s := range mons.Samples() {
		if s.Err != "" && !s.Sent.Before(inc.At) {
			failed++
		}
	}
	t.Logf("agent of %s down %s: %d monitor requests failed from the crash to the end", name, inc.RestoredAt.Sub(inc.At).Round(time.Millisecond), failed)
}

// throughAfter counts the successful samples sent after from that left with one of ips.
func throughAfter(samples []Sample, ips []string, from time.Time) int {
	n := 0
	for _, s := range samples {
		if s.Err != "" || s.Sent.Before(from) {
			continue
		}
		for _, ip := range ips {
			if s.Source == ip {
				n++
			}
		}
	}
	return n
}
