package gcpsim

import (
	"github.com/egressd/egressd/test/cloudsim/simkit"
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
	// Timing sets the timing profile (simkit.ParseProfile) and its seed.
	Timing     *simkit.TimingDoc `json:"timing,omitempty"`
	RateLimits []struct {
		Method    string  `json:"method"`
		PerSecond float64 `json:"perSecond"`
		Burst     int     `json:"burst"`
		Status    int     `json:"status"`
	} `json:"rateLimits,omitempty"`
	simkit.Failures[OpFailure]
}

// seed applies an admin SeedDocument (POST /admin/seed).
func (s *Sim) seed(doc SeedDocument) error {
	for _, p := range doc.Projects {
		if err := s.Seed(p); err != nil {
			return err
		}
	}
	if doc.Metadata != nil {
		s.SetMetadata(*doc.Metadata)
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
		simkit.Duration{Value: doc.OperationDelay, Set: s.SetOperationDelay},
		simkit.Duration{Value: doc.DescribeLag, Set: s.SetDescribeLag}); err != nil {
		return err
	}
	for _, l := range doc.RateLimits {
		s.SetRateLimit(l.Method, l.PerSecond, l.Burst, l.Status)
	}
	doc.Apply(s)
	return nil
}
