package dataplane

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/contract"
)

// observed collects what ObserveFlows reports on one node.
type observed struct {
	mu    sync.Mutex
	flows []Flow
}

func (o *observed) find(match func(Flow) bool) (Flow, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, f := range o.flows {
		if match(f) {
			return f, true
		}
	}
	return Flow{}, false
}

// TestObserveFlows watches worker1 and gw1 while pod a sends a datagram through gw1 and
// worker1 tunnels one with the source of pod b, which no policy selects: worker1 reports
// pod a's packet steered to gw1 with gw1's egress IP and the reply delivered; gw1 reports it
// admitted with the egress IP and port its conntrack SNATed it to, and b's frame dropped,
// foreign_source. Once the observers stop, the datapath writes no more events.
func TestObserveFlows(t *testing.T) {
	skipUnlessRoot(t)
	c := newCluster(t)
	a, b := c.topo.Pod("a"), c.topo.Pod("b")
	w1, gw1 := c.topo.Node("worker1"), c.topo.Node("gw1")
	eg := c.eg["gw1"][0]
	names := func(id uint32) string { return "id-" + strconv.Itoa(int(id)) }
	group := func(id uint32) string { return "group-" + strconv.Itoa(int(id)) }

	ctx, cancel := context.WithCancel(ctxT(t))
	var wg sync.WaitGroup
	obs := map[string]*observed{"worker1": {}, "gw1": {}}
	for node, o := range obs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.dps[node].ObserveFlows(ctx, ObserveOptions{}, func(f Flow) {
				o.mu.Lock()
				o.flows = append(o.flows, f)
				o.mu.Unlock()
			})
			if err != nil {
				t.Errorf("observing %s: %v", node, err)
			}
		}()
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
	}
	defer stop()

	conn, err := a.ListenPacket("udp4", net.JoinHostPort(a.IP.String(), "40200"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echo := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dstG1, 7007))
	isA := func(f Flow) bool { return f.Src == a.IP && f.Sport == 40200 && f.Dst == dstG1 }
	isB := func(f Flow) bool { return f.Src == b.IP && f.Sport == 40201 }
	forged := vxlanFrame(1, b.IP, dstG1, 40201, 7007)
	tunnel, err := w1.DialContext(ctxT(t), "udp", net.JoinHostPort(gw1.IP.String(), strconv.Itoa(contract.DefaultTunnelPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer tunnel.Close()
	// The observers turn events on as they start: send until both nodes saw the packets.
	buf := make([]byte, 128)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := conn.WriteTo([]byte("hi"), echo); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := conn.ReadFrom(buf); err != nil {
			t.Fatalf("pod a's datagram through gw1: %v", err)
		}
		if _, err := tunnel.Write(forged); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		_, ok1 := obs["worker1"].find(isA)
		_, ok2 := obs["gw1"].find(func(f Flow) bool { return isA(f) && f.EgressPort != 0 })
		_, ok3 := obs["gw1"].find(isB)
		if ok1 && ok2 && ok3 || time.Now().After(deadline) {
			break
		}
	}

	report := func(node string, f Flow) {
		t.Logf("%s", f.Record(node, group, names).Line())
	}
	if f, ok := obs["worker1"].find(func(f Flow) bool { return isA(f) && f.Point == bpf.ObservePod }); !ok {
		t.Error("worker1 reported no steered packet of pod a")
	} else {
		report("worker1", f)
		if f.Verdict != bpf.VerdictForwarded || f.Pod != "a" || f.Gateway != c.gwIDs["gw1"] || f.Group != 1 ||
			f.Underlay != gw1.IP || f.Egress != eg || f.Proto != 17 || f.Dport != 7007 || f.At.IsZero() {
			t.Errorf("worker1, pod a: %+v", f)
		}
		if r := f.Record("worker1", group, names); r.Verdict != contract.FlowSteered || r.Gateway != "id-1" || r.Pod != "a" {
			t.Errorf("worker1 record: %+v", r)
		}
	}
	if f, ok := obs["worker1"].find(func(f Flow) bool { return f.Point == bpf.ObserveDeliver && f.Dst == a.IP && f.Dport == 40200 }); !ok {
		t.Error("worker1 reported no reply delivered to pod a")
	} else {
		report("worker1", f)
		if f.Verdict != bpf.VerdictForwarded || f.Pod != "a" || f.Src != dstG1 || f.Underlay != gw1.IP {
			t.Errorf("worker1, reply to pod a: %+v", f)
		}
	}
	if f, ok := obs["gw1"].find(func(f Flow) bool { return isA(f) && f.EgressPort != 0 }); !ok {
		f, _ = obs["gw1"].find(isA)
		t.Errorf("gw1 reported no admitted packet of pod a with its egress port: %+v", f)
	} else {
		report("gw1", f)
		if f.Point != bpf.ObserveTunnelIngress || f.Verdict != bpf.VerdictForwarded || f.Underlay != w1.IP ||
			f.Egress != eg || f.Gateway != bpf.GatewaySelf || f.Group != 1 {
			t.Errorf("gw1, pod a: %+v", f)
		}
		if r := f.Record("gw1", group, names); r.Verdict != contract.FlowAdmitted || r.Gateway != "gw1" {
			t.Errorf("gw1 record: %+v", r)
		}
	}
	if f, ok := obs["gw1"].find(isB); !ok {
		t.Error("gw1 reported no drop of the frame with pod b's source")
	} else {
		report("gw1", f)
		if f.Verdict != bpf.VerdictDropped || f.ReasonName() != "foreign_source" || f.Underlay != w1.IP || f.Group != 1 {
			t.Errorf("gw1, forged frame: %+v (reason %q)", f, f.ReasonName())
		}
		if r := f.Record("gw1", group, names); r.Verdict != contract.FlowDropped || r.Reason != "foreign_source" {
			t.Errorf("gw1 drop record: %+v", r)
		}
	}

	stop()
	r, err := c.dps["gw1"].dp.OpenFlowReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := tunnel.Write(forged); err != nil {
		t.Fatal(err)
	}
	r.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if e, err := r.Read(); err == nil {
		t.Errorf("gw1 wrote a flow event after the observers stopped: %+v", e)
	}
}
