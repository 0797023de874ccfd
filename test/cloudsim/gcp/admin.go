package gcpsim

import (
	"encoding/json"
	"net/http"
	"time"
)

// SeedDocument is what POST /admin/seed accepts.
type SeedDocument struct {
	Projects []ProjectSeed `json:"projects"`
	Metadata *MetadataSeed `json:"metadata,omitempty"`
}

// FaultDocument is what POST /admin/faults accepts. Durations are Go duration strings.
type FaultDocument struct {
	Latency        string `json:"latency,omitempty"`
	OperationDelay string `json:"operationDelay,omitempty"`
	DescribeLag    string `json:"describeLag,omitempty"`
	RateLimits     []struct {
		Method    string  `json:"method"`
		PerSecond float64 `json:"perSecond"`
		Burst     int     `json:"burst"`
		Status    int     `json:"status"`
	} `json:"rateLimits,omitempty"`
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

// serveAdmin is the JSON admin API used when the simulator runs as its own process:
// POST /admin/seed (SeedDocument), POST /admin/faults (FaultDocument), GET /admin/state
// (State), GET /admin/calls (counters), GET /admin/events.
func (s *Sim) serveAdmin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/admin/seed" && r.Method == http.MethodPost:
		var doc SeedDocument
		if err := json.NewDecoder(r.Body).Decode(&doc); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, p := range doc.Projects {
			if err := s.Seed(p); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		if doc.Metadata != nil {
			s.SetMetadata(*doc.Metadata)
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
		}{{doc.Latency, s.SetLatency}, {doc.OperationDelay, s.SetOperationDelay}, {doc.DescribeLag, s.SetDescribeLag}} {
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
		for _, l := range doc.RateLimits {
			s.SetRateLimit(l.Method, l.PerSecond, l.Burst, l.Status)
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
