// Package simkit is what the cloud simulators share that belongs to no cloud's wire format:
// per-method call counters, per-method fault queues, the plumbing of the JSON admin API, and
// timing profiles (how long calls, propagation, describe lag and attachments take, drawn from
// seeded distributions; timing.go). Each simulator keeps its own protocol, seeding, state and error bodies, written down
// independently of the SDK it is tested with.
package simkit

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Counters counts requests per method name. The zero value is ready to use and safe for
// concurrent use; a simulator embeds it to offer Calls, CallCounts and ResetCalls.
type Counters struct {
	mu sync.Mutex
	n  map[string]int
}

// Count records one request for method.
func (c *Counters) Count(method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[method]++
}

// Calls returns the number of requests received for method.
func (c *Counters) Calls(method string) int { c.mu.Lock(); defer c.mu.Unlock(); return c.n[method] }

// CallCounts returns a copy of all counters.
func (c *Counters) CallCounts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := maps.Clone(c.n)
	if out == nil {
		out = map[string]int{}
	}
	return out
}

// ResetCalls zeroes the counters.
func (c *Counters) ResetCalls() { c.mu.Lock(); c.n = nil; c.mu.Unlock() }

// Latency is a delay injected before every request. The zero value delays none; it is safe
// for concurrent use, and a simulator embeds it to offer SetLatency.
type Latency struct{ d atomic.Int64 }

// SetLatency delays every request by d.
func (l *Latency) SetLatency(d time.Duration) { l.d.Store(int64(d)) }

// Delay waits out the latency; it returns false when ctx ends first.
func (l *Latency) Delay(ctx context.Context) bool { return wait(ctx, time.Duration(l.d.Load())) }

// wait sleeps for d (nothing when d <= 0); it returns false when ctx ends first.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// Queue holds faults per method, handed out first in, first out. It does no locking: the
// simulator uses it under its own lock. Empty it with clear.
type Queue[F any] map[string][]F

// Add queues f n times for method.
func (q Queue[F]) Add(method string, n int, f F) {
	for range n {
		q[method] = append(q[method], f)
	}
}

// Next takes the oldest fault queued for method, if any.
func (q Queue[F]) Next(method string) (F, bool) {
	l := q[method]
	if len(l) == 0 {
		var zero F
		return zero, false
	}
	q[method] = l[1:]
	return l[0], true
}

// Failures is the part of a fault document that every simulator reads the same way: scripted
// errors and failed operations. O is the simulator's description of a failed operation.
type Failures[O any] struct {
	FailNext      []FailNext         `json:"failNext,omitempty"`
	FailOperation []FailOperation[O] `json:"failOperation,omitempty"`
}

// FailNext asks to fail the next Count calls of Method with Status, after applying the change
// when AfterApply is set.
type FailNext struct {
	Method     string `json:"method"`
	Count      int    `json:"count"`
	Status     int    `json:"status"`
	AfterApply bool   `json:"afterApply"`
}

// FailOperation asks to fail the next operation Method starts with Failure. In JSON the
// failure's fields stand beside "method".
type FailOperation[O any] struct {
	Method  string
	Failure O
}

// UnmarshalJSON reads {"method": ..., <O's fields>}.
func (f *FailOperation[O]) UnmarshalJSON(b []byte) error {
	var m struct {
		Method string `json:"method"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	f.Method = m.Method
	return json.Unmarshal(b, &f.Failure)
}

// Failer is what Failures.Apply sets faults on.
type Failer[O any] interface {
	FailNext(method string, n, status int, afterApply bool)
	FailNextOperation(method string, f O)
}

// Apply queues every failure on sim.
func (f Failures[O]) Apply(sim Failer[O]) {
	for _, n := range f.FailNext {
		sim.FailNext(n.Method, n.Count, n.Status, n.AfterApply)
	}
	for _, o := range f.FailOperation {
		sim.FailNextOperation(o.Method, o.Failure)
	}
}

// Duration is one Go duration string of a fault document and the setting it goes to.
type Duration struct {
	Value string
	Set   func(time.Duration)
}

// SetDurations parses and sets each non-empty value in order; it stops at the first value that
// does not parse and returns its error.
func SetDurations(ds ...Duration) error {
	for _, d := range ds {
		if d.Value == "" {
			continue
		}
		v, err := time.ParseDuration(d.Value)
		if err != nil {
			return err
		}
		d.Set(v)
	}
	return nil
}

// Inspected is what the admin API reads from a simulator.
type Inspected[State, Event any] interface {
	Snapshot() State
	CallCounts() map[string]int
	Events() []Event
}

// Admin returns a simulator's JSON admin API:
//
//	POST /admin/seed     a Seed document, given to seed; its error answers 400
//	POST /admin/faults   a Faults document, given to faults; its error answers 400
//	GET  /admin/state    sim.Snapshot()
//	GET  /admin/calls    sim.CallCounts()
//	GET  /admin/events   sim.Events()
func Admin[Seed, Faults, State, Event any](sim Inspected[State, Event], seed func(Seed) error, faults func(Faults) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/admin/seed" && r.Method == http.MethodPost:
			apply(w, r, seed)
		case r.URL.Path == "/admin/faults" && r.Method == http.MethodPost:
			apply(w, r, faults)
		case r.URL.Path == "/admin/state" && r.Method == http.MethodGet:
			_, _ = w.Write(MustJSON(sim.Snapshot()))
		case r.URL.Path == "/admin/calls" && r.Method == http.MethodGet:
			_, _ = w.Write(MustJSON(sim.CallCounts()))
		case r.URL.Path == "/admin/events" && r.Method == http.MethodGet:
			_, _ = w.Write(MustJSON(sim.Events()))
		default:
			http.NotFound(w, r)
		}
	})
}

// apply decodes the request body into a D and hands it to f, answering {} or 400 with the
// error.
func apply[D any](w http.ResponseWriter, r *http.Request, f func(D) error) {
	var doc D
	if err := json.NewDecoder(r.Body).Decode(&doc); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := f(doc); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_, _ = w.Write([]byte("{}"))
}

// MustJSON marshals v, which the simulators build only from types that marshal.
func MustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Op is one long-running operation. It is done from DoneAt on; its change applies then, once,
// unless it failed already (Failure set when it started, from a failOperation fault).
type Op[F any] struct {
	DoneAt  time.Time
	Apply   func() *F
	Failure *F
	Done    bool
}

// Ops settles a simulator's long-running operations in the order they started. It does no
// locking: the simulator uses it under its own lock.
type Ops[F any] struct{ started []*Op[F] }

// Start records op.
func (o *Ops[F]) Start(op *Op[F]) { o.started = append(o.started, op) }

// Settle applies every operation due at now, in the order they started; a change that fails
// when applied leaves its failure on the operation.
func (o *Ops[F]) Settle(now time.Time) {
	for _, op := range o.started {
		if op.Done || now.Before(op.DoneAt) {
			continue
		}
		op.Done = true
		if op.Failure == nil && op.Apply != nil {
			op.Failure = op.Apply()
		}
		op.Apply = nil
	}
}
