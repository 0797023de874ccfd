package azure

import (
	"context"
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
	// PublicIPPrefixLength of the public IP prefix egressd creates per gateway and zone for
	// Uniform scale-set instances (AKS's default pools), which draw their public IPs from it:
	// 28 to 31 (16 to 2 addresses, the sizes Azure allows); default 30 (docs/azure.md, "Uniform
	// scale sets").
	PublicIPPrefixLength int `json:"publicIPPrefixLength,omitempty"`
	// MaxIPConfigurationsPerInterface; default 256.
	MaxIPConfigurationsPerInterface int `json:"maxIPConfigurationsPerInterface,omitempty"`
	// PollFrequency of long-running operations without Retry-After; default 1s.
	PollFrequency providers.Duration `json:"pollFrequency,omitempty"`
	// CallLimits bounds ARM requests per second, every attempt counted (the SDK's retries and
	// the operations' polls included), to stay under ARM's and the network resource
	// provider's throttling (docs/azure.md, "Rate limits"): reads (GET) and mutating requests
	// (PUT, DELETE) have a bucket each. Unset: no limit beyond the SDK's retries, which honour
	// Retry-After. The same shape as the AWS and GCP providers' callLimits.
	CallLimits *providers.RateLimits `json:"callLimits,omitempty"`
}

// Constructor is the registry's entry for this type: the configuration parsed strictly
// (providers.DecodeConfig), then New.
var Constructor = providers.ConstructorOf(Type, func(ctx context.Context, name string, cfg Config) (providers.Provider, error) {
	return New(ctx, name, cfg)
})

const (
	// defaultMaxIPConfigurations per NIC (Azure's documented limit is 256).
	defaultMaxIPConfigurations = 256
	// defaultPollFrequency when ARM sends no Retry-After.
	defaultPollFrequency = time.Second
	// defaultPublicIPPrefixLength: /30, four addresses per gateway and zone. The allowlist is
	// the prefix, so it is sized once for the zone's egress IPs: four covers the usual one or
	// two, with the room a move needs (break before make hands the freed address back only
	// when it is the only free one) and a few more, at four addresses' price.
	defaultPublicIPPrefixLength = 30
	minPublicIPPrefixLength     = 28
	maxPublicIPPrefixLength     = 31
)

// Defaults returns cfg with the defaults of the fields it leaves unset (New applies them).
func (cfg Config) Defaults() Config {
	if cfg.MaxIPConfigurationsPerInterface <= 0 {
		cfg.MaxIPConfigurationsPerInterface = defaultMaxIPConfigurations
	}
	if cfg.PollFrequency <= 0 {
		cfg.PollFrequency = providers.Duration(defaultPollFrequency)
	}
	if cfg.PublicIPPrefixLength == 0 {
		cfg.PublicIPPrefixLength = defaultPublicIPPrefixLength
	}
	return cfg
}
