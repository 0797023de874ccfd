package azuresim

import (
	"encoding/json"
	"net/http"
	"time"
)

// SeedDocument is what POST /admin/seed accepts.
type SeedDocument struct {
	Subnets []SubnetSeed `json:"subnets"`
	VMs     []VMSeed     `json:"vms"`
	IMDS    *IMDSSeed    `json:"imds,omitempty"`
}

// FaultDocument is what POST /admin/faults accepts.
type FaultDocument struct {
	Latency        string `json:"latency,omitempty"`
	OperationDelay string `json:"operationDelay,omitempty"`
	LRORetryAfter  string `json:"lroRetryAfter,omitempty"`
	Throttle       []struct {
		Method     string `json:"method"`
		Count      int    `json:"count"`
		RetryAfter string `json:"retryAfter"`
	} `json:"throttle,omitempty"`
	FailNext []struct {
		Method     string `json:"method"`
		Count      int    `json:"count"`
		Status     int    `json:"status"`
		AfterApply bool   `json:"afterApply"`
	} `json:"failNext,omitempty"`
	FailOperation []struct {
		Method string `json:"method"`
		OpFailure
	} `json:"failOperation,omitempty"`
}

// serveAdmin: POST /admin/seed, POST /admin/faults, GET /admin/state, /admin/calls,
// /admin/events.
func (s *Sim) serveAdmin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/admin/seed" && r.Method == http.MethodPost:
		var doc SeedDocument
		if err := json.NewDecoder(r.Body).Decode(&doc); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, sn := range doc.Subnets {
			if err := s.AddSubnet(sn); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		for _, vm := range doc.VMs {
			s.AddVM(vm)
		}
		if doc.IMDS != nil {
			s.SetIMDS(*doc.IMDS)
		}
		_, _ = w.Write([]byte("{}"))
	case r.URL.Path == "/admin/faults" && r.Method == http.MethodPost:
		var doc FaultDocument
		if err := json.NewDecoder(r.Body).Decode(&doc); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, d := range []struct {
			v   string
			set func(time.Duration)
		}{{doc.Latency, s.SetLatency}, {doc.OperationDelay, s.SetOperationDelay}} {
			if d.v == "" {
				continue
			}
			dur, err := time.ParseDuration(d.v)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			d.set(dur)
		}
		if doc.LRORetryAfter != "" {
			s.SetLRORetryAfter(doc.LRORetryAfter)
		}
		for _, t := range doc.Throttle {
			s.Throttle(t.Method, t.Count, t.RetryAfter)
		}
		for _, f := range doc.FailNext {
			s.FailNext(f.Method, f.Count, f.Status, f.AfterApply)
		}
		for _, f := range doc.FailOperation {
			s.FailNextOperation(f.Method, f.OpFailure)
		}
		_, _ = w.Write([]byte("{}"))
	case r.URL.Path == "/admin/state" && r.Method == http.MethodGet:
		_, _ = w.Write(mustJSON(s.Snapshot()))
	case r.URL.Path == "/admin/calls" && r.Method == http.MethodGet:
		_, _ = w.Write(mustJSON(s.CallCounts()))
	case r.URL.Path == "/admin/events" && r.Method == http.MethodGet:
		_, _ = w.Write(mustJSON(s.Events()))
	default:
		http.NotFound(w, r)
	}
}
