package static

import (
	"context"

	"github.com/egressd/egressd/providers"
)

// Config is the provider's JSON configuration.
type Config struct {
	// ClusterName is the cluster this provider works for (the coordinator sets it from its
	// own clusterName).
	ClusterName string `json:"clusterName" config:"required"`
	Pools       []Pool `json:"pools" config:"required"`
	// MaxIPsPerNode bounds the addresses one node holds (0: unbounded).
	MaxIPsPerNode int `json:"maxIPsPerNode,omitempty"`
}

// Constructor is the registry's entry for this type: the configuration parsed strictly
// (providers.DecodeConfig), then New.
var Constructor = providers.ConstructorOf(Type, func(ctx context.Context, name string, cfg Config) (providers.Provider, error) {
	return New(ctx, name, cfg)
})

// Pool is a zone's pre-provisioned addresses.
type Pool struct {
	Zone string `json:"zone"`
	// Addresses are single addresses ("192.0.2.10") or prefixes ("192.0.2.16/28"), every
	// address of which is usable: the operator lists what is free on the segment.
	Addresses []string `json:"addresses"`
	// Interface the agent mounts and announces the addresses on ("eth0").
	Interface string `json:"interface,omitempty"`
	// Subnet is the segment's prefix, for the agent's routes; informational here.
	Subnet string `json:"subnet,omitempty"`
}
