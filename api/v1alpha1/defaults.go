package v1alpha1

import "time"

// Defaults of EgressGateway fields, as the API server fills them in (the +kubebuilder:default
// markers, which cannot name a constant; defaults_test.go pins the generated CRD to these) and
// as the agent, the coordinator and egressctl assume them for an object written before a
// default existed. gateway/contract applies them.
const (
	DefaultMode             = ModeActiveActive
	DefaultZoneAffinity     = AffinityPreferLocal
	DefaultFailback         = FailbackNever
	DefaultDrainGracePeriod = 30 * time.Second
	// DefaultProbeInterval and DefaultFailureThreshold detect a dead gateway in 300 ms.
	DefaultProbeInterval    = 100 * time.Millisecond
	DefaultFailureThreshold = 3
)
