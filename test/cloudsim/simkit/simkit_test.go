package simkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestQueueHandsOutInOrder(t *testing.T) {
	q := Queue[int]{}
	q.Add("m", 2, 7)
	q.Add("m", 1, 8)
	for _, want := range []int{7, 7, 8} {
		if got, ok := q.Next("m"); !ok || got != want {
			t.Fatalf("Next = %d, %v; want %d, true", got, ok, want)
		}
	}
	if _, ok := q.Next("m"); ok {
		t.Fatal("Next on an empty queue reported a fault")
	}
	if _, ok := q.Next("other"); ok {
		t.Fatal("Next on an unknown method reported a fault")
	}
}

func TestCounters(t *testing.T) {
	var c Counters
	if got := c.CallCounts(); got == nil || len(got) != 0 {
		t.Fatalf("zero CallCounts = %v, want an empty map", got)
	}
	c.Count("a")
	c.Count("a")
	c.Count("b")
	counts := c.CallCounts()
	counts["a"] = 100 // a copy: the counter stays
	if c.Calls("a") != 2 || c.Calls("b") != 1 {
		t.Fatalf("Calls = %d, %d; want 2, 1", c.Calls("a"), c.Calls("b"))
	}
	c.ResetCalls()
	if c.Calls("a") != 0 || len(c.CallCounts()) != 0 {
		t.Fatalf("after ResetCalls: %v", c.CallCounts())
	}
}

func TestSetDurationsStopsAtTheFirstBadValue(t *testing.T) {
	var a, b time.Duration
	err := SetDurations(Duration{"2s", func(d time.Duration) { a = d }}, Duration{"", nil},
		Duration{"soon", func(d time.Duration) { b = d }})
	if err == nil || !strings.Contains(err.Error(), `"soon"`) {
		t.Fatalf("err = %v, want one naming \"soon\"", err)
	}
	if a != 2*time.Second || b != 0 {
		t.Fatalf("a, b = %v, %v; want 2s, 0", a, b)
	}
}

type fakeSim struct{ Counters }

func (*fakeSim) Snapshot() map[string]string { return map[string]string{"10.0.0.1": "vm"} }
func (*fakeSim) Events() []string            { return []string{"ip+"} }

func TestAdmin(t *testing.T) {
	sim := &fakeSim{}
	sim.Count("get")
	var seeded []string
	h := Admin[[]string, struct{ N int }, map[string]string, string](sim,
		func(d []string) error { seeded = d; return nil },
		func(f struct{ N int }) error {
			if f.N < 0 {
				return errors.New("N is negative")
			}
			return nil
		})
	for _, c := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{http.MethodPost, "/admin/seed", `["a","b"]`, 200, "{}"},
		{http.MethodPost, "/admin/seed", `{`, 400, "unexpected EOF"},
		{http.MethodPost, "/admin/faults", `{"N":-1}`, 400, "N is negative"},
		{http.MethodPost, "/admin/faults", `{"N":1}`, 200, "{}"},
		{http.MethodGet, "/admin/state", "", 200, `{"10.0.0.1":"vm"}`},
		{http.MethodGet, "/admin/calls", "", 200, `{"get":1}`},
		{http.MethodGet, "/admin/events", "", 200, `["ip+"]`},
		{http.MethodGet, "/admin/seed", "", 404, "404 page not found"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, strings.NewReader(c.body)))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != c.status || strings.TrimSpace(string(body)) != c.want {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, rec.Code, body, c.status, c.want)
		}
	}
	if strings.Join(seeded, ",") != "a,b" {
		t.Fatalf("seeded %v, want [a b]", seeded)
	}
}

type opFailure struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type failRecorder struct{ got []string }

func (r *failRecorder) FailNext(method string, n, status int, afterApply bool) {
	r.got = append(r.got, fmt.Sprintf("next %s %d %d %v", method, n, status, afterApply))
}

func (r *failRecorder) FailNextOperation(method string, f opFailure) {
	r.got = append(r.got, fmt.Sprintf("op %s %s %s", method, f.Code, f.Message))
}

func TestFailuresReadsFlatOperationFailures(t *testing.T) {
	var doc struct {
		Latency string `json:"latency"`
		Failures[opFailure]
	}
	err := json.Unmarshal([]byte(`{"latency":"1s","failNext":[{"method":"a.put","count":2,"status":503,"afterApply":true}],
		"failOperation":[{"method":"a.put","code":"Conflict","message":"taken"}]}`), &doc)
	if err != nil {
		t.Fatal(err)
	}
	var r failRecorder
	doc.Apply(&r)
	want := []string{"next a.put 2 503 true", "op a.put Conflict taken"}
	if doc.Latency != "1s" || !slices.Equal(r.got, want) {
		t.Fatalf("latency %q, applied %q; want 1s, %q", doc.Latency, r.got, want)
	}
	if err := json.Unmarshal([]byte(`{"failOperation":[{"method":7}]}`), &doc); err == nil {
		t.Fatal("a numeric method was accepted")
	}
}

func TestOpsSettleInStartOrderOnceDue(t *testing.T) {
	now := time.Now()
	var applied []string
	mk := func(name string, due time.Duration, fail *string) *Op[string] {
		return &Op[string]{DoneAt: now.Add(due), Apply: func() *string { applied = append(applied, name); return fail }}
	}
	conflict := "conflict"
	first, second, later := mk("first", 0, nil), mk("second", -time.Second, &conflict), mk("later", time.Minute, nil)
	failed := mk("failed", 0, nil)
	failed.Failure = &conflict
	var ops Ops[string]
	for _, op := range []*Op[string]{first, second, later, failed} {
		ops.Start(op)
	}
	ops.Settle(now)
	ops.Settle(now) // a second settle applies nothing again
	if !slices.Equal(applied, []string{"first", "second"}) {
		t.Fatalf("applied %v, want [first second]", applied)
	}
	if !first.Done || first.Failure != nil || !second.Done || second.Failure == nil || later.Done || !failed.Done {
		t.Fatalf("done/failure: first %v %v, second %v %v, later %v, failed %v",
			first.Done, first.Failure, second.Done, second.Failure, later.Done, failed.Done)
	}
	ops.Settle(now.Add(time.Minute))
	if !later.Done || !slices.Equal(applied, []string{"first", "second", "later"}) {
		t.Fatalf("after a minute: later.Done %v, applied %v", later.Done, applied)
	}
}

func TestLatencyDelaysUntilContextEnds(t *testing.T) {
	var l Latency
	if !l.Delay(context.Background()) {
		t.Fatal("zero latency reported a cancelled wait")
	}
	l.SetLatency(20 * time.Millisecond)
	start := time.Now()
	if !l.Delay(context.Background()) || time.Since(start) < 20*time.Millisecond {
		t.Fatalf("Delay returned after %v, want at least 20ms", time.Since(start))
	}
	l.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if l.Delay(ctx) {
		t.Fatal("Delay outlived its context")
	}
}
