package v1alpha1

// Condition types. Each is owned by exactly one controller.
const (
	// ConditionReady on an EgressGateway: at least one healthy gateway in every zone that has
	// gateway nodes, and every egress IP assigned. On a policy: accepted and its gateway ready.
	ConditionReady = "Ready"
	// ConditionDegraded on an EgressGateway: some gateways or egress IPs are not where they
	// should be, but traffic still flows.
	ConditionDegraded = "Degraded"
	// ConditionCloudSynced on an EgressGateway: the provider's view matches the EgressIP ledger.
	ConditionCloudSynced = "CloudSynced"
	// ConditionAccepted on a policy: its gateway exists and admits the policy's namespace.
	ConditionAccepted = "Accepted"
	// ConditionAssigned on an EgressIP: the cloud holds the address on status.node.
	ConditionAssigned = "Assigned"
)

// Condition reasons shared by the controllers.
const (
	ReasonGatewayNotFound     = "GatewayNotFound"
	ReasonNamespaceNotAllowed = "NamespaceNotAllowed"
	ReasonCapacityExhausted   = "CapacityExhausted"
	ReasonProviderNotFound    = "ProviderNotFound"
	ReasonProviderError       = "ProviderError"
	ReasonThrottled           = "Throttled"
	ReasonNoGatewayNodes      = "NoGatewayNodes"
	ReasonAllGatewaysHealthy  = "AllGatewaysHealthy"
	ReasonSomeGatewaysDown    = "SomeGatewaysUnhealthy"
	// ReasonControllerProbesFailing (Degraded): the coordinator's probes fail for every gateway
	// of the group while their agents renew their Leases and their Nodes are Ready. The fault
	// is taken to be on the controller's side of the path, so the probe verdicts are ignored:
	// nothing is drained or marked Unhealthy for them, and no egress IP moves.
	ReasonControllerProbesFailing = "ControllerProbesFailing"
	// ReasonTooManyGateways (Degraded): more Active or Draining gateways than a node's datapath
	// lists (8); each node uses the first ones, zone-local first, so some never carry traffic.
	ReasonTooManyGateways = "TooManyGateways"
	// ReasonGroupIDTooLarge (Ready=False on an EgressGateway; an agent problem too): the
	// group's id is past what the agents' packet mark layout carries (agent.markMask), so no
	// node steers to it or serves it; its policies' traffic leaves with the node IPs.
	ReasonGroupIDTooLarge = "GroupIDTooLarge"
	ReasonAccepted        = "Accepted"
	ReasonAssigned        = "Assigned"
	ReasonMoving          = "Moving"
	ReasonPending         = "Pending"
	ReasonSynced          = "Synced"
	// ReasonInvalidAddresses: spec.addresses names no source the coordinator knows.
	ReasonInvalidAddresses = "InvalidAddresses"
	// ReasonAddressInUse: the cloud refused an allocated address because something else
	// holds it (an Event on the gateway; the address is skipped).
	ReasonAddressInUse = "AddressInUse"
	// ReasonPrefixBudgetExceeded (Accepted=False on a policy): its prefixes do not fit its
	// namespace's budget (for a ClusterEgressPolicy, the cluster's) after the policies created
	// before it; the agents do not steer it.
	ReasonPrefixBudgetExceeded = "PrefixBudgetExceeded"
)

// Reasons of a gateway node's state in EgressGateway status.zones[].gateways[].reason.
const (
	// Draining.
	ReasonCordoned     = "Cordoned"
	ReasonLabelRemoved = "LabelRemoved"
	// Unhealthy.
	ReasonNodeNotReady      = "NodeNotReady"
	ReasonAgentLeaseExpired = "AgentLeaseExpired"
	ReasonProbeFailed       = "ProbeFailed"
	// Standby.
	ReasonOverMaxGatewaysPerZone = "OverMaxGatewaysPerZone"
	ReasonNoEgressIP             = "NoEgressIP"
	// ReasonAwaitingDelivery: the cloud gave the node an egress IP, but its agent has not yet
	// proven that the fabric delivers the address to it (a cloud applies a move after the call
	// returns); agents send it no new flows until then.
	ReasonAwaitingDelivery = "AwaitingDelivery"
)

// FinalizerReleaseCloud is set on every EgressIP before the coordinator makes a cloud call for
// it, and removed once the provider has released the address.
const FinalizerReleaseCloud = "egressd.io/release-cloud"

// Labels and tags written on objects and cloud resources egressd creates.
const (
	LabelGateway = "egressd.io/gateway"
	LabelZone    = "egressd.io/zone"
	TagCluster   = "egressd.io/cluster"
	TagOwner     = "egressd.io/owner"
)
