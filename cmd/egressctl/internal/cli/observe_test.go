package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/gateway/contract"
)

// TestObserveCommand streams from a stand-in agent with --agent: the filter reaches the agent
// as query parameters and each record is printed as its line.
func TestObserveCommand(t *testing.T) {
	var query string
	recs := []contract.FlowRecord{{
		Time: time.Date(2026, 12, 6, 7, 53, 33, 27e6, time.UTC), Node: "gw1", Point: "tunnel-ingress",
		Source: netip.MustParseAddrPort("10.244.0.11:40201"), Destination: netip.MustParseAddrPort("203.0.113.10:7007"),
		Protocol: "udp", Group: "egress", Gateway: "gw1", FromNode: netip.MustParseAddr("10.0.0.10"),
		Verdict: contract.FlowDropped, Reason: "foreign_source",
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != contract.FlowsPath {
			http.NotFound(w, r)
			return
		}
		query = r.URL.RawQuery
		for _, rec := range recs {
			_ = json.NewEncoder(w).Encode(rec)
		}
	}))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), []string{"observe", "--agent", srv.URL, "--pod", "10.244.0.11", "--drops"}, nil, &stdout, &stderr)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if query != "drops=true&pod=10.244.0.11" {
		t.Errorf("query %q", query)
	}
	want := "07:53:33.027 gw1 tunnel-ingress 10.244.0.11:40201 -> 203.0.113.10:7007 udp group=egress gateway=gw1 underlay=10.0.0.10 DROPPED reason=foreign_source\n"
	if got := stdout.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
	if code := Run(context.Background(), []string{"observe", "--node", "a", "--agent", srv.URL}, nil, &stdout, &stderr); code != ExitUsage {
		t.Errorf("--node with --agent: exit %d, want usage", code)
	}
	if !strings.Contains(usage, "egressctl observe") {
		t.Error("usage does not list observe")
	}
}
