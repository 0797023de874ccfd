package aws

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
	// Region and VPC default to the controller's own, read from instance metadata (IMDSv2).
	Region string `json:"region,omitempty"`
	VPC    string `json:"vpcId,omitempty"`
	// Endpoint overrides the EC2 endpoint (AWS_ENDPOINT_URL_EC2 works too, via the SDK).
	Endpoint string `json:"endpoint,omitempty"`
	// IMDSEndpoint overrides the instance metadata endpoint.
	IMDSEndpoint string `json:"imdsEndpoint,omitempty"`
	// MaxAttempts per EC2 call, first attempt included (default 5).
	MaxAttempts int `json:"maxAttempts,omitempty"`
	// MaxBackoff between attempts (default 5s).
	MaxBackoff providers.Duration `json:"maxBackoff,omitempty"`
	// RetryBudget is the SDK retry token bucket shared by all calls (default 500, the SDK's):
	// a retry costs 5 tokens, a timeout 10, so a cloud-wide outage stops retry storms.
	RetryBudget int `json:"retryBudget,omitempty"`
	// CallLimits bounds EC2 requests per second, every attempt counted (retries included), to
	// stay under the account's own API limits. Unset: no limit beyond the SDK's retry budget.
	CallLimits *providers.RateLimits `json:"callLimits,omitempty"`
	// DedicatedDeviceIndex is the first device index tried for a dedicated ENI (default 1).
	DedicatedDeviceIndex int `json:"dedicatedDeviceIndex,omitempty"`
	// ConsistencyWindow is how long the provider trusts its own writes over what EC2's
	// describes show (default 30s; journal.go): longer than EC2's describe lag, which AWS
	// documents without a figure.
	ConsistencyWindow providers.Duration `json:"consistencyWindow,omitempty"`
}

// Constructor is the registry's entry for this type: the configuration parsed strictly
// (providers.DecodeConfig), then New.
var Constructor = providers.ConstructorOf(Type, func(ctx context.Context, name string, cfg Config) (providers.Provider, error) {
	return New(ctx, name, cfg)
})

const (
	defaultMaxAttempts = 5
	defaultMaxBackoff  = 5 * time.Second
	defaultRetryBudget = 500
	// defaultConsistencyWindow: the simulator's AWS profile draws describe lags up to 10 s.
	defaultConsistencyWindow = 30 * time.Second
)

// Defaults returns cfg with the defaults of the fields it leaves unset (New applies them).
func (cfg Config) Defaults() Config {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = defaultMaxAttempts
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = providers.Duration(defaultMaxBackoff)
	}
	if cfg.RetryBudget <= 0 {
		cfg.RetryBudget = defaultRetryBudget
	}
	if cfg.DedicatedDeviceIndex <= 0 {
		cfg.DedicatedDeviceIndex = 1
	}
	if cfg.ConsistencyWindow <= 0 {
		cfg.ConsistencyWindow = providers.Duration(defaultConsistencyWindow)
	}
	return cfg
}
