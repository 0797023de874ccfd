package plugin

import (
	"context"

	"github.com/egressd/egressd/providers"
)

// Config is the plugin client's JSON configuration.
type Config struct {
	// ClusterName is the cluster this provider works for (the coordinator sets it from its
	// own clusterName).
	ClusterName string `json:"clusterName" config:"required"`
	// Endpoint is the plugin server: http(s)://host:port or unix:///path/to.sock.
	Endpoint string `json:"endpoint" config:"required"`
	// Token is sent as a bearer token when set.
	Token string `json:"token,omitempty"`
}

// Constructor is the registry's entry for this type: the configuration parsed strictly
// (providers.DecodeConfig), then New.
var Constructor = providers.ConstructorOf(Type, func(ctx context.Context, name string, cfg Config) (providers.Provider, error) {
	return New(ctx, name, cfg)
})
