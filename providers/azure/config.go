package azure

import (
	"encoding/json"
	"time"

	"github.com/egressd/egressd/providers"
)

// Config is the provider's JSON configuration.
type Config struct {
	// ClusterName is the cluster this provider works for (the coordinator sets it from its
	// own clusterName); ListOwned("") lists its resources.
	ClusterName string `json:"clusterName" config:"required"`
	// SubscriptionID and ResourceGroup (the node resource group, MC_... on AKS) default to
	// the controller VM's own, from IMDS. ResourceGroup is the one listed for garbage
	// collection.
	SubscriptionID string `json:"subscriptionId,omitempty"`
	ResourceGroup  string `json:"resourceGroup,omitempty"`
	// Location for public IPs; default the NIC's.
	Location string `json:"location,omitempty"`
	// Endpoint overrides the ARM endpoint (sovereign clouds, simulators).
	Endpoint string `json:"endpoint,omitempty"`
	// IMDSEndpoint overrides IMDS (simulators).
	IMDSEndpoint string `json:"imdsEndpoint,omitempty"`
	// InsecureAllowCredentialWithHTTP lets the token go over plain HTTP (simulators only).
	InsecureAllowCredentialWithHTTP bool `json:"insecureAllowCredentialWithHTTP,omitempty"`
	// MaxIPConfigurationsPerInterface; default 256.
	MaxIPConfigurationsPerInterface int `json:"maxIPConfigurationsPerInterface,omitempty"`
	// PollFrequency of long-running operations without Retry-After; default 1s.
	PollFrequency providers.Duration `json:"pollFrequency,omitempty"`
}

const (
	// defaultMaxIPConfigurations per NIC (Azure's documented limit is 256).
	defaultMaxIPConfigurations = 256
	// defaultPollFrequency when ARM sends no Retry-After.
	defaultPollFrequency = time.Second
)

// ParseConfig parses the provider's JSON configuration strictly (providers.DecodeConfig): an
// unknown field, a wrong type or a missing required field is an error naming the field.
func ParseConfig(raw json.RawMessage) (Config, error) {
	var cfg Config
	err := providers.DecodeConfig(Type, raw, &cfg)
	return cfg, err
}

func (cfg Config) withDefaults() Config {
	if cfg.MaxIPConfigurationsPerInterface <= 0 {
		cfg.MaxIPConfigurationsPerInterface = defaultMaxIPConfigurations
	}
	if cfg.PollFrequency <= 0 {
		cfg.PollFrequency = providers.Duration(defaultPollFrequency)
	}
	return cfg
}
