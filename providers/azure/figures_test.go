package azure_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	azuresim "github.com/egressd/egressd/test/cloudsim/azure"
)

func summary(c map[string]int) string {
	keys := make([]string, 0, len(c))
	for k, v := range c {
		if v > 0 && k != azuresim.MIMDS {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, c[k])
	}
	return strings.Join(parts, " ")
}

// TestFiguresCallsPerOperation prints the ARM calls per provider operation (run with -v to
// quote them) and the move window with 50 ms operations. The two contended ensures have
// another writer change the NIC between the provider's read and its PUT: at once (412, the
// change's operation done) and with its operation still running (409
// AnotherOperationInProgress). Long-running operations are polled
// every 10 ms here; each poll is one operations.get, so with real ARM latencies (seconds per
// NIC update) and the 1 s default poll frequency the poll count grows accordingly.
func TestFiguresCallsPerOperation(t *testing.T) {
	e := newEnv(t, 3)
	e.sim.SetOperationDelay(50 * time.Millisecond)
	e.sim.SetLRORetryAfter("") // pace polls by the provider's frequency
	ctx := context.Background()
	step := func(name string, f func() error) {
		t.Helper()
		e.sim.ResetCalls()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c := e.sim.CallCounts()
		t.Logf("%-28s total=%-2d mutating=%d  %s", name, total(c), mutating(c), summary(c))
	}
	// Warm the VM → NIC cache as a running controller has it.
	for _, n := range []providers.NodeRef{nodeA, nodeB} {
		if _, err := e.p.DiscoverNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	var priv, pub *providers.Assignment
	step("ensure", func() (err error) {
		priv, err = e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.20.1")})
		return err
	})
	step("ensure+public", func() (err error) {
		pub, err = e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: ip("10.240.20.2"), Public: true})
		return err
	})
	step("ensure, NIC changed (412)", func() error {
		e.sim.BeforeNext(azuresim.MNICPut, func() {
			e.sim.SetOperationDelay(0) // the other writer's operation is done when the provider PUTs
			_ = e.sim.AddBackendPool(e.sim.NICID(rg, "vm-a-nic"), pool2)
			e.sim.SetOperationDelay(50 * time.Millisecond)
		})
		_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.20.3")})
		return err
	})
	step("ensure, NIC busy (409)", func() error {
		e.sim.BeforeNext(azuresim.MNICPut, func() { _ = e.sim.AddBackendPool(e.sim.NICID(rg, "vm-a-nic"), pool2+"x") })
		_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.20.4")})
		return err
	})
	step("resync ensure (held)", func() error {
		_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.240.20.1")})
		return err
	})
	step("resync ensure+public (held)", func() error {
		_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: ip("10.240.20.2"), Public: true})
		return err
	})
	step("resync ListOwned", func() error { _, err := e.p.ListOwned(ctx, owner.Cluster); return err })
	step("move", func() (err error) {
		priv, err = e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *priv, To: nodeB})
		return err
	})
	w1 := e.p.LastMoveWindow()
	step("move+public", func() (err error) {
		pub, err = e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *pub, To: nodeA})
		return err
	})
	w2 := e.p.LastMoveWindow()
	step("release", func() error { return e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *priv}) })
	step("release+public", func() error { return e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *pub}) })
	t.Logf("move window, 50 ms operations: private %v (simulator) / %v (provider); with public IP %v (simulator) / %v (provider; the public IP moves with the ipConfiguration)",
		window(e.sim.Events(), "10.240.20.1").Round(time.Millisecond), w1.Window.Round(time.Millisecond),
		window(e.sim.Events(), "10.240.20.2").Round(time.Millisecond), w2.Window.Round(time.Millisecond))
}
