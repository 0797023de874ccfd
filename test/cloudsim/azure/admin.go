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
	FailNext      []simkit.FailNext `json:"failNext,omitempty"`
	FailOperation []struct {
		Method string `json:"method"`
		OpFailure
	} `json:"failOperation,omitempty"`
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
	for _, f := range doc.FailNext {
		s.FailNext(f.Method, f.Count, f.Status, f.AfterApply)
	}
	for _, f := range doc.FailOperation {
		s.FailNextOperation(f.Method, f.OpFailure)
	}
	return nil
}
