package v1alpha1

// AddressSource is where a group's egress IPs come from, and with it who makes an address reach
// the node that holds it. The coordinator and the agent both decide from it; neither looks at
// which field of EgressAddresses is set, nor at a provider's name, by itself.
type AddressSource string

const (
	// AddressSourceCloud: a provider configured in the controller allocates the addresses and
	// attaches and moves them in the cloud; the cloud's fabric delivers them.
	AddressSourceCloud AddressSource = "Cloud"
	// AddressSourceStatic: the operator's pools (spec.addresses.static); the coordinator
	// places them with the static provider (no cloud call) and the holder announces each one
	// (gratuitous ARP / unsolicited NA) so the segment's router follows it.
	AddressSourceStatic AddressSource = "Static"
	// AddressSourceNodeInterface: each gateway's own interface address; nothing is allocated,
	// moved or announced.
	AddressSourceNodeInterface AddressSource = "NodeInterface"
)

// ProviderStatic is spec.provider of the EgressIPs of static pools. No provider configured in
// the controller may take this name, so that an EgressIP's provider says its source.
const ProviderStatic = "static"

// Source is the one source the addresses name ("" when none is set, which the schema rejects).
func (a *EgressAddresses) Source() AddressSource {
	switch {
	case a.Cloud != nil:
		return AddressSourceCloud
	case a.Static != nil:
		return AddressSourceStatic
	case a.NodeInterface != nil:
		return AddressSourceNodeInterface
	}
	return ""
}

// Announced reports whether the node holding an address of this source announces it on its
// segment: only static addresses, which no fabric delivers on its own.
func (s AddressSource) Announced() bool { return s == AddressSourceStatic }

// Source is where the address came from: a static pool or a cloud provider.
func (s *EgressIPSpec) Source() AddressSource {
	if s.Provider == ProviderStatic {
		return AddressSourceStatic
	}
	return AddressSourceCloud
}
