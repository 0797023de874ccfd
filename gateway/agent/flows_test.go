package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
)

// fakeObserver emits the flows sent on its channel while observed, and counts observers.
type fakeObserver struct {
	flows   chan dataplane.Flow
	running atomic.Int32
	calls   atomic.Int32
	sample  atomic.Uint32
}

func (f *fakeObserver) ObserveFlows(ctx context.Context, opts dataplane.ObserveOptions, fn func(dataplane.Flow)) error {
	f.calls.Add(1)
	f.running.Add(1)
	defer f.running.Add(-1)
	f.sample.Store(opts.Sample)
	for {
		select {
		case <-ctx.Done():
			return nil
		case fl := <-f.flows:
			fn(fl)
		}
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestFlowHub: the datapath is observed only while a client streams, with the client's
// sampling; the client's filter (drops only) applies and records carry the names.
func TestFlowHub(t *testing.T) {
	obs := &fakeObserver{flows: make(chan dataplane.Flow)}
	hub := NewFlowHub()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	record := func(f dataplane.Flow) contract.FlowRecord {
		return f.Record("worker1", func(uint32) string { return "egress" }, func(uint32) string { return "gw-a1" })
	}
	go hub.run(ctx, obs, record)
	srv := httptest.NewServer(hub)
	defer srv.Close()

	time.Sleep(50 * time.Millisecond)
	if n := obs.calls.Load(); n != 0 {
		t.Fatalf("observed %d times with nobody watching", n)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+contract.FlowsPath+"?drops=true&sample=10", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the observer to start", func() bool { return obs.running.Load() == 1 })
	if s := obs.sample.Load(); s != 10 {
		t.Errorf("observing with sample %d, want the client's 10", s)
	}
	pod := netip.MustParseAddr("10.244.1.5")
	steered := dataplane.Flow{Pod: "team-a/web-1", FlowEvent: bpf.FlowEvent{Src: pod, Dst: netip.MustParseAddr("203.0.113.10"),
		Sport: 40000, Dport: 443, Proto: 6, Point: bpf.ObservePod, Group: 1, Gateway: 7}}
	dropped := steered
	dropped.Verdict, dropped.Reason, dropped.Gateway = bpf.VerdictDropped, bpf.DropNoGateway, 0
	obs.flows <- steered
	obs.flows <- dropped
	line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var r contract.FlowRecord
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	if r.Verdict != contract.FlowDropped || r.Reason != "no_gateway" || r.Pod != "team-a/web-1" || r.Group != "egress" ||
		r.Node != "worker1" || r.Destination.String() != "203.0.113.10:443" || r.Protocol != "tcp" {
		t.Errorf("record %+v, want the drop only", r)
	}
	resp.Body.Close()
	waitFor(t, "the observer to stop once the client left", func() bool { return obs.running.Load() == 0 })
}

func TestFlowFilter(t *testing.T) {
	rec := contract.FlowRecord{Pod: "team-a/web-1", Point: "pod", Verdict: contract.FlowSteered,
		Source: netip.MustParseAddrPort("10.244.1.5:40000")}
	reply := contract.FlowRecord{Pod: "team-a/web-1", Point: "deliver", Verdict: contract.FlowDelivered,
		Destination: netip.MustParseAddrPort("10.244.1.5:40000")}
	for _, tc := range []struct {
		name string
		f    flowFilter
		r    contract.FlowRecord
		want bool
	}{
		{"none", flowFilter{}, rec, true},
		{"pod", flowFilter{pod: "team-a/web-1"}, rec, true},
		{"other pod", flowFilter{pod: "team-a/web-2"}, rec, false},
		{"pod ip", flowFilter{podIP: netip.MustParseAddr("10.244.1.5")}, rec, true},
		{"pod ip of a reply", flowFilter{podIP: netip.MustParseAddr("10.244.1.5")}, reply, true},
		{"other ip", flowFilter{podIP: netip.MustParseAddr("10.244.1.6")}, rec, false},
		{"namespace", flowFilter{namespace: "team-a"}, rec, true},
		{"namespace prefix only", flowFilter{namespace: "team"}, rec, false},
		{"drops", flowFilter{drops: true}, rec, false},
	} {
		if got := tc.f.match(tc.r); got != tc.want {
			t.Errorf("%s: match %v, want %v", tc.name, got, tc.want)
		}
	}
}
