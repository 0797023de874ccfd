package gcp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/compute/metadata"
	"google.golang.org/api/googleapi"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/gcp"
	gcpsim "github.com/egressd/egressd/test/cloudsim/gcp"
)

const proj = "egress-proj"

var owner = providers.Owner{Cluster: "prod-1", Gateway: "gw"}

type env struct {
	sim *gcpsim.Sim
	srv *httptest.Server
	p   *gcp.Provider
}

func node(name, zone string) providers.NodeRef {
	return providers.NodeRef{Name: name, ProviderID: "gce://" + proj + "/" + zone + "/" + name, Zone: zone}
}

var (
	nodeA = node("node-a", "us-central1-a")
	nodeB = node("node-b", "us-central1-a")
	nodeC = node("node-c", "us-central1-b")
	nodeP = node("node-pub", "us-central1-a") // has an ephemeral external IP
	nodeS = node("node-small", "us-central1-a")
)

func newEnv(t *testing.T, budget time.Duration) *env {
	t.Helper()
	sim := gcpsim.New()
	err := sim.Seed(gcpsim.ProjectSeed{
		ID:      proj,
		Subnets: []gcpsim.SubnetSeed{{Name: "nodes", Region: "us-central1", CIDR: "10.0.0.0/20", Secondary: map[string]string{"pods": "10.4.0.0/14"}}},
		Instances: []gcpsim.InstanceSeed{
			{Name: "node-a", Zone: "us-central1-a", NICs: []gcpsim.NICSeed{{Subnet: "nodes", NetworkIP: "10.0.0.2"}}},
			{Name: "node-b", Zone: "us-central1-a", NICs: []gcpsim.NICSeed{{Subnet: "nodes", NetworkIP: "10.0.0.3"}}},
			{Name: "node-c", Zone: "us-central1-b", NICs: []gcpsim.NICSeed{{Subnet: "nodes", NetworkIP: "10.0.0.4"}}},
			{Name: "node-pub", Zone: "us-central1-a", NICs: []gcpsim.NICSeed{{Subnet: "nodes", NetworkIP: "10.0.0.5", ExternalIP: "192.0.2.10"}}},
			{Name: "node-small", Zone: "us-central1-a", MaxAliasRanges: 2, NICs: []gcpsim.NICSeed{{Subnet: "nodes", NetworkIP: "10.0.0.6"}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	sim.SetMetadata(gcpsim.MetadataSeed{Project: proj, Number: 4242, Zone: "us-central1-a", Instance: "controller"})
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	ctx := context.Background()
	p, err := gcp.New(ctx, gcp.Type, gcp.Config{ClusterName: owner.Cluster, Project: proj, Endpoint: srv.URL, WithoutAuthentication: true,
		RetryBudget: providers.Duration(budget)})
	if err != nil {
		t.Fatal(err)
	}
	return &env{sim: sim, srv: srv, p: p}
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func holder(name, zone string) string { return proj + "/" + zone + "/" + name }

func mutating(c map[string]int) int {
	return c[gcpsim.MUpdateNetworkIface] + c[gcpsim.MAddAccessConfig] + c[gcpsim.MDeleteAccessConfig] + c[gcpsim.MAddressesInsert] + c[gcpsim.MAddressesDelete] +
		c[gcpsim.MAddressesSetLabels]
}

func total(c map[string]int) int {
	n := 0
	for k, v := range c {
		if k != gcpsim.MMetadata {
			n += v
		}
	}
	return n
}

func TestEnsureIdempotent(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	req := providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.1.10")}
	a1, err := e.p.EnsureIP(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	e.sim.ResetCalls()
	a2, err := e.p.EnsureIP(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if *a1 != *a2 {
		t.Fatalf("assignments differ: %+v vs %+v", a1, a2)
	}
	if c := e.sim.CallCounts(); mutating(c) != 0 || total(c) != 1 {
		t.Fatalf("second ensure made calls %v, want one instances.get", c)
	}
	if got := e.sim.AliasCount("10.0.1.10"); got != 1 {
		t.Fatalf("alias count %d", got)
	}
	if e.sim.Holder("10.0.1.10") != holder("node-a", "us-central1-a") {
		t.Fatalf("holder %q", e.sim.Holder("10.0.1.10"))
	}
	if a1.InterfaceID != "nic0" || a1.Attachment != "nic0:10.0.1.10/32" {
		t.Fatalf("assignment %+v", a1)
	}
}

func TestEnsureHeldElsewhereIsConflict(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.1.11")}); err != nil {
		t.Fatal(err)
	}
	_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: ip("10.0.1.11")})
	if !providers.IsConflict(err) {
		t.Fatalf("want Conflict, got %v", err)
	}
}

func TestCapacityExhausted(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	// The simulator's per-NIC limit (2 on node-small) is below the provider's (10): GCE's
	// 400 "invalid" is passed on with its message, not classified from the message's text
	// (its reason is shared by every refused request), and the NIC is left as it was.
	for i, s := range []string{"10.0.2.1", "10.0.2.2", "10.0.2.3"} {
		_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeS, IP: ip(s)})
		if i < 2 && err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			var ge *googleapi.Error
			if err == nil || providers.KindOf(err) != 0 || !errors.As(err, &ge) || ge.Code != 400 {
				t.Fatalf("third alias past the cloud's limit: want GCE's 400 unclassified, got %v", err)
			}
			if h := e.sim.Holder("10.0.2.3"); h != "" || e.sim.Holder("10.0.2.1") == "" || e.sim.Holder("10.0.2.2") == "" {
				t.Fatalf("after the refused alias: 10.0.2.3 held by %q, the first two by %q and %q; want none, node-small's",
					h, e.sim.Holder("10.0.2.1"), e.sim.Holder("10.0.2.2"))
			}
		}
	}
	// The provider's own limit.
	small, err := gcp.New(ctx, gcp.Type, gcp.Config{ClusterName: owner.Cluster, Project: proj, Endpoint: e.srv.URL, WithoutAuthentication: true,
		MaxAliasRangesPerInterface: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := small.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: ip("10.0.2.10")}); err != nil {
		t.Fatal(err)
	}
	if _, err := small.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: ip("10.0.2.11")}); !providers.IsCapacityExhausted(err) {
		t.Fatalf("want CapacityExhausted, got %v", err)
	}
	// Static external address quota (a failed region operation with QUOTA_EXCEEDED).
	e.sim.SetExternalAddressQuota(0)
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.2.20"), Public: true}); !providers.IsCapacityExhausted(err) {
		t.Fatalf("want CapacityExhausted for the address quota, got %v", err)
	}
	// One access config per NIC: a node with an ephemeral external IP cannot take one.
	e.sim.SetExternalAddressQuota(100)
	_, err = e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeP, IP: ip("10.0.2.30"), Public: true})
	if !providers.IsCapacityExhausted(err) || !strings.Contains(err.Error(), "AccessConfigInUse") {
		t.Fatalf("want CapacityExhausted AccessConfigInUse, got %v", err)
	}
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.2.40"), Public: true}); err != nil {
		t.Fatal(err)
	}
	_, err = e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.2.41"), Public: true})
	if !providers.IsCapacityExhausted(err) {
		t.Fatalf("second public IP on one NIC: want CapacityExhausted, got %v", err)
	}
}

func TestMoveKeepsIPAndPublicIP(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	e.sim.SetOperationDelay(20 * time.Millisecond)
	ctx := context.Background()
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.3.1"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if !a.PublicIP.IsValid() {
		t.Fatalf("no public IP: %+v", a)
	}
	m, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *a, To: nodeB})
	if err != nil {
		t.Fatal(err)
	}
	if m.IP != a.IP || m.PublicIP != a.PublicIP || m.Node != "node-b" {
		t.Fatalf("moved %+v from %+v", m, a)
	}
	st := e.sim.Snapshot()
	if st.Aliases["10.0.3.1"] != holder("node-b", "us-central1-a") || st.External[a.PublicIP.String()] != holder("node-b", "us-central1-a") {
		t.Fatalf("state after move: %+v", st)
	}
	if e.sim.AddressCount("EXTERNAL") != 1 || e.sim.AliasCount("10.0.3.1") != 1 {
		t.Fatalf("duplicate resources: %+v", st)
	}
	// Moving again to the holder mutates nothing.
	e.sim.ResetCalls()
	if _, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *m, To: nodeB}); err != nil {
		t.Fatal(err)
	}
	if c := e.sim.CallCounts(); mutating(c) != 0 {
		t.Fatalf("idempotent move mutated: %v", c)
	}
	// Unassigned address: a move assigns it.
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.3.2")}); err != nil {
		t.Fatal(err)
	}
	priv, pub := windows(e.sim.Events(), "10.0.3.1", a.PublicIP.String())
	t.Logf("move window (simulator, 20ms operations): private %v, public %v; provider-observed %+v", priv, pub, e.p.LastMoveWindow())
	if priv <= 0 || priv > time.Second {
		t.Fatalf("implausible private window %v", priv)
	}
}

func TestMoveAcrossZonesInRegion(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.3.20")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *a, To: nodeC}); err != nil {
		t.Fatal(err)
	}
	if h := e.sim.Holder("10.0.3.20"); h != holder("node-c", "us-central1-b") {
		t.Fatalf("holder %s", h)
	}
	// Not this cluster's address: NotFound.
	_, err = e.p.MoveIP(ctx, providers.MoveRequest{Owner: providers.Owner{Cluster: "other"}, Current: *a, To: nodeB})
	if !providers.IsNotFound(err) {
		t.Fatalf("want NotFound, got %v", err)
	}
}

// windows returns how long ip (and natIP) were on no instance between their last removal and
// the following addition.
func windows(ev []gcpsim.Event, ip, natIP string) (priv, pub time.Duration) {
	var rm, prm time.Time
	for _, e := range ev {
		switch {
		case e.IP == ip && e.Kind == "alias-":
			rm = e.At
		case e.IP == ip && e.Kind == "alias+" && !rm.IsZero():
			priv = e.At.Sub(rm)
		case e.IP == natIP && e.Kind == "nat-":
			prm = e.At
		case e.IP == natIP && e.Kind == "nat+" && !prm.IsZero():
			pub = e.At.Sub(prm)
		}
	}
	return priv, pub
}

func TestReleaseTwice(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.4.1"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *a}); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
	}
	st := e.sim.Snapshot()
	if len(st.Aliases) != 0 || len(st.Addresses) != 0 || st.External[a.PublicIP.String()] != "" {
		t.Fatalf("left behind: %+v", st)
	}
}

func TestListOwnedExcludesForeign(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.5.1"), Public: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: ip("10.0.5.2")}); err != nil {
		t.Fatal(err)
	}
	e.sim.PutAddress(proj, "us-central1", "someone-elses", "10.0.5.3", "INTERNAL", nil)
	e.sim.PutAddress(proj, "us-central1", "other-cluster", "10.0.5.4", "INTERNAL", map[string]string{gcp.LabelCluster: "prod-2"})
	e.sim.PutAlias(proj, "us-central1-a", "node-b", "10.0.5.5/32")
	owned, err := e.p.ListOwned(ctx, owner.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range owned {
		got = append(got, fmt.Sprintf("%s %s %s", r.Kind, r.IP, r.InstanceID[strings.LastIndex(r.InstanceID, "/")+1:]))
		if r.Created.IsZero() || r.Owner.Cluster != "prod-1" || r.Owner.Gateway != "gw" {
			t.Fatalf("resource %+v", r)
		}
	}
	sort.Strings(got)
	if len(got) != 3 || got[0] != "PrivateIP 10.0.5.1 node-a" || got[1] != "PrivateIP 10.0.5.2 node-b" || !strings.HasPrefix(got[2], "PublicIP ") {
		t.Fatalf("owned: %q", got)
	}
	// The foreign alias is not released, and asking is a Permission error.
	err = e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: providers.Assignment{IP: ip("10.0.5.5"), Node: "node-b", InstanceID: "projects/" + proj + "/zones/us-central1-a/instances/node-b"}})
	if !providers.IsPermission(err) {
		t.Fatalf("want Permission, got %v", err)
	}
	// GC: release everything listed.
	for _, r := range owned {
		if err := e.p.ReleaseOwned(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := e.p.ReleaseOwned(ctx, r); err != nil {
			t.Fatalf("second ReleaseOwned: %v", err)
		}
	}
	st := e.sim.Snapshot()
	if len(st.Addresses) != 2 || st.Aliases["10.0.5.5"] == "" || st.Aliases["10.0.5.1"] != "" || st.Aliases["10.0.5.2"] != "" {
		t.Fatalf("after GC: %+v", st)
	}
	if err := e.p.ReleaseOwned(ctx, providers.OwnedResource{Kind: providers.ResourcePrivateIP, ID: "regions/us-central1/addresses/other-cluster", Owner: owner}); !providers.IsPermission(err) {
		t.Fatalf("want Permission for another cluster's address, got %v", err)
	}
}

func TestThrottlingRetriedThenTyped(t *testing.T) {
	e := newEnv(t, 400*time.Millisecond)
	ctx := context.Background()
	e.sim.FailNext(gcpsim.MUpdateNetworkIface, 2, http.StatusTooManyRequests, false)
	e.sim.FailNext(gcpsim.MInstancesGet, 1, http.StatusForbidden, false) // 403 rateLimitExceeded
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.6.1")}); err != nil {
		t.Fatalf("throttling within budget: %v", err)
	}
	e.sim.SetRateLimit(gcpsim.MInstancesGet, 0.001, 0, http.StatusTooManyRequests)
	start := time.Now()
	_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: ip("10.0.6.2")})
	if !providers.IsThrottled(err) || providers.RetryAfter(err) <= 0 {
		t.Fatalf("want Throttled with a retry hint, got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("budget not respected: %v", d)
	}
}

func TestServerErrorAfterApplyNoDuplicate(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	e.sim.FailNext(gcpsim.MAddressesInsert, 1, http.StatusServiceUnavailable, true)
	e.sim.FailNext(gcpsim.MUpdateNetworkIface, 1, http.StatusInternalServerError, true)
	e.sim.FailNext(gcpsim.MAddAccessConfig, 1, http.StatusBadGateway, true)
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.7.1"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if e.sim.AliasCount("10.0.7.1") != 1 || e.sim.AddressCount("INTERNAL") != 1 || e.sim.AddressCount("EXTERNAL") != 1 {
		t.Fatalf("duplicates: %+v", e.sim.Snapshot())
	}
	if e.sim.Snapshot().External[a.PublicIP.String()] != holder("node-a", "us-central1-a") {
		t.Fatalf("public IP not bound: %+v", e.sim.Snapshot())
	}
}

func TestDescribeLagNoDuplicate(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	e.sim.SetDescribeLag(150 * time.Millisecond)
	ctx := context.Background()
	req := providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.8.1"), Public: true}
	a, err := e.p.EnsureIP(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.EnsureIP(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.8.2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *a, To: nodeB}); err != nil {
		t.Fatal(err)
	}
	st := e.sim.Snapshot()
	if e.sim.AliasCount("10.0.8.1") != 1 || e.sim.AliasCount("10.0.8.2") != 1 || e.sim.AddressCount("EXTERNAL") != 1 || e.sim.AddressCount("INTERNAL") != 2 {
		t.Fatalf("duplicates under describe lag: %+v", st)
	}
	if st.Aliases["10.0.8.1"] != holder("node-b", "us-central1-a") {
		t.Fatalf("state %+v", st)
	}
}

func TestStaleFingerprintRetried(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	e.sim.RaceFingerprint(proj, "us-central1-a", "node-a", 2)
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.9.1")}); err != nil {
		t.Fatal(err)
	}
	if n := e.sim.Calls(gcpsim.MUpdateNetworkIface); n != 3 {
		t.Fatalf("updateNetworkInterface calls %d, want 3 (two 412s, one success)", n)
	}
	if e.sim.Holder("10.0.9.1") == "" {
		t.Fatal("alias not applied")
	}
	// Past the budget it is a Conflict.
	short := newEnv(t, 100*time.Millisecond)
	short.sim.RaceFingerprint(proj, "us-central1-a", "node-a", 100)
	if _, err := short.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.9.2")}); !providers.IsConflict(err) {
		t.Fatalf("want Conflict, got %v", err)
	}
}

func TestConcurrentEnsuresSerialisedPerInstance(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	e.sim.SetOperationDelay(10 * time.Millisecond)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip(fmt.Sprintf("10.0.10.%d", i+1))})
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ensure %d: %v", i, err)
		}
		if e.sim.Holder(fmt.Sprintf("10.0.10.%d", i+1)) == "" {
			t.Fatalf("10.0.10.%d lost", i+1)
		}
	}
	if n := e.sim.Calls(gcpsim.MUpdateNetworkIface); n != 5 {
		t.Fatalf("updateNetworkInterface calls %d, want 5 (no 412 thanks to per-instance serialisation)", n)
	}
}

func TestFailedZoneOperationIsError(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	e.sim.FailNextOperation(gcpsim.MUpdateNetworkIface, gcpsim.OpFailure{HTTPStatus: 500, Code: "INTERNAL_ERROR", Message: "Internal error. Please try again."})
	_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.11.1")})
	if err == nil || !strings.Contains(err.Error(), "INTERNAL_ERROR") {
		t.Fatalf("want the operation's error, got %v", err)
	}
	if e.sim.Holder("10.0.11.1") != "" {
		t.Fatal("a failed operation applied its change")
	}
	// Calling again (the coordinator's retry) succeeds and creates nothing twice.
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.11.1")}); err != nil {
		t.Fatal(err)
	}
	if e.sim.AddressCount("INTERNAL") != 1 {
		t.Fatal("duplicate reservation")
	}
}

func TestDiscoverNodeAndMetadata(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.12.1")}); err != nil {
		t.Fatal(err)
	}
	info, err := e.p.DiscoverNode(ctx, nodeA)
	if err != nil {
		t.Fatal(err)
	}
	if info.Zone != "us-central1-a" || len(info.Interfaces) != 1 || info.Interfaces[0].PrimaryIP != ip("10.0.0.2") ||
		len(info.Interfaces[0].SecondaryIPs) != 1 || info.Subnets[0].CIDR != netip.MustParsePrefix("10.0.0.0/20") ||
		info.Capacity.FreeIPSlots != 9 || len(info.Subnets[0].Reserved) != 4 {
		t.Fatalf("info %+v", info)
	}
	if _, err := e.p.DiscoverNode(ctx, node("gone", "us-central1-a")); !providers.IsNotFound(err) {
		t.Fatalf("want NotFound, got %v", err)
	}
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(e.srv.URL, "http://"))
	pid, err := gcp.ProjectFromMetadata(ctx, metadata.NewClient(&http.Client{Timeout: 5 * time.Second}))
	if err != nil || pid != proj {
		t.Fatalf("metadata project %q, %v", pid, err)
	}
}

// TestPatchSemantics checks the simulator the way instances.updateNetworkInterface behaves: a
// body without aliasIpRanges leaves the aliases as they are, and only an explicit empty list
// removes them. The provider's releases and moves off a node's only alias (TestReleaseTwice,
// TestMoveKeepsIPAndPublicIP) pass only because its client sends that list.
func TestPatchSemantics(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.6.1")}); err != nil {
		t.Fatal(err)
	}
	base := e.srv.URL + "/compute/v1/projects/" + proj + "/zones/us-central1-a/instances/node-a"
	patch := func(body string) {
		t.Helper()
		resp, err := http.Get(base)
		if err != nil {
			t.Fatal(err)
		}
		var inst struct {
			NetworkInterfaces []struct{ Fingerprint string } `json:"networkInterfaces"`
		}
		err = json.NewDecoder(resp.Body).Decode(&inst)
		_ = resp.Body.Close()
		if err != nil || len(inst.NetworkInterfaces) == 0 {
			t.Fatalf("reading the fingerprint: %v %+v", err, inst)
		}
		fp := inst.NetworkInterfaces[0].Fingerprint
		req, err := http.NewRequest(http.MethodPatch, base+"/updateNetworkInterface?networkInterface=nic0",
			strings.NewReader(fmt.Sprintf(body, fp)))
		if err != nil {
			t.Fatal(err)
		}
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PATCH %s: %s", body, resp.Status)
		}
	}
	patch(`{"fingerprint": %q}`)
	if h := e.sim.Holder("10.0.6.1"); h != holder("node-a", "us-central1-a") {
		t.Fatalf("a body without aliasIpRanges changed them: holder %q", h)
	}
	patch(`{"fingerprint": %q, "aliasIpRanges": []}`)
	if h := e.sim.Holder("10.0.6.1"); h != "" {
		t.Fatalf("an explicit empty aliasIpRanges left the alias on %q", h)
	}
}

// TestListOwnedPaginates lists the cluster's addresses over several pages: the simulator serves
// two per page (Compute's default is 500), so five owned addresses and a foreign one take
// three addresses.aggregatedList calls, and none is missed.
func TestListOwnedPaginates(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip(fmt.Sprintf("10.0.7.%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	e.sim.PutAddress(proj, "us-central1", "other-cluster", "10.0.7.9", "INTERNAL", map[string]string{gcp.LabelCluster: "prod-2"})
	e.sim.SetPageSize(2)
	e.sim.ResetCalls()
	owned, err := e.p.ListOwned(ctx, owner.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	if len(owned) != 5 {
		t.Fatalf("listed %d of 5 owned addresses: %+v", len(owned), owned)
	}
	if n := e.sim.CallCounts()[gcpsim.MAddressesAggregated]; n != 3 {
		t.Fatalf("addresses.aggregatedList called %d times, want 3 pages", n)
	}
}

// TestSimulatorRefusesBadNames checks the simulator refuses what Compute refuses: an address
// name that is no RFC 1035 label, a malformed filter and a page size above 500; and it
// refuses filters it cannot evaluate for sure rather than ignore them (AND and OR mixed at
// one level, a field it does not model, the regular-expression form).
func TestSimulatorRefusesBadNames(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	base := e.srv.URL + "/compute/v1/projects/" + proj
	for _, c := range []struct{ method, path, body string }{
		{http.MethodPost, "/regions/us-central1/addresses", `{"name": "Egressd_1", "address": "10.0.8.1", "addressType": "INTERNAL"}`},
		{http.MethodPost, "/regions/us-central1/addresses", `{"name": "` + strings.Repeat("a", 64) + `", "addressType": "INTERNAL"}`},
		{http.MethodGet, "/aggregated/addresses?filter=" + url.QueryEscape("name ~ foo"), ""},
		{http.MethodGet, "/aggregated/addresses?maxResults=501", ""},
		{http.MethodGet, "/zones/us-central1-a/instances?filter=" + url.QueryEscape(`(name = "a") OR (name = "b") AND (status = RUNNING)`), ""},
		{http.MethodGet, "/zones/us-central1-a/instances?filter=" + url.QueryEscape(`cpuPlatform = "Intel Skylake"`), ""},
		{http.MethodGet, "/zones/us-central1-a/instances?filter=" + url.QueryEscape(`name eq "node-.*"`), ""},
	} {
		req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s %s: %s, want 400", c.method, c.path, resp.Status)
		}
	}
}

// TestReservingAddressWaitedFor: an address is RESERVING until its insert operation is DONE.
// When the provider finds its address already there (an insert that answered 503 after the
// cloud accepted it, another replica, a crash), it must wait for RESERVED before binding it:
// an access config naming a RESERVING address is refused (resourceNotReady), and so is
// deleting one.
func TestReservingAddressWaitedFor(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	req := providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.13.1")}
	if _, err := e.p.EnsureIP(ctx, req); err != nil {
		t.Fatal(err)
	}
	e.sim.SetOperationDelay(300 * time.Millisecond)
	e.sim.FailNext(gcpsim.MAddressesInsert, 1, http.StatusServiceUnavailable, true)
	req.Public = true
	a, err := e.p.EnsureIP(ctx, req)
	if err != nil {
		t.Fatalf("binding an address found RESERVING: %v", err)
	}
	if e.sim.Snapshot().External[a.PublicIP.String()] != holder("node-a", "us-central1-a") {
		t.Fatalf("public IP not bound: %+v", e.sim.Snapshot())
	}

	// Garbage collection of an address whose insert has not finished: delete waits.
	body := fmt.Sprintf(`{"name": "egressd-gc-test", "address": "10.0.13.9", "addressType": "INTERNAL", "subnetwork": "projects/%s/regions/us-central1/subnetworks/nodes", "labels": {%q: %q}}`,
		proj, gcp.LabelCluster, owner.Cluster)
	resp, err := http.Post(e.srv.URL+"/compute/v1/projects/"+proj+"/regions/us-central1/addresses", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("inserting: %s", resp.Status)
	}
	owned, err := e.p.ListOwned(ctx, owner.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	var res *providers.OwnedResource
	for i := range owned {
		if owned[i].IP == ip("10.0.13.9") {
			res = &owned[i]
		}
	}
	if res == nil {
		t.Fatalf("a RESERVING address is not listed: %+v", owned)
	}
	if err := e.p.ReleaseOwned(ctx, *res); err != nil {
		t.Fatalf("releasing a RESERVING address: %v", err)
	}
	for _, st := range e.sim.Snapshot().Addresses {
		if st.Address == "10.0.13.9" {
			t.Fatalf("address left: %+v", st)
		}
	}
}

// TestDiscoverNodesBatched discovers nodes in two zones with one instances.aggregatedList
// (filtered on the names, every page read: the simulator serves one instance per page here)
// and one subnetworks.get: a node with no instance, or whose instance of that name is in
// another zone, is NotFound and the others are described.
func TestDiscoverNodesBatched(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	if _, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeB, IP: ip("10.0.12.2")}); err != nil {
		t.Fatal(err)
	}
	e.sim.SetPageSize(1)
	e.sim.ResetCalls()
	gone := node("gone", "us-central1-a")
	elsewhere := node("node-c", "us-central1-a") // node-c is in us-central1-b
	elsewhere.Name = "elsewhere"
	refs := []providers.NodeRef{nodeA, nodeB, gone, nodeC, nodeS, {Name: "not-gce", ProviderID: "aws:///us-east-1a/i-0123"}, elsewhere}
	infos, errs := providers.DiscoverNodes(ctx, e.p, refs)
	for i, r := range refs {
		switch r.Name {
		case "gone", "not-gce", "elsewhere":
			if !providers.IsNotFound(errs[i]) || infos[i] != nil {
				t.Errorf("%s: want NotFound, got %+v, %v", r.Name, infos[i], errs[i])
			}
		default:
			if errs[i] != nil || infos[i] == nil || infos[i].Zone != r.Zone || infos[i].InstanceID != "projects/"+proj+"/zones/"+r.Zone+"/instances/"+r.Name {
				t.Errorf("%s: %+v, %v", r.Name, infos[i], errs[i])
			}
		}
	}
	if got := infos[1].Interfaces[0].SecondaryIPs; len(got) != 1 || got[0] != ip("10.0.12.2") || infos[1].Capacity.FreeIPSlots != 9 {
		t.Errorf("node-b: %+v", infos[1])
	}
	if infos[4].Interfaces[0].PrimaryIP != ip("10.0.0.6") || len(infos[4].Subnets) != 1 || infos[4].Subnets[0].CIDR != netip.MustParsePrefix("10.0.0.0/20") {
		t.Errorf("node-small: %+v", infos[4])
	}
	// node-a, node-b, node-small (us-central1-a) and node-c (us-central1-b) match, one per page:
	// 4 calls. node-pub, in us-central1-a too, is left out by the filter.
	c := e.sim.CallCounts()
	if c[gcpsim.MInstancesAggregated] != 4 || c[gcpsim.MSubnetworksGet] != 1 || total(c) != 5 {
		t.Fatalf("calls %v, want 4 instances.aggregatedList (4 pages) and 1 subnetworks.get", c)
	}

	// A role without compute.instances.list (granted before discovery was batched): one
	// instances.get per node instead, and the same answers.
	e.sim.SetPageSize(0)
	e.sim.FailNextWithReason(gcpsim.MInstancesAggregated, 1, http.StatusForbidden, "forbidden")
	e.sim.ResetCalls()
	again, errs := providers.DiscoverNodes(ctx, e.p, refs)
	for i, r := range refs {
		if (errs[i] == nil) != (infos[i] != nil) || (infos[i] != nil && again[i].InstanceID != infos[i].InstanceID) || providers.IsPermission(errs[i]) {
			t.Errorf("%s without instances.list: %+v, %v", r.Name, again[i], errs[i])
		}
	}
	if c := e.sim.CallCounts(); c[gcpsim.MInstancesAggregated] != 1 || c[gcpsim.MInstancesGet] != 6 || c[gcpsim.MSubnetworksGet] != 0 {
		t.Fatalf("calls %v, want 1 refused instances.aggregatedList, 6 instances.get and no subnetworks.get (read a moment ago)", c)
	}

}

// TestCallLimits: with callLimits below the project's own rate limits (here the simulator's
// token buckets per method), no request is refused and none is retried; without them the same
// sequence draws 429s and retries. Reads and mutating methods have a bucket each, and a
// caller's deadline that the wait would pass is Throttled at once.
func TestCallLimits(t *testing.T) {
	ctx := context.Background()
	run := func(limits *providers.RateLimits) (lists, updates int) {
		e := newEnv(t, 10*time.Second)
		p, err := gcp.New(ctx, gcp.Type, gcp.Config{ClusterName: owner.Cluster, Project: proj, Endpoint: e.srv.URL, WithoutAuthentication: true,
			CallLimits: limits})
		if err != nil {
			t.Fatal(err)
		}
		e.sim.SetRateLimit(gcpsim.MInstancesAggregated, 4, 1, http.StatusTooManyRequests)
		e.sim.SetRateLimit(gcpsim.MUpdateNetworkIface, 10, 1, http.StatusForbidden)
		for _, n := range []providers.NodeRef{nodeA, nodeB, nodeC, nodeS} {
			if _, err := p.DiscoverNode(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		for i, n := range []providers.NodeRef{nodeA, nodeB} {
			if _, err := p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: n, IP: ip(fmt.Sprintf("10.0.15.%d", i+1))}); err != nil {
				t.Fatal(err)
			}
		}
		return e.sim.Calls(gcpsim.MInstancesAggregated), e.sim.Calls(gcpsim.MUpdateNetworkIface)
	}
	if lists, updates := run(&providers.RateLimits{ReadQPS: 2.5, ReadBurst: 1, MutatingQPS: 4, MutatingBurst: 1}); lists != 4 || updates != 2 {
		t.Errorf("with call limits: %d instances.aggregatedList and %d updateNetworkInterface calls, want 4 and 2 (none refused)", lists, updates)
	}
	if lists, updates := run(nil); lists == 4 || updates == 2 {
		t.Errorf("without call limits: %d instances.aggregatedList and %d updateNetworkInterface calls; the simulator's limits refused none, so this test proves nothing", lists, updates)
	}

	e := newEnv(t, 10*time.Second)
	p, err := gcp.New(ctx, gcp.Type, gcp.Config{ClusterName: owner.Cluster, Project: proj, Endpoint: e.srv.URL, WithoutAuthentication: true,
		CallLimits: &providers.RateLimits{ReadQPS: 0.001, ReadBurst: 1}})
	if err != nil {
		t.Fatal(err)
	}
	// The list takes the only token; subnetworks.get would wait past the deadline.
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := p.DiscoverNode(short, nodeA); !providers.IsThrottled(err) {
		t.Fatalf("want Throttled when the call limit's wait passes the deadline, got %v", err)
	}
}

// TestAliasConflictFailsTheOperation: an alias IP another instance holds is not refused by
// instances.updateNetworkInterface itself; its operation ends DONE with
// IP_IN_USE_BY_ANOTHER_RESOURCE. The provider reports a Conflict carrying that code (read
// from the operation's error, not from any message), changes no alias, and gives up the
// reservation it inserted for the IP.
func TestAliasConflictFailsTheOperation(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	e.sim.SetOperationDelay(20 * time.Millisecond)
	e.sim.PutAlias(proj, "us-central1-a", "node-b", "10.0.14.201/32") // set by someone else
	e.sim.ResetCalls()
	_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.14.201")})
	var pe *providers.Error
	if !providers.IsConflict(err) || !errors.As(err, &pe) || pe.Code != "IP_IN_USE_BY_ANOTHER_RESOURCE" {
		t.Fatalf("want Conflict IP_IN_USE_BY_ANOTHER_RESOURCE, got %v", err)
	}
	if e.sim.Calls(gcpsim.MUpdateNetworkIface) != 1 || e.sim.Calls(gcpsim.MZoneOperationsWait) == 0 {
		t.Fatalf("the conflict did not come from the operation: calls %v", e.sim.CallCounts())
	}
	if h := e.sim.Holder("10.0.14.201"); h != holder("node-b", "us-central1-a") || e.sim.AliasCount("10.0.14.201") != 1 {
		t.Fatalf("holder %q, %d holders", h, e.sim.AliasCount("10.0.14.201"))
	}
	// The reservation the provider inserted for the IP is not left as this cluster's: it
	// would name node-b as its user, and garbage collection of it would take node-b's alias.
	owned, err := e.p.ListOwned(ctx, owner.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range owned {
		if o.IP == ip("10.0.14.201") {
			t.Errorf("the failed ensure left %+v owned by the cluster", o)
		}
		if err := e.p.ReleaseOwned(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if h := e.sim.Holder("10.0.14.201"); h != holder("node-b", "us-central1-a") {
		t.Fatalf("garbage collection took node-b's alias: holder %q", h)
	}
	for _, a := range e.sim.Snapshot().Addresses {
		if a.Address == "10.0.14.201" && (a.Labels[gcp.LabelCluster] != "" || a.Labels[gcp.LabelConflict] != owner.Cluster) {
			t.Errorf("reservation left with labels %v, want only %s=%s", a.Labels, gcp.LabelConflict, owner.Cluster)
		}
	}
}

// TestPublicNATTranslatesPrimaryOnly: an access config's one-to-one NAT translates the primary
// internal address of its interface, never an alias range (the simulator's Egress models it).
// The assignment says so (PublicNATSource, which the agent SNATs public-bound flows to), and a
// move and a release carry the translation with the access config.
func TestPublicNATTranslatesPrimaryOnly(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	alias := ip("10.0.9.1")
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: alias, Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if a.PublicNATSource != ip("10.0.0.2") {
		t.Fatalf("PublicNATSource %v, want node-a's primary 10.0.0.2", a.PublicNATSource)
	}
	if nat, ok := e.sim.Egress("10.0.0.2"); !ok || nat != a.PublicIP.String() {
		t.Fatalf("node-a's primary leaves with %q (%v), want %s", nat, ok, a.PublicIP)
	}
	if nat, ok := e.sim.Egress(alias.String()); ok {
		t.Fatalf("the alias %s leaves with %s: an access config never translates an alias range", alias, nat)
	}
	if st := e.sim.Snapshot(); st.NAT[a.PublicIP.String()] != "10.0.0.2" {
		t.Fatalf("NAT view %v", st.NAT)
	}
	// Steady state reports the same source without address calls.
	e.sim.ResetCalls()
	again, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: alias, Public: true})
	if err != nil || again.PublicNATSource != a.PublicNATSource {
		t.Fatalf("resync: %+v, %v", again, err)
	}
	if c := e.sim.CallCounts(); mutating(c) != 0 {
		t.Fatalf("resync mutated: %v", c)
	}

	// Move: the access config is deleted on node-a and added on node-b with the alias.
	e.sim.ResetCalls()
	m, err := e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *a, To: nodeB})
	if err != nil {
		t.Fatal(err)
	}
	c := e.sim.CallCounts()
	if c[gcpsim.MDeleteAccessConfig] != 1 || c[gcpsim.MAddAccessConfig] != 1 {
		t.Fatalf("move calls %v, want one deleteAccessConfig and one addAccessConfig", c)
	}
	t.Logf("FIGURE move + public: %d calls (%d mutating): %v", total(c), mutating(c), c)
	if m.PublicIP != a.PublicIP || m.PublicNATSource != ip("10.0.0.3") {
		t.Fatalf("moved: %+v", m)
	}
	if nat, ok := e.sim.Egress("10.0.0.3"); !ok || nat != a.PublicIP.String() {
		t.Fatalf("node-b's primary leaves with %q (%v), want %s", nat, ok, a.PublicIP)
	}
	if nat, ok := e.sim.Egress("10.0.0.2"); ok {
		t.Fatalf("node-a's primary still leaves with %s after the move", nat)
	}

	// A node with its own external IP cannot take it: refused before anything changes.
	e.sim.ResetCalls()
	_, err = e.p.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *m, To: nodeP})
	if !providers.IsCapacityExhausted(err) || !strings.Contains(err.Error(), "node's own external IP") {
		t.Fatalf("move to a node with an ephemeral external IP: want CapacityExhausted naming it, got %v", err)
	}
	if c := e.sim.CallCounts(); mutating(c) != 0 {
		t.Fatalf("refused move mutated: %v", c)
	}
	if nat, ok := e.sim.Egress("10.0.0.5"); !ok || nat != "192.0.2.10" {
		t.Fatalf("node-pub's own external IP changed: %q %v", nat, ok)
	}
	if e.sim.Holder(alias.String()) != holder("node-b", "us-central1-a") {
		t.Fatalf("refused move left the alias on %q", e.sim.Holder(alias.String()))
	}

	// Release: nothing translates to the address any more, and it is gone.
	if err := e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *m}); err != nil {
		t.Fatal(err)
	}
	if nat, ok := e.sim.Egress("10.0.0.3"); ok {
		t.Fatalf("node-b's primary still leaves with %s after the release", nat)
	}
	if n := e.sim.AddressCount("EXTERNAL"); n != 0 {
		t.Fatalf("%d external addresses left", n)
	}
}

// TestEnsurePublicRefusedBeforeChange: a public egress IP for a node whose NIC has its own
// external IP fails with CapacityExhausted before the alias or any address is created.
func TestEnsurePublicRefusedBeforeChange(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	e.sim.ResetCalls()
	_, err := e.p.EnsureIP(context.Background(), providers.EnsureRequest{Owner: owner, Node: nodeP, IP: ip("10.0.9.20"), Public: true})
	if !providers.IsCapacityExhausted(err) || !strings.Contains(err.Error(), "AccessConfigInUse") {
		t.Fatalf("want CapacityExhausted AccessConfigInUse, got %v", err)
	}
	if c := e.sim.CallCounts(); mutating(c) != 0 {
		t.Fatalf("refused ensure mutated: %v", c)
	}
}

// TestSimulatorAccessConfigRules: the simulator refuses a second access config on an
// interface, an IPv4 access config of another type than ONE_TO_ONE_NAT, and a network tier
// other than the static address's.
func TestSimulatorAccessConfigRules(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := context.Background()
	a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.9.30"), Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *a}); err != nil {
		t.Fatal(err)
	}
	// A standard-tier static address to bind by hand.
	base := e.srv.URL + "/compute/v1/projects/" + proj
	post := func(path, body string) int {
		t.Helper()
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if s := post("/regions/us-central1/addresses", `{"name": "std", "addressType": "EXTERNAL", "networkTier": "STANDARD"}`); s != http.StatusOK {
		t.Fatalf("inserting a standard-tier address: %d", s)
	}
	var std string
	for _, ad := range e.sim.Snapshot().Addresses {
		if ad.Name == "std" {
			std = ad.Address
		}
	}
	for _, c := range []struct{ node, body string }{
		{"node-pub", `{"name": "second", "type": "ONE_TO_ONE_NAT"}`},
		{"node-a", `{"name": "v6", "type": "DIRECT_IPV6"}`},
		{"node-a", `{"name": "tier", "type": "ONE_TO_ONE_NAT", "natIP": "` + std + `", "networkTier": "PREMIUM"}`},
	} {
		if s := post("/zones/us-central1-a/instances/"+c.node+"/addAccessConfig?networkInterface=nic0", c.body); s != http.StatusBadRequest {
			t.Errorf("addAccessConfig %s on %s: %d, want 400", c.body, c.node, s)
		}
	}
	if s := post("/zones/us-central1-a/instances/node-a/addAccessConfig?networkInterface=nic0", `{"name": "ok", "type": "ONE_TO_ONE_NAT", "natIP": "`+std+`"}`); s != http.StatusOK {
		t.Fatalf("a valid addAccessConfig: %d", s)
	}
}

// TestAccessConfigRefusals: GCE refuses an access config with 400 "invalid", a reason it gives
// every refused request, so the provider decides from the interface's state, not the message.
// An access config applied but answered 502, then read back under describe lag, makes the
// retry's add fail 400 ("At most one access config") while the read still shows none: the
// provider reads again until the read shows its own config, and ends with one binding. A 400
// that persists is passed on as GCE's answer, unclassified, once the lag window is over.
func TestAccessConfigRefusals(t *testing.T) {
	ctx := context.Background()
	t.Run("lost answer under describe lag", func(t *testing.T) {
		e := newEnv(t, 10*time.Second)
		e.sim.SetDescribeLag(300 * time.Millisecond)
		e.sim.FailNext(gcpsim.MAddAccessConfig, 1, http.StatusBadGateway, true)
		a, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.9.1"), Public: true})
		if err != nil {
			t.Fatal(err)
		}
		if e.sim.Snapshot().External[a.PublicIP.String()] != holder("node-a", "us-central1-a") || e.sim.AddressCount("EXTERNAL") != 1 {
			t.Fatalf("public IP %s not bound once: %+v", a.PublicIP, e.sim.Snapshot())
		}
	})
	t.Run("refused for good", func(t *testing.T) {
		e := newEnv(t, 10*time.Second)
		e.sim.FailNextWithReason(gcpsim.MAddAccessConfig, 1000, http.StatusBadRequest, "invalid")
		_, err := e.p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: nodeA, IP: ip("10.0.9.2"), Public: true})
		var ge *googleapi.Error
		if err == nil || providers.KindOf(err) != 0 || !errors.As(err, &ge) || ge.Code != http.StatusBadRequest {
			t.Fatalf("want GCE's 400 passed on unclassified, got %v", err)
		}
	})
}
