package gcp

import (
	"context"
	"time"

	"google.golang.org/api/option"

	"github.com/egressd/egressd/providers"
)

// Config is the provider's JSON configuration.
type Config struct {
	// ClusterName is the cluster this provider works for (the coordinator sets it from its
	// own clusterName); ListOwned("") lists its resources.
	ClusterName string `json:"clusterName" config:"required"`
	// Project is the default project (nodes' providerIDs name their own). Empty: ask the
	// metadata server for the controller's project.
	Project string `json:"project,omitempty"`
	// Endpoint overrides the Compute endpoint (Private Service Connect, or a simulator).
	Endpoint string `json:"endpoint,omitempty"`
	// WithoutAuthentication sends no credentials (simulators only).
	WithoutAuthentication bool `json:"withoutAuthentication,omitempty"`
	// MaxAliasRangesPerInterface bounds alias IP ranges per NIC. Default 10.
	MaxAliasRangesPerInterface int `json:"maxAliasRangesPerInterface,omitempty"`
	// RetryBudget bounds retries of throttled, 5xx and stale-fingerprint calls per
	// operation step. Default 30s.
	RetryBudget providers.Duration `json:"retryBudget,omitempty"`
	// CallLimits bounds Compute requests per second, every attempt counted (retries included),
	// to stay under the project's API rate quotas: reads (get, list, operations.wait) and
	// mutating methods have a bucket each. Unset: no limit beyond the retry budget. The same
	// shape as the AWS provider's callLimits.
	CallLimits *providers.RateLimits `json:"callLimits,omitempty"`
}

// Constructor is the registry's entry for this type: the configuration parsed strictly
// (providers.DecodeConfig), then New.
var Constructor = providers.ConstructorOf(Type, func(ctx context.Context, name string, cfg Config) (providers.Provider, error) {
	return New(ctx, name, cfg)
})

const (
	// defaultMaxAliasRanges per NIC when the configuration does not say.
	defaultMaxAliasRanges = 10
	// defaultRetryBudget bounds the retries of one step (a read-modify-write of one NIC, one
	// address insert...), not of a whole provider call.
	defaultRetryBudget = 30 * time.Second
)

// Defaults returns cfg with the defaults of the fields it leaves unset (New applies them).
func (cfg Config) Defaults() Config {
	if cfg.MaxAliasRangesPerInterface <= 0 {
		cfg.MaxAliasRangesPerInterface = defaultMaxAliasRanges
	}
	if cfg.RetryBudget <= 0 {
		cfg.RetryBudget = providers.Duration(defaultRetryBudget)
	}
	return cfg
}

func (cfg Config) clientOptions() []option.ClientOption {
	var opts []option.ClientOption
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(cfg.Endpoint))
	}
	if cfg.WithoutAuthentication {
		opts = append(opts, option.WithoutAuthentication())
	}
	return opts
}
