package aws

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// EC2API is the subset of the EC2 client this provider calls, in the SDK's own signatures,
// so that tests and decorators can stand in for *ec2.Client.
type EC2API interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeInstanceTypes(ctx context.Context, in *ec2.DescribeInstanceTypesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error)
	DescribeSubnets(ctx context.Context, in *ec2.DescribeSubnetsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	DescribeNetworkInterfaces(ctx context.Context, in *ec2.DescribeNetworkInterfacesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error)
	DescribeAddresses(ctx context.Context, in *ec2.DescribeAddressesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeAddressesOutput, error)
	CreateNetworkInterface(ctx context.Context, in *ec2.CreateNetworkInterfaceInput, optFns ...func(*ec2.Options)) (*ec2.CreateNetworkInterfaceOutput, error)
	AttachNetworkInterface(ctx context.Context, in *ec2.AttachNetworkInterfaceInput, optFns ...func(*ec2.Options)) (*ec2.AttachNetworkInterfaceOutput, error)
	ModifyNetworkInterfaceAttribute(ctx context.Context, in *ec2.ModifyNetworkInterfaceAttributeInput, optFns ...func(*ec2.Options)) (*ec2.ModifyNetworkInterfaceAttributeOutput, error)
	DetachNetworkInterface(ctx context.Context, in *ec2.DetachNetworkInterfaceInput, optFns ...func(*ec2.Options)) (*ec2.DetachNetworkInterfaceOutput, error)
	DeleteNetworkInterface(ctx context.Context, in *ec2.DeleteNetworkInterfaceInput, optFns ...func(*ec2.Options)) (*ec2.DeleteNetworkInterfaceOutput, error)
	AssignPrivateIpAddresses(ctx context.Context, in *ec2.AssignPrivateIpAddressesInput, optFns ...func(*ec2.Options)) (*ec2.AssignPrivateIpAddressesOutput, error)
	UnassignPrivateIpAddresses(ctx context.Context, in *ec2.UnassignPrivateIpAddressesInput, optFns ...func(*ec2.Options)) (*ec2.UnassignPrivateIpAddressesOutput, error)
	AssignIpv6Addresses(ctx context.Context, in *ec2.AssignIpv6AddressesInput, optFns ...func(*ec2.Options)) (*ec2.AssignIpv6AddressesOutput, error)
	UnassignIpv6Addresses(ctx context.Context, in *ec2.UnassignIpv6AddressesInput, optFns ...func(*ec2.Options)) (*ec2.UnassignIpv6AddressesOutput, error)
	AllocateAddress(ctx context.Context, in *ec2.AllocateAddressInput, optFns ...func(*ec2.Options)) (*ec2.AllocateAddressOutput, error)
	AssociateAddress(ctx context.Context, in *ec2.AssociateAddressInput, optFns ...func(*ec2.Options)) (*ec2.AssociateAddressOutput, error)
	DisassociateAddress(ctx context.Context, in *ec2.DisassociateAddressInput, optFns ...func(*ec2.Options)) (*ec2.DisassociateAddressOutput, error)
	ReleaseAddress(ctx context.Context, in *ec2.ReleaseAddressInput, optFns ...func(*ec2.Options)) (*ec2.ReleaseAddressOutput, error)
	CreateTags(ctx context.Context, in *ec2.CreateTagsInput, optFns ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	DeleteTags(ctx context.Context, in *ec2.DeleteTagsInput, optFns ...func(*ec2.Options)) (*ec2.DeleteTagsOutput, error)
}

var _ EC2API = (*ec2.Client)(nil)

// IMDSAPI is the subset of the instance metadata client used to find the controller's own
// region and VPC when the configuration does not name them.
type IMDSAPI interface {
	GetRegion(ctx context.Context, in *imds.GetRegionInput, optFns ...func(*imds.Options)) (*imds.GetRegionOutput, error)
	GetMetadata(ctx context.Context, in *imds.GetMetadataInput, optFns ...func(*imds.Options)) (*imds.GetMetadataOutput, error)
}

var _ IMDSAPI = (*imds.Client)(nil)

// newClients returns the EC2 and IMDS clients New uses: those of o, else SDK clients built from
// cfg (the region, when cfg names none, from the SDK's configuration or instance metadata; it is
// written back to cfg).
func newClients(ctx context.Context, cfg *Config, o options) (EC2API, IMDSAPI, error) {
	api, md := o.ec2, o.imds
	if api != nil && ((cfg.Region != "" && cfg.VPC != "") || md != nil) {
		return api, md, nil
	}
	loadOpts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() awssdk.Retryer { return newRetryer(*cfg) }),
	}
	if cfg.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(cfg.Region))
	}
	if o.creds != nil {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(o.creds))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, nil, fmt.Errorf("loading AWS configuration: %w", err)
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
			return nil, nil, fmt.Errorf("reading the region from instance metadata: %w", err)
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
	return api, md, nil
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
