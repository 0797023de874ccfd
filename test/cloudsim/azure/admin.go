package azuresim

import (
	"encoding/json"
	"net/http"

	"github.com/egressd/egressd/test/cloudsim/simkit"
)

// SeedDocument is what POST /admin/seed accepts.
type SeedDocument struct {
	Subnets []SubnetSeed `json:"subnets"`
	VMs     []VMSeed     `json:"vms"`
	// ScaleSets are Uniform scale sets (vmss.go).
	ScaleSets []ScaleSetSeed `json:"scaleSets,omitempty"`
	IMDS      *IMDSSeed      `json:"imds,omitempty"`
}

// FaultDocument is what POST /admin/faults accepts.
type FaultDocument struct {
	Latency        string `json:"latency,omitempty"`
	OperationDelay string `json:"operationDelay,omitempty"`
	LRORetryAfter  string `json:"lroRetryAfter,omitempty"`
	// Timing sets the timing profile (simkit.ParseProfile) and its seed.
	Timing *simkit.TimingDoc `json:"timing,omitempty"`
	// PageSize caps list pages (SetPageSize); 0 leaves the setting alone.
	PageSize int `json:"pageSize,omitempty"`
	Throttle []struct {
		Method     string `json:"method"`
		Count      int    `json:"count"`
		RetryAfter string `json:"retryAfter"`
	} `json:"throttle,omitempty"`
	// RateLimits installs ARM's token buckets (SetRateLimit).
	RateLimits []struct {
		Class           string  `json:"class"`
		Bucket          int     `json:"bucket"`
		RefillPerSecond float64 `json:"refillPerSecond"`
	} `json:"rateLimits,omitempty"`
	simkit.Failures[OpFailure]
}

// seed applies an admin SeedDocument (POST /admin/seed).
func (s *Sim) seed(doc SeedDocument) error {
	for _, sn := range doc.Subnets {
		if err := s.AddSubnet(sn); err != nil {
			return err
		}
	}
	for _, vm := range doc.VMs {
		s.AddVM(vm)
	}
	for _, ss := range doc.ScaleSets {
		s.AddScaleSet(ss)
	}
	if doc.IMDS != nil {
		s.SetIMDS(*doc.IMDS)
	}
	return nil
}

// faults applies an admin FaultDocument (POST /admin/faults).
func (s *Sim) faults(doc FaultDocument) error {
	if doc.Timing != nil {
		if err := doc.Timing.Apply(s); err != nil {
			return err
		}
	}
	if err := simkit.SetDurations(simkit.Duration{Value: doc.Latency, Set: s.SetLatency},
		simkit.Duration{Value: doc.OperationDelay, Set: s.SetOperationDelay}); err != nil {
		return err
	}
	if doc.PageSize > 0 {
		s.SetPageSize(doc.PageSize)
	}
	if doc.LRORetryAfter != "" {
		s.SetLRORetryAfter(doc.LRORetryAfter)
	}
	for _, t := range doc.Throttle {
		s.Throttle(t.Method, t.Count, t.RetryAfter)
	}
	for _, l := range doc.RateLimits {
		if err := s.SetRateLimit(l.Class, l.Bucket, l.RefillPerSecond); err != nil {
			return err
		}
	}
	doc.Apply(s)
	return nil
}

// NICChange is what POST /admin/nicchange accepts: a change to a NIC by another writer than the
// client under test (ChangeNIC), such as cloud-provider-azure adding the node to a pool.
type NICChange struct {
	// NIC is the NIC's resource ID.
	NIC string `json:"nic"`
	// AddBackendPools are load-balancer backend pool IDs put on the primary ipConfiguration.
	AddBackendPools []string `json:"addBackendPools"`
}

// serveNICChange applies a NICChange; a NIC whose operation runs answers 409, an unknown one
// 400.
func (s *Sim) serveNICChange(w http.ResponseWriter, r *http.Request) {
	var c NICChange
	if err := json.NewDecoder(r.Body).Decode(&c); err != nil || c.NIC == "" || len(c.AddBackendPools) == 0 {
		http.Error(w, "want {\"nic\": \"<NIC resource ID>\", \"addBackendPools\": [\"<pool ID>\", ...]}", http.StatusBadRequest)
		return
	}
	if err := s.AddBackendPool(c.NIC, c.AddBackendPools...); err != nil {
		status := http.StatusBadRequest
		if s.ETag(c.NIC) != "" {
			status = http.StatusConflict
		}
		http.Error(w, err.Error(), status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}"))
}
