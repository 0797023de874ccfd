package gcp

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	compute "cloud.google.com/go/compute/apiv1"
	computepb "cloud.google.com/go/compute/apiv1/computepb"
	"cloud.google.com/go/compute/metadata"
	gax "github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"

	"github.com/egressd/egressd/providers"
)

// InstancesAPI is the subset of compute.InstancesClient the provider calls, in the SDK's own
// signatures, so decorators (metrics, rate limiting) and fakes can stand in.
type InstancesAPI interface {
	Get(ctx context.Context, req *computepb.GetInstanceRequest, opts ...gax.CallOption) (*computepb.Instance, error)
	UpdateNetworkInterface(ctx context.Context, req *computepb.UpdateNetworkInterfaceInstanceRequest, opts ...gax.CallOption) (*compute.Operation, error)
	AddAccessConfig(ctx context.Context, req *computepb.AddAccessConfigInstanceRequest, opts ...gax.CallOption) (*compute.Operation, error)
	DeleteAccessConfig(ctx context.Context, req *computepb.DeleteAccessConfigInstanceRequest, opts ...gax.CallOption) (*compute.Operation, error)
}

// AddressesAPI is the subset of compute.AddressesClient the provider calls.
type AddressesAPI interface {
	Get(ctx context.Context, req *computepb.GetAddressRequest, opts ...gax.CallOption) (*computepb.Address, error)
	Insert(ctx context.Context, req *computepb.InsertAddressRequest, opts ...gax.CallOption) (*compute.Operation, error)
	Delete(ctx context.Context, req *computepb.DeleteAddressRequest, opts ...gax.CallOption) (*compute.Operation, error)
	AggregatedList(ctx context.Context, req *computepb.AggregatedListAddressesRequest, opts ...gax.CallOption) *compute.AddressesScopedListPairIterator
}

// SubnetworksAPI is the subset of compute.SubnetworksClient the provider calls.
type SubnetworksAPI interface {
	Get(ctx context.Context, req *computepb.GetSubnetworkRequest, opts ...gax.CallOption) (*computepb.Subnetwork, error)
}

// ZoneOperationsAPI is the subset of compute.ZoneOperationsClient the provider calls. The
// provider waits with operations.wait (one call that returns when the operation is DONE or
// after about two minutes) rather than the SDK's Operation.Wait, which polls with a one
// second initial backoff and would dominate the move window.
type ZoneOperationsAPI interface {
	Wait(ctx context.Context, req *computepb.WaitZoneOperationRequest, opts ...gax.CallOption) (*computepb.Operation, error)
}

// RegionOperationsAPI is the subset of compute.RegionOperationsClient the provider calls.
type RegionOperationsAPI interface {
	Wait(ctx context.Context, req *computepb.WaitRegionOperationRequest, opts ...gax.CallOption) (*computepb.Operation, error)
}

// MetadataAPI is the subset of the metadata client the provider calls (the controller's own
// project when the configuration does not name one).
type MetadataAPI interface {
	ProjectIDWithContext(ctx context.Context) (string, error)
}

// Clients are the SDK clients the provider uses.
type Clients struct {
	Instances        InstancesAPI
	Addresses        AddressesAPI
	Subnetworks      SubnetworksAPI
	ZoneOperations   ZoneOperationsAPI
	RegionOperations RegionOperationsAPI
}

// Config is the provider's JSON configuration.
type Config struct {
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
	// operation step (Go duration). Default 30s.
	RetryBudget string `json:"retryBudget,omitempty"`
}

// NewFromConfig is the providers.Constructor for "gcp": REST clients with Application Default
// Credentials (GKE Workload Identity on GKE), or none with WithoutAuthentication.
func NewFromConfig(ctx context.Context, raw json.RawMessage) (providers.Provider, error) {
	var cfg Config
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return nil, fmt.Errorf("parsing gcp provider config: %w", err)
		}
	}
	var opts []option.ClientOption
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(cfg.Endpoint))
	}
	if cfg.WithoutAuthentication {
		opts = append(opts, option.WithoutAuthentication())
	}
	clients, err := NewClients(ctx, opts...)
	if err != nil {
		return nil, err
	}
	o := Options{MaxAliasRangesPerInterface: cfg.MaxAliasRangesPerInterface, Project: cfg.Project}
	if cfg.RetryBudget != "" {
		d, err := time.ParseDuration(cfg.RetryBudget)
		if err != nil {
			return nil, fmt.Errorf("parsing gcp retryBudget: %w", err)
		}
		o.RetryBudget = d
	}
	if o.Project == "" {
		pid, err := ProjectFromMetadata(ctx, metadata.NewClient(nil))
		if err != nil {
			return nil, err
		}
		o.Project = pid
	}
	return New(clients, o), nil
}

// NewClients builds the Compute REST clients with opts (endpoint, credentials).
func NewClients(ctx context.Context, opts ...option.ClientOption) (Clients, error) {
	inst, err := compute.NewInstancesRESTClient(ctx, opts...)
	if err != nil {
		return Clients{}, fmt.Errorf("creating instances client: %w", err)
	}
	addr, err := compute.NewAddressesRESTClient(ctx, opts...)
	if err != nil {
		return Clients{}, fmt.Errorf("creating addresses client: %w", err)
	}
	sub, err := compute.NewSubnetworksRESTClient(ctx, opts...)
	if err != nil {
		return Clients{}, fmt.Errorf("creating subnetworks client: %w", err)
	}
	zops, err := compute.NewZoneOperationsRESTClient(ctx, opts...)
	if err != nil {
		return Clients{}, fmt.Errorf("creating zone operations client: %w", err)
	}
	rops, err := compute.NewRegionOperationsRESTClient(ctx, opts...)
	if err != nil {
		return Clients{}, fmt.Errorf("creating region operations client: %w", err)
	}
	return Clients{Instances: inst, Addresses: addr, Subnetworks: sub, ZoneOperations: zops, RegionOperations: rops}, nil
}

// ProjectFromMetadata asks the metadata server (GCE_METADATA_HOST when set) for the project.
func ProjectFromMetadata(ctx context.Context, md MetadataAPI) (string, error) {
	pid, err := md.ProjectIDWithContext(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the project from the metadata server: %w", err)
	}
	return pid, nil
}
