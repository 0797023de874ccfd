package dataplane_test

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
	"github.com/egressd/egressd/test/netns"
	"github.com/egressd/egressd/test/privileged"
)

// TestProbeAnsweredByDatapath probes a gateway node whose agent is not
// running (no process holds its probe port; only its applied datapath is
// left) from another node: the tc reflector keeps it up, carries the
// draining bit, and the node goes down once its datapath is removed. It then
// compares the round trip through the reflector with the userspace
// Responder's.
func TestProbeAnsweredByDatapath(t *testing.T) {
	privileged.Require(t, "network namespaces and eBPF")
	topo := netns.New(t, netns.Spec{Nodes: []netns.NodeSpec{{Name: "worker1"}, {Name: "gw1"}}})
	bpffs := t.TempDir()
	if err := unix.Mount("bpf", bpffs, "bpf", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(bpffs, unix.MNT_DETACH) })
	worker, gw := topo.Node("worker1"), topo.Node("gw1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const port = contract.DefaultProbePort
	// apply applies gw1's datapath from a fresh Dataplane and closes it, as
	// an agent that exits (or is killed) right after its Apply.
	apply := func(t *testing.T, cfg dataplane.Config, s dataplane.State) {
		t.Helper()
		cfg.NetNS, cfg.PinRoot = gw.Path(), filepath.Join(bpffs, "gw1")
		dp := dataplane.New(cfg)
		if err := dp.Apply(ctx, s); err != nil {
			t.Fatalf("applying gw1: %v", err)
		}
		if err := dp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(t *testing.T, cfg dataplane.Config) {
		t.Helper()
		cfg.NetNS, cfg.PinRoot = gw.Path(), filepath.Join(bpffs, "gw1")
		if err := dataplane.New(cfg).Remove(ctx); err != nil {
			t.Fatalf("removing gw1: %v", err)
		}
	}
	t.Cleanup(func() { remove(t, dataplane.Config{}) })

	changes := make(chan probe.Status, 16)
	conn, err := worker.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	const interval, threshold = 20 * time.Millisecond, 3
	target := netip.AddrPortFrom(gw.IP, port)
	pr := probe.NewProber(conn, probe.Options{StartDown: true, OnChange: func(s probe.Status) { changes <- s }})
	pr.SetTargets([]probe.Target{{Addr: target, Interval: interval, FailureThreshold: threshold}})
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- pr.Run(pctx) }()
	defer func() {
		pcancel()
		if err := <-done; err != nil {
			t.Errorf("Prober.Run: %v", err)
		}
	}()
	wait := func(t *testing.T, what string, ok func(probe.Status) bool) probe.Status {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case s := <-changes:
				if ok(s) {
					return s
				}
			case <-timeout:
				s, _ := pr.Status(target)
				t.Fatalf("gw1 not %s within 5 s: %+v", what, s)
			}
		}
	}

	base := dataplane.State{NodeIP: gw.IP, ProbePort: port}
	for _, mode := range []struct {
		name string
		cfg  dataplane.Config
	}{{"tcx", dataplane.Config{}}, {"clsact", dataplane.Config{Clsact: true}}} {
		t.Run(mode.name, func(t *testing.T) {
			apply(t, mode.cfg, base)
			s := wait(t, "up", func(s probe.Status) bool { return s.Up })
			if s.Draining {
				t.Errorf("draining bit set: %+v", s)
			}
			t.Logf("up with no agent running, RTT %v", s.RTT)

			d := base
			d.Draining = true
			apply(t, mode.cfg, d)
			wait(t, "draining", func(s probe.Status) bool { return s.Up && s.Draining })
			apply(t, mode.cfg, base)
			wait(t, "no longer draining", func(s probe.Status) bool { return s.Up && !s.Draining })

			removed := time.Now()
			remove(t, mode.cfg)
			s = wait(t, "down", func(s probe.Status) bool { return !s.Up })
			t.Logf("datapath removed → down after %v (interval %v, threshold %d)", s.Since.Sub(removed), interval, threshold)
		})
	}

	t.Run("probe port 0 turns the reflector off", func(t *testing.T) {
		apply(t, dataplane.Config{}, base)
		wait(t, "up", func(s probe.Status) bool { return s.Up })
		off := base
		off.ProbePort = 0
		apply(t, dataplane.Config{}, off)
		wait(t, "down", func(s probe.Status) bool { return !s.Up })
	})

	t.Run("round trip: reflector vs userspace responder", func(t *testing.T) {
		apply(t, dataplane.Config{}, base)
		wait(t, "up", func(s probe.Status) bool { return s.Up })
		// The userspace Responder on another port: the reflector passes
		// it on to the stack.
		rconn, err := gw.ListenPacket("udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		r := probe.NewResponder(rconn)
		rctx, rcancel := context.WithCancel(ctx)
		rdone := make(chan error, 1)
		go func() { rdone <- r.Run(rctx) }()
		defer func() {
			rcancel()
			if err := <-rdone; err != nil {
				t.Errorf("Responder.Run: %v", err)
			}
		}()
		user := netip.AddrPortFrom(gw.IP, r.Addr().(*net.UDPAddr).AddrPort().Port())
		c, err := worker.ListenPacket("udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		const n = 500
		rtt := func(to netip.AddrPort) (p50, p99 time.Duration) {
			var ds []time.Duration
			buf := make([]byte, 64)
			for i := range n {
				req := probe.Packet{Seq: uint64(i) + 1}.Marshal()
				start := time.Now()
				if _, err := c.WriteTo(req[:], net.UDPAddrFromAddrPort(to)); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				m, _, err := c.ReadFrom(buf)
				if err != nil {
					t.Fatalf("probe %d to %s: %v", i, to, err)
				}
				ds = append(ds, time.Since(start))
				rep, err := probe.Parse(buf[:m])
				if err != nil || !rep.Reply() || rep.Seq != uint64(i)+1 {
					t.Fatalf("reply %+v, %v", rep, err)
				}
			}
			slices.Sort(ds)
			return ds[n/2], ds[n*99/100]
		}
		rtt(target) // warm up neighbours and caches
		k50, k99 := rtt(target)
		u50, u99 := rtt(user)
		t.Logf("probe round trip over %d probes: tc reflector p50 %v p99 %v; userspace responder p50 %v p99 %v", n, k50, k99, u50, u99)
	})
}
