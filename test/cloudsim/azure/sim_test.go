package azuresim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

const (
	tsub = "00000000-0000-0000-0000-0000000000aa"
	trg  = "rg1"
	tver = "2025-01-01"
)

type client struct {
	t   *testing.T
	srv *httptest.Server
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
}

func (r reply) code() string { return str(mapOf(r.body["error"])["code"]) }

// do sends one request; path is relative to the subscription unless it starts with http.
func (c client) do(method, path string, body any, hdr ...string) reply {
	c.t.Helper()
	u := path
	if !strings.HasPrefix(path, "http") {
		u = c.srv.URL + "/subscriptions/" + tsub + path
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := reply{status: resp.StatusCode, header: resp.Header}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out.body); err != nil {
			c.t.Fatalf("%s %s: body %q: %v", method, path, b, err)
		}
	}
	return out
}

func newTestSim(t *testing.T, vms int) (*Sim, client) {
	t.Helper()
	s := New(tsub, "westeurope")
	if err := s.AddSubnet(SubnetSeed{ResourceGroup: trg, VNet: "vnet", Name: "nodes", CIDR: "10.1.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	for i := range vms {
		s.AddVM(VMSeed{ResourceGroup: trg, Name: "vm" + string(rune('a'+i)), Subnet: s.SubnetID(trg, "vnet", "nodes"), PrimaryIP: "10.1.0." + string(rune('4'+i))})
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return s, client{t: t, srv: srv}
}

const nicPath = "/resourceGroups/" + trg + "/providers/Microsoft.Network/networkInterfaces/vma-nic?api-version=" + tver

// withSecondary returns the NIC document with one more ipConfiguration.
func withSecondary(nic map[string]any, name, ip string) map[string]any {
	doc := clone(nic)
	sub := mapOf(props(ipConfigs(doc)[0])["subnet"])
	props(doc)["ipConfigurations"] = append(props(doc)["ipConfigurations"].([]any), map[string]any{
		"name": name, "properties": map[string]any{"privateIPAddress": ip, "privateIPAllocationMethod": "Static", "subnet": sub}})
	return doc
}

func TestETagChangesOnEveryWriteAndIfMatchIsHonoured(t *testing.T) {
	s, c := newTestSim(t, 1)
	got := c.do("GET", nicPath, nil)
	e1 := str(got.body["etag"])
	if got.status != 200 || !strings.HasPrefix(e1, `W/"`) || !strings.HasSuffix(e1, `"`) || got.header.Get("ETag") != e1 {
		t.Fatalf("GET: %d, etag %q, header %q", got.status, e1, got.header.Get("ETag"))
	}
	put := c.do("PUT", nicPath, withSecondary(got.body, "a", "10.1.1.1"), "If-Match", e1)
	e2 := str(put.body["etag"])
	if put.status != 200 || e2 == e1 || e2 == "" {
		t.Fatalf("PUT with the current etag: %d, etag %q after %q", put.status, e2, e1)
	}
	stale := c.do("PUT", nicPath, withSecondary(got.body, "b", "10.1.1.2"), "If-Match", e1)
	if stale.status != http.StatusPreconditionFailed || stale.code() != "PreconditionFailed" || str(mapOf(stale.body["error"])["message"]) == "" {
		t.Fatalf("PUT with a stale etag: %d %v", stale.status, stale.body)
	}
	if err := s.AddBackendPool(s.NICID(trg, "vma-nic"), "/pool/1"); err != nil {
		t.Fatal(err)
	}
	if e3 := s.ETag(s.NICID(trg, "vma-nic")); e3 == e2 || e3 == "" {
		t.Fatalf("a change by another writer kept etag %q", e3)
	}
	if r := c.do("PUT", nicPath, got.body, "If-Match", e2); r.status != http.StatusPreconditionFailed {
		t.Fatalf("PUT with the etag before another writer's change: %d", r.status)
	}
	if r := c.do("PUT", nicPath, got.body, "If-None-Match", "*"); r.status != http.StatusPreconditionFailed || r.code() != "PreconditionFailed" {
		t.Fatalf("If-None-Match * on an existing NIC: %d %v", r.status, r.body)
	}
	cur := c.do("GET", nicPath, nil)
	if r := c.do("PUT", nicPath, cur.body, "If-Match", "*"); r.status != 200 {
		t.Fatalf("If-Match * : %d %v", r.status, r.body)
	}
	// A PUT without If-Match is unconditional, as on ARM.
	if r := c.do("PUT", nicPath, got.body); r.status != 200 {
		t.Fatalf("unconditional PUT: %d %v", r.status, r.body)
	}
}

func TestUpdatingWhileTheOperationRunsAndAnotherOperationInProgress(t *testing.T) {
	s, c := newTestSim(t, 1)
	s.SetOperationDelay(time.Hour) // the operation never completes within the test
	got := c.do("GET", nicPath, nil)
	put := c.do("PUT", nicPath, withSecondary(got.body, "a", "10.1.1.1"), "If-Match", str(got.body["etag"]))
	if put.status != 200 || str(props(put.body)["provisioningState"]) != "Updating" || put.header.Get("Azure-AsyncOperation") == "" {
		t.Fatalf("PUT: %d %v", put.status, put.body)
	}
	now := c.do("GET", nicPath, nil)
	if str(props(now.body)["provisioningState"]) != "Updating" || len(ipConfigs(now.body)) != 2 || str(now.body["etag"]) != str(put.body["etag"]) {
		t.Fatalf("GET while the operation runs: %v", now.body)
	}
	again := c.do("PUT", nicPath, now.body, "If-Match", str(now.body["etag"]))
	if again.status != http.StatusConflict || again.code() != "AnotherOperationInProgress" {
		t.Fatalf("PUT while the operation runs: %d %v", again.status, again.body)
	}
	if err := s.AddBackendPool(s.NICID(trg, "vma-nic"), "/pool/1"); err == nil {
		t.Fatal("another writer's change went through while the operation runs")
	}
	op := c.do("GET", put.header.Get("Azure-AsyncOperation"), nil)
	if op.status != 200 || op.body["status"] != "InProgress" {
		t.Fatalf("operation: %d %v", op.status, op.body)
	}
}

func TestOperationCompletesSucceededOrFailedWithThePreviousContent(t *testing.T) {
	s, c := newTestSim(t, 1)
	got := c.do("GET", nicPath, nil)
	c.do("PUT", nicPath, withSecondary(got.body, "a", "10.1.1.1"), "If-Match", str(got.body["etag"]))
	done := c.do("GET", nicPath, nil)
	if str(props(done.body)["provisioningState"]) != "Succeeded" || len(ipConfigs(done.body)) != 2 {
		t.Fatalf("after the operation: %v", done.body)
	}
	s.FailNextOperation(MNICPut, OpFailure{Code: "InternalServerError", Message: "An error occurred."})
	put := c.do("PUT", nicPath, withSecondary(done.body, "b", "10.1.1.2"), "If-Match", str(done.body["etag"]))
	if put.status != 200 {
		t.Fatalf("PUT: %d %v", put.status, put.body)
	}
	op := c.do("GET", put.header.Get("Azure-AsyncOperation"), nil)
	failed := c.do("GET", nicPath, nil)
	if op.body["status"] != "Failed" || str(props(failed.body)["provisioningState"]) != "Failed" || len(ipConfigs(failed.body)) != 2 ||
		str(failed.body["etag"]) == str(put.body["etag"]) {
		t.Fatalf("failed operation: %v; NIC %v", op.body, failed.body)
	}
}

func TestRetryableErrorWhileAReferencedPublicIPIsUpdating(t *testing.T) {
	s, c := newTestSim(t, 1)
	s.SetOperationDelay(time.Hour)
	pipPath := "/resourceGroups/" + trg + "/providers/Microsoft.Network/publicIPAddresses/pip1?api-version=" + tver
	pip := c.do("PUT", pipPath, map[string]any{"location": "westeurope", "sku": map[string]any{"name": "Standard"}, "properties": map[string]any{"publicIPAllocationMethod": "Static"}})
	if pip.status != http.StatusCreated || str(props(pip.body)["provisioningState"]) != "Updating" {
		t.Fatalf("PUT public IP: %d %v", pip.status, pip.body)
	}
	if g := c.do("GET", pipPath, nil); g.status != 200 || str(props(g.body)["provisioningState"]) != "Updating" {
		t.Fatalf("GET public IP while its operation runs: %d %v", g.status, g.body)
	}
	got := c.do("GET", nicPath, nil)
	doc := withSecondary(got.body, "a", "10.1.1.1")
	last := ipConfigs(doc)[1]
	props(last)["publicIPAddress"] = map[string]any{"id": str(pip.body["id"])}
	r := c.do("PUT", nicPath, doc, "If-Match", str(got.body["etag"]))
	details, _ := mapOf(r.body["error"])["details"].([]any)
	if r.status != http.StatusTooManyRequests || r.code() != "RetryableError" || len(details) != 1 || str(mapOf(details[0])["code"]) != "ReferencedResourceNotProvisioned" {
		t.Fatalf("NIC PUT referencing an Updating public IP: %d %v", r.status, r.body)
	}
	if d := c.do("DELETE", pipPath, nil); d.status != http.StatusConflict || d.code() != "AnotherOperationInProgress" {
		t.Fatalf("DELETE while the PUT runs: %d %v", d.status, d.body)
	}
}

func TestAPIVersionValidation(t *testing.T) {
	_, c := newTestSim(t, 1)
	base := "/resourceGroups/" + trg + "/providers/Microsoft.Network/networkInterfaces/vma-nic"
	for _, tc := range []struct{ query, code string }{
		{"", "MissingApiVersionParameter"},
		{"?api-version=", "MissingApiVersionParameter"},
		{"?api-version=latest", "InvalidApiVersionParameter"},
		{"?api-version=2099-01-01", "NoRegisteredProviderFound"},
		{"?api-version=2018-10-01", "NoRegisteredProviderFound"},
	} {
		r := c.do("GET", base+tc.query, nil)
		if r.status != http.StatusBadRequest || r.code() != tc.code || !strings.Contains(str(mapOf(r.body["error"])["message"]), "2025-01-01") && tc.code != "MissingApiVersionParameter" {
			t.Errorf("%q: %d %v, want 400 %s", tc.query, r.status, r.body, tc.code)
		}
	}
	for _, v := range servedAPIVersions {
		if r := c.do("GET", base+"?api-version="+v, nil); r.status != 200 {
			t.Errorf("api-version %s: %d", v, r.status)
		}
	}
}

func TestNotFoundCodes(t *testing.T) {
	_, c := newTestSim(t, 1)
	net := "/providers/Microsoft.Network/"
	for _, tc := range []struct{ method, path, code string }{
		{"GET", "/resourceGroups/nope" + net + "networkInterfaces/vma-nic", "ResourceGroupNotFound"},
		{"GET", "/resourceGroups/nope" + net + "networkInterfaces", "ResourceGroupNotFound"},
		{"GET", "/resourceGroups/nope" + net + "publicIPAddresses", "ResourceGroupNotFound"},
		{"PUT", "/resourceGroups/nope" + net + "publicIPAddresses/p", "ResourceGroupNotFound"},
		{"DELETE", "/resourceGroups/nope" + net + "publicIPAddresses/p", "ResourceGroupNotFound"},
		{"GET", "/resourceGroups/" + trg + net + "networkInterfaces/gone", "ResourceNotFound"},
		{"GET", "/resourceGroups/" + trg + net + "publicIPAddresses/gone", "ResourceNotFound"},
		{"GET", "/resourceGroups/" + trg + net + "virtualNetworks/gone/subnets/nodes", "ResourceNotFound"},
		{"GET", "/resourceGroups/" + trg + net + "virtualNetworks/vnet/subnets/gone", "NotFound"},
	} {
		r := c.do(tc.method, tc.path+"?api-version="+tver, map[string]any{"location": "westeurope"})
		e := mapOf(r.body["error"])
		if r.status != http.StatusNotFound || r.code() != tc.code || str(e["message"]) == "" || r.header.Get("x-ms-error-code") != tc.code {
			t.Errorf("%s %s: %d %v, want 404 %s", tc.method, tc.path, r.status, r.body, tc.code)
		}
	}
	if r := c.do("DELETE", "/resourceGroups/"+trg+net+"publicIPAddresses/gone?api-version="+tver, nil); r.status != http.StatusNoContent {
		t.Errorf("DELETE of a public IP that is not there: %d, want 204", r.status)
	}
}

func TestListsPageWithNextLink(t *testing.T) {
	s, c := newTestSim(t, 5)
	s.SetPageSize(2)
	next := "/resourceGroups/" + trg + "/providers/Microsoft.Network/networkInterfaces?api-version=" + tver
	seen := map[string]bool{}
	pages := 0
	for next != "" {
		r := c.do("GET", next, nil)
		if r.status != 200 {
			t.Fatalf("page %d: %d %v", pages, r.status, r.body)
		}
		vals, _ := r.body["value"].([]any)
		if len(vals) > 2 {
			t.Fatalf("page of %d items", len(vals))
		}
		for _, v := range vals {
			seen[str(mapOf(v)["name"])] = true
		}
		next = str(r.body["nextLink"])
		if next != "" && !strings.Contains(next, "api-version="+tver) {
			t.Fatalf("nextLink without the api-version: %s", next)
		}
		pages++
	}
	if pages != 3 || len(seen) != 5 {
		t.Fatalf("%d pages, %d NICs", pages, len(seen))
	}
	bad := c.do("GET", "/resourceGroups/"+trg+"/providers/Microsoft.Network/networkInterfaces?api-version="+tver+"&$skiptoken=bm9wZQ", nil)
	if bad.status != http.StatusBadRequest || bad.code() == "" {
		t.Fatalf("bad skiptoken: %d %v", bad.status, bad.body)
	}
}

func TestBeforeNextAndAdminNICChange(t *testing.T) {
	s, c := newTestSim(t, 1)
	nic := s.NICID(trg, "vma-nic")
	ran := false
	s.BeforeNext(MNICPut, func() { ran = true })
	got := c.do("GET", nicPath, nil)
	if ran {
		t.Fatal("hook ran on a GET")
	}
	c.do("PUT", nicPath, got.body)
	if !ran {
		t.Fatal("hook did not run before the PUT")
	}
	before := s.ETag(nic)
	b, _ := json.Marshal(NICChange{NIC: nic, AddBackendPools: []string{"/pool/a", "/pool/b"}})
	resp, err := c.srv.Client().Post(c.srv.URL+"/admin/nicchange", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	pools, _ := props(s.IPConfigurations(nic)[0])["loadBalancerBackendAddressPools"].([]any)
	if resp.StatusCode != 200 || len(pools) != 2 || s.ETag(nic) == before {
		t.Fatalf("admin change: %d, pools %v, etag %s → %s", resp.StatusCode, pools, before, s.ETag(nic))
	}
	resp, err = c.srv.Client().Post(c.srv.URL+"/admin/nicchange", "application/json", strings.NewReader(`{"nic":"/nope","addBackendPools":["/p"]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown NIC: %d", resp.StatusCode)
	}
}

func TestFailedOperationKeepingItsContent(t *testing.T) {
	s, c := newTestSim(t, 1)
	got := c.do("GET", nicPath, nil)
	s.FailNextOperation(MNICPut, OpFailure{Code: "InternalServerError", Message: "An error occurred.", KeepContent: true})
	put := c.do("PUT", nicPath, withSecondary(got.body, "a", "10.1.1.1"), "If-Match", str(got.body["etag"]))
	op := c.do("GET", put.header.Get("Azure-AsyncOperation"), nil)
	after := c.do("GET", nicPath, nil)
	if op.body["status"] != "Failed" || str(props(after.body)["provisioningState"]) != "Failed" || len(ipConfigs(after.body)) != 2 {
		t.Fatalf("operation %v; NIC %v", op.body, after.body)
	}
}

// TestRateLimitTokenBuckets: ARM's throttling per request class. Reads draw from their own
// bucket (writes go on while reads are throttled), every answered request says how many of
// its class remain, and an empty bucket answers 429 SubscriptionRequestsThrottled with a
// Retry-After of whole seconds until a token is back. Bad settings are refused by name.
func TestRateLimitTokenBuckets(t *testing.T) {
	s, c := newTestSim(t, 1)
	// A refill of one token per 100 s: the bucket does not refill during the test.
	if err := s.SetRateLimit(RateReads, 2, 0.01); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"1", "0"} {
		r := c.do("GET", nicPath, nil)
		if r.status != http.StatusOK || r.header.Get("x-ms-ratelimit-remaining-subscription-reads") != want {
			t.Fatalf("read %d: %d, remaining reads %q, want 200 and %s", i, r.status, r.header.Get("x-ms-ratelimit-remaining-subscription-reads"), want)
		}
	}
	r := c.do("GET", nicPath, nil)
	if r.status != http.StatusTooManyRequests || r.code() != "SubscriptionRequestsThrottled" || r.header.Get("Retry-After") != "100" {
		t.Fatalf("third read: %d %s, Retry-After %q; want 429 SubscriptionRequestsThrottled, 100", r.status, r.code(), r.header.Get("Retry-After"))
	}
	if n := s.Calls(MNICGet); n != 3 {
		t.Fatalf("%d NIC gets counted, want 3 (the throttled one too)", n)
	}
	// Writes have their own bucket, unlimited here.
	s.mu.Lock()
	s.buckets[RateReads].tokens = 1 // the PUT below needs the document read first
	s.mu.Unlock()
	got := c.do("GET", nicPath, nil)
	if w := c.do("PUT", nicPath, got.body); w.status >= 300 || w.header.Get("x-ms-ratelimit-remaining-subscription-writes") != "" {
		t.Fatalf("write while reads are throttled: %d %v (remaining writes %q: no bucket, no header)", w.status, w.body, w.header.Get("x-ms-ratelimit-remaining-subscription-writes"))
	}
	if err := s.SetRateLimit(RateReads, 0, 0); err != nil {
		t.Fatal(err)
	}
	if r := c.do("GET", nicPath, nil); r.status != http.StatusOK {
		t.Fatalf("read after the limit was removed: %d", r.status)
	}
	for _, bad := range []struct {
		class  string
		size   int
		refill float64
	}{{"lists", 10, 1}, {RateWrites, 10, 0}, {RateDeletes, -1, 1}} {
		if err := s.SetRateLimit(bad.class, bad.size, bad.refill); err == nil || !strings.Contains(err.Error(), bad.class) {
			t.Errorf("SetRateLimit(%q, %d, %g): %v, want an error naming the class", bad.class, bad.size, bad.refill, err)
		}
	}
}
