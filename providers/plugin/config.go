package plugin

import (
	"encoding/json"

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

// ParseConfig parses the provider's JSON configuration strictly (providers.DecodeConfig): an
// unknown field, a wrong type or a missing required field is an error naming the field.
func ParseConfig(raw json.RawMessage) (Config, error) {
	var cfg Config
	err := providers.DecodeConfig(Type, raw, &cfg)
	return cfg, err
}
