package azuresim

import (
	"github.com/egressd/egressd/test/cloudsim/simkit"
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
	if doc.IMDS != nil {
		s.SetIMDS(*doc.IMDS)
	}
	return nil
}

// faults applies an admin FaultDocument (POST /admin/faults).
func (s *Sim) faults(doc FaultDocument) error {
	if err := simkit.SetDurations(simkit.Duration{Value: doc.Latency, Set: s.SetLatency},
		simkit.Duration{Value: doc.OperationDelay, Set: s.SetOperationDelay}); err != nil {
		return err
	}
	if doc.LRORetryAfter != "" {
		s.SetLRORetryAfter(doc.LRORetryAfter)
	}
	for _, t := range doc.Throttle {
		s.Throttle(t.Method, t.Count, t.RetryAfter)
	}
	doc.Apply(s)
	return nil
}
