package awssim

import (
	"encoding/xml"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/egressd/egressd/test/cloudsim/simkit"
)

// Namespace is the XML namespace of EC2 API version 2016-11-15, the one the SDK speaks.
const Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// Fault is a scripted error for one action.
type Fault struct {
	// Code and Message form the XML error; Status is the HTTP status (400 when zero).
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	Status  int    `json:"status,omitempty"`
	// Times the fault fires (1 when zero).
	Times int `json:"times,omitempty"`
	// AfterApply applies the request first and returns the error instead of its response: the
	// 5xx-after-commit case a client must survive without doing the change twice.
	AfterApply bool `json:"afterApply,omitempty"`
}

// Server is the simulated EC2 endpoint, IMDS and admin API. The zero value is not usable;
// call New.
type Server struct {
	Region string

	mu       sync.Mutex
	w        *world
	calls    map[string]int
	throttle map[string]*rate.Limiter
	faults   map[string][]Fault
	latency  map[string]time.Duration
	lag      time.Duration
	history  []snap
	eipLimit int
	imds     imdsState
	reqSeq   int
	pageSize int // cap on paginated describe pages; 0: none
	now      func() time.Time
	timing   *simkit.Timing
	fab      fabric
}

// snap is the accepted state after a write at at, which describe calls see from visible on.
type snap struct {
	at, visible time.Time
	w           *world
}

// New returns an empty simulated region with DefaultInstanceTypes and an Elastic IP quota
// of 5, EC2's default.
func New(region string) *Server {
	return &Server{
		Region: region, w: newWorld(), calls: map[string]int{}, throttle: map[string]*rate.Limiter{},
		faults: map[string][]Fault{}, latency: map[string]time.Duration{}, eipLimit: 5,
		imds: imdsState{tokens: map[string]time.Time{}}, now: time.Now,
		timing: simkit.NewTiming(simkit.MustProfile("instant"), 1), fab: newFabric(),
	}
}

// ServeHTTP serves EC2 query requests (POST /), IMDS (/latest/...) and the admin API
// (/admin/...) on one listener.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/latest/"):
		s.IMDSHandler("").ServeHTTP(w, r)
	case strings.HasPrefix(r.URL.Path, "/admin/"):
		s.AdminHandler().ServeHTTP(w, r)
	default:
		s.serveEC2(w, r)
	}
}

// apiError is an EC2 error response.
type apiError struct {
	Status        int
	Code, Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errf(code, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: code, Message: fmt.Sprintf(format, args...)}
}

type handler func(s *Server, q url.Values) (any, *apiError)

// mutating reports whether an action changes state (and so records describe-lag history).
func mutating(action string) bool {
	return !strings.HasPrefix(action, "Describe")
}

func (s *Server) serveEC2(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.writeError(w, errf("MalformedQueryString", "%v", err))
		return
	}
	q := r.PostForm
	if len(q) == 0 {
		q = r.URL.Query()
	}
	action := q.Get("Action")
	s.mu.Lock()
	s.calls[action]++
	s.reqSeq++
	reqID := fmt.Sprintf("00000000-0000-4000-8000-%012x", s.reqSeq)
	delay := s.latency[action] + s.latency["*"]
	if mutating(action) {
		delay += s.timing.CallLatency()
	}
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}

	h, ok := actions[action]
	if !ok {
		s.writeErrorID(w, reqID, &apiError{Status: http.StatusBadRequest, Code: "InvalidAction",
			Message: fmt.Sprintf("The action %s is not valid for this web service.", action)})
		return
	}

	s.mu.Lock()
	s.settleLocked()
	if lim := s.limiterFor(action); lim != nil && !lim.Allow() {
		s.mu.Unlock()
		s.writeErrorID(w, reqID, &apiError{Status: http.StatusServiceUnavailable, Code: "RequestLimitExceeded",
			Message: "Request limit exceeded."})
		return
	}
	fault, hasFault := s.popFault(action)
	if hasFault && !fault.AfterApply {
		s.mu.Unlock()
		s.writeErrorID(w, reqID, faultError(fault))
		return
	}
	var out any
	aerr := checkIDs(q)
	if aerr == nil && dryRun(q) {
		// A dry run checks everything a real call would, then changes nothing.
		saved := s.w
		s.w = saved.clone()
		if _, aerr = h(s, q); aerr == nil {
			aerr = dryRunOK
		}
		s.w = saved
	} else if aerr == nil {
		out, aerr = h(s, q)
	}
	if aerr == nil && mutating(action) && !dryRun(q) {
		s.commitLocked(action, s.now(), true)
	}
	s.mu.Unlock()

	if hasFault {
		s.writeErrorID(w, reqID, faultError(fault))
		return
	}
	if aerr != nil {
		s.writeErrorID(w, reqID, aerr)
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, xml.Header)
	enc := xml.NewEncoder(w)
	start := xml.StartElement{Name: xml.Name{Local: action + "Response"},
		Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: Namespace}}}
	if out == nil {
		out = &returnResp{Return: true}
	}
	setRequestID(out, reqID)
	_ = enc.EncodeElement(out, start)
}

func faultError(f Fault) *apiError {
	st := f.Status
	if st == 0 {
		st = http.StatusBadRequest
	}
	msg := f.Message
	if msg == "" {
		msg = "injected fault"
	}
	return &apiError{Status: st, Code: f.Code, Message: msg}
}

func (s *Server) writeError(w http.ResponseWriter, e *apiError) {
	s.mu.Lock()
	s.reqSeq++
	reqID := fmt.Sprintf("00000000-0000-4000-8000-%012x", s.reqSeq)
	s.mu.Unlock()
	s.writeErrorID(w, reqID, e)
}

type xmlErrorResponse struct {
	XMLName   xml.Name `xml:"Response"`
	Errors    []xmlErr `xml:"Errors>Error"`
	RequestID string   `xml:"RequestID"`
}

type xmlErr struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

func (s *Server) writeErrorID(w http.ResponseWriter, reqID string, e *apiError) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(e.Status)
	_, _ = io.WriteString(w, xml.Header)
	_ = xml.NewEncoder(w).Encode(xmlErrorResponse{Errors: []xmlErr{{Code: e.Code, Message: e.Message}}, RequestID: reqID})
}

func (s *Server) limiterFor(action string) *rate.Limiter {
	if l := s.throttle[action]; l != nil {
		return l
	}
	return s.throttle["*"]
}

func (s *Server) popFault(action string) (Fault, bool) {
	for _, key := range []string{action, "*"} {
		q := s.faults[key]
		if len(q) == 0 {
			continue
		}
		f := q[0]
		if f.Times <= 1 {
			s.faults[key] = q[1:]
		} else {
			q[0].Times--
		}
		return f, true
	}
	return Fault{}, false
}

// view returns the world describe calls see: the current one, or with describe lag the
// newest state already visible (each write becomes visible a drawn lag after it; a visible
// write makes every earlier one visible too, so reads never go back in time).
func (s *Server) view() *world {
	if !s.lagOn() || len(s.history) == 0 {
		return s.w
	}
	now := s.now()
	i := 0
	for j, h := range s.history {
		if !h.visible.After(now) {
			i = j
		}
	}
	// Drop history nobody can see any more, keeping the visible entry.
	s.history = s.history[i:]
	return s.history[0].w
}

// Throttle rate-limits an action ("*": every action) with a token bucket; requests past it
// get 503 RequestLimitExceeded, as EC2 does. A qps of 0 with burst 0 throttles every call.
func (s *Server) Throttle(action string, qps float64, burst int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle[action] = rate.NewLimiter(rate.Limit(qps), burst)
}

// Inject queues a scripted error for an action ("*": the next call of any action).
func (s *Server) Inject(action string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[action] = append(s.faults[action], f)
}

// SetLatency delays every call of an action ("*": all actions).
func (s *Server) SetLatency(action string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency[action] = d
}

// SetDescribeLag makes Describe* calls see the state as it was d ago (EC2's eventual
// consistency). Enabling it freezes the visible state at this moment until d has passed.
func (s *Server) SetDescribeLag(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lag = d
	s.resetLagLocked()
}

// ClearFaults removes throttling, scripted errors, latency and the describe lag SetDescribeLag
// set; the timing profile stays (its describe lag restarts from the state now).
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = map[string]*rate.Limiter{}
	s.faults = map[string][]Fault{}
	s.latency = map[string]time.Duration{}
	s.lag = 0
	s.resetLagLocked()
}

// SetElasticIPLimit sets the account's Elastic IP quota (AddressLimitExceeded past it).
func (s *Server) SetElasticIPLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eipLimit = n
}

// Calls returns how many requests each action received (throttled and failed ones included).
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls)
}

// ResetCalls zeroes the call counters.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int{}
}

// MutatingCalls sums the calls of actions that change state.
func MutatingCalls(calls map[string]int) int {
	n := 0
	for a, c := range calls {
		if mutating(a) {
			n += c
		}
	}
	return n
}
