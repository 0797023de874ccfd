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

// DefaultPrivateCIDRs are the destinations of cloud.privateCIDRs when it is unset: the IPv4
// ranges Compute Engine accepts for VPC subnets besides privately used public ones (VPC
// "Valid IPv4 ranges": RFC 1918, RFC 6598 shared space, the IETF protocol assignments, the
// three documentation ranges, benchmarking and the reserved 240.0.0.0/4). GKE's ip-masq-agent
// leaves the same list unmasqueraded by default, for the same reason: traffic to them stays in
// the VPC (or its peers and VPNs) and needs no external address.
var DefaultPrivateCIDRs = []string{
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24",
	"192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
}
