package aws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/egressd/egressd/providers"
)

// Name is the name the provider registers under.
const Name = "aws"

// Config is the provider's JSON configuration.
type Config struct {
	// Region and VPC default to the controller's own, read from instance metadata (IMDSv2).
	Region string `json:"region,omitempty"`
	VPC    string `json:"vpcId,omitempty"`
	// ClusterName is the default cluster tag for ListOwned callers that pass none.
	ClusterName string `json:"clusterName,omitempty"`
	// Endpoint overrides the EC2 endpoint (AWS_ENDPOINT_URL_EC2 works too, via the SDK).
	Endpoint string `json:"endpoint,omitempty"`
	// IMDSEndpoint overrides the instance metadata endpoint.
	IMDSEndpoint string `json:"imdsEndpoint,omitempty"`
	// MaxAttempts per EC2 call, first attempt included (default 5).
	MaxAttempts int `json:"maxAttempts,omitempty"`
	// MaxBackoff between attempts (default 5s).
	MaxBackoff Duration `json:"maxBackoff,omitempty"`
	// RetryBudget is the SDK retry token bucket shared by all calls (default 500, the SDK's):
	// a retry costs 5 tokens, a timeout 10, so a cloud-wide outage stops retry storms.
	RetryBudget int `json:"retryBudget,omitempty"`
	// CallLimits bounds EC2 requests per second, every attempt counted (retries included), to
	// stay under the account's own API limits. Unset: no limit beyond the SDK's retry budget.
	CallLimits *providers.RateLimits `json:"callLimits,omitempty"`
	// DedicatedDeviceIndex is the first device index tried for a dedicated ENI (default 1).
	DedicatedDeviceIndex int `json:"dedicatedDeviceIndex,omitempty"`
}

// Duration is a time.Duration spelled as a Go duration string in JSON ("2s").
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"2s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

const (
	defaultMaxAttempts = 5
	defaultMaxBackoff  = 5 * time.Second
	defaultRetryBudget = 500
)

// Option adjusts how New builds the provider (tests and composition roots).
type Option func(*options)

type options struct {
	ec2   EC2API
	imds  IMDSAPI
	creds awssdk.CredentialsProvider
}

// WithEC2API uses api instead of an SDK client built from the configuration.
func WithEC2API(api EC2API) Option { return func(o *options) { o.ec2 = api } }

// WithIMDS uses api for instance metadata.
func WithIMDS(api IMDSAPI) Option { return func(o *options) { o.imds = api } }

// WithCredentials replaces the default credential chain (env, shared config, web identity /
// IRSA, container and instance roles).
func WithCredentials(c awssdk.CredentialsProvider) Option { return func(o *options) { o.creds = c } }

// Constructor builds the provider from its JSON configuration; it has the
// providers.Constructor signature for the controller's registry.
func Constructor(ctx context.Context, raw json.RawMessage) (providers.Provider, error) {
	var cfg Config
	if len(raw) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return nil, fmt.Errorf("parsing aws provider configuration: %w", err)
		}
	}
	return New(ctx, cfg)
}

// WithStaticCredentials uses a fixed access key (simulators and tests), so that callers outside
// this package need not import the SDK.
func WithStaticCredentials(id, secret string) Option {
	return WithCredentials(credentials.NewStaticCredentialsProvider(id, secret, ""))
}

var _ providers.Constructor = Constructor

// New builds the provider. It reads instance metadata only when Region or VPC is missing.
func New(ctx context.Context, cfg Config, opts ...Option) (*Provider, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = defaultMaxAttempts
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = Duration(defaultMaxBackoff)
	}
	if cfg.RetryBudget <= 0 {
		cfg.RetryBudget = defaultRetryBudget
	}
	if cfg.DedicatedDeviceIndex <= 0 {
		cfg.DedicatedDeviceIndex = 1
	}
	api, md := o.ec2, o.imds
	if api == nil || ((cfg.Region == "" || cfg.VPC == "") && md == nil) {
		loadOpts := []func(*config.LoadOptions) error{
			config.WithRetryer(func() awssdk.Retryer { return newRetryer(cfg) }),
		}
		if cfg.Region != "" {
			loadOpts = append(loadOpts, config.WithRegion(cfg.Region))
		}
		if o.creds != nil {
			loadOpts = append(loadOpts, config.WithCredentialsProvider(o.creds))
		}
		awsCfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
		if err != nil {
			return nil, fmt.Errorf("loading AWS configuration: %w", err)
		}
		if md == nil {
			md = imds.NewFromConfig(awsCfg, func(io *imds.Options) {
				if cfg.IMDSEndpoint != "" {
					io.Endpoint = cfg.IMDSEndpoint
				}
			})
		}
		if cfg.Region == "" {
			cfg.Region = awsCfg.Region
		}
		if cfg.Region == "" {
			r, err := md.GetRegion(ctx, &imds.GetRegionInput{})
			if err != nil {
				return nil, fmt.Errorf("reading the region from instance metadata: %w", err)
			}
			cfg.Region = r.Region
		}
		awsCfg.Region = cfg.Region
		if api == nil {
			api = ec2.NewFromConfig(awsCfg, func(eo *ec2.Options) {
				if cfg.Endpoint != "" {
					eo.BaseEndpoint = awssdk.String(cfg.Endpoint)
				}
				if cfg.CallLimits != nil {
					eo.APIOptions = append(eo.APIOptions, newCallLimiter(*cfg.CallLimits).apiOption)
				}
			})
		}
	}
	if cfg.VPC == "" {
		vpc, err := vpcFromIMDS(ctx, md)
		if err != nil {
			return nil, err
		}
		cfg.VPC = vpc
	}
	return &Provider{api: api, cfg: cfg, dedicated: map[string]dedicatedENI{}, eips: map[string]publicIP{}, types: map[string]typeLimits{}}, nil
}

func newRetryer(cfg Config) awssdk.Retryer {
	return retry.NewStandard(func(so *retry.StandardOptions) {
		so.MaxAttempts = cfg.MaxAttempts
		so.MaxBackoff = time.Duration(cfg.MaxBackoff)
		so.RateLimiter = ratelimit.NewTokenRateLimit(uint(cfg.RetryBudget))
	})
}

func vpcFromIMDS(ctx context.Context, md IMDSAPI) (string, error) {
	mac, err := metadata(ctx, md, "mac")
	if err != nil {
		return "", fmt.Errorf("reading the VPC from instance metadata: %w", err)
	}
	vpc, err := metadata(ctx, md, "network/interfaces/macs/"+mac+"/vpc-id")
	if err != nil {
		return "", fmt.Errorf("reading the VPC from instance metadata: %w", err)
	}
	return vpc, nil
}

func metadata(ctx context.Context, md IMDSAPI, path string) (string, error) {
	out, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", fmt.Errorf("getting %s: %w", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("getting %s: %w", path, errors.New("empty value"))
	}
	return v, nil
}

// throttleOnly retries throttling errors only. It is used for calls that are not idempotent
// on EC2's side (AllocateAddress has no client token): a 5xx or a timeout may mean the call
// was applied, and a blind retry would allocate a second Elastic IP.
type throttleOnly struct{ awssdk.Retryer }

func (r throttleOnly) IsErrorRetryable(err error) bool {
	return retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) == awssdk.TrueTernary &&
		r.Retryer.IsErrorRetryable(err)
}

func (r throttleOnly) GetAttemptToken(ctx context.Context) (func(error) error, error) {
	if v2, ok := r.Retryer.(awssdk.RetryerV2); ok {
		return v2.GetAttemptToken(ctx)
	}
	return func(error) error { return nil }, nil
}

func retryThrottlesOnly(o *ec2.Options) {
	if o.Retryer != nil {
		o.Retryer = throttleOnly{o.Retryer}
	}
}
