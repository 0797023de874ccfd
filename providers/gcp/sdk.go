package gcp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	compute "cloud.google.com/go/compute/apiv1"
	computepb "cloud.google.com/go/compute/apiv1/computepb"
	gax "github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"

	"github.com/egressd/egressd/providers"
)

// InstancesAPI is the subset of compute.InstancesClient the provider calls, in the SDK's own
// signatures, so decorators (metrics, rate limiting) and fakes can stand in.
type InstancesAPI interface {
	Get(ctx context.Context, req *computepb.GetInstanceRequest, opts ...gax.CallOption) (*computepb.Instance, error)
	AggregatedList(ctx context.Context, req *computepb.AggregatedListInstancesRequest, opts ...gax.CallOption) *compute.InstancesScopedListPairIterator
	UpdateNetworkInterface(ctx context.Context, req *computepb.UpdateNetworkInterfaceInstanceRequest, opts ...gax.CallOption) (*compute.Operation, error)
	AddAccessConfig(ctx context.Context, req *computepb.AddAccessConfigInstanceRequest, opts ...gax.CallOption) (*compute.Operation, error)
	DeleteAccessConfig(ctx context.Context, req *computepb.DeleteAccessConfigInstanceRequest, opts ...gax.CallOption) (*compute.Operation, error)
}

// AddressesAPI is the subset of compute.AddressesClient the provider calls.
type AddressesAPI interface {
	Get(ctx context.Context, req *computepb.GetAddressRequest, opts ...gax.CallOption) (*computepb.Address, error)
	Insert(ctx context.Context, req *computepb.InsertAddressRequest, opts ...gax.CallOption) (*compute.Operation, error)
	Delete(ctx context.Context, req *computepb.DeleteAddressRequest, opts ...gax.CallOption) (*compute.Operation, error)
	SetLabels(ctx context.Context, req *computepb.SetLabelsAddressRequest, opts ...gax.CallOption) (*compute.Operation, error)
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

// NewClients builds the Compute REST clients with opts (endpoint, credentials), all on one
// HTTP client whose transport sends explicit alias ranges (explicitAliasRanges) and, with
// limits, waits for the call limit before every attempt.
func NewClients(ctx context.Context, limits *providers.RateLimits, opts ...option.ClientOption) (Clients, error) {
	hc, _, err := htransport.NewClient(ctx, opts...)
	if err != nil {
		return Clients{}, fmt.Errorf("creating the Compute clients' transport: %w", err)
	}
	patched := *hc
	patched.Transport = explicitAliasRanges{hc.Transport}
	if limits != nil {
		patched.Transport = newCallLimiter(patched.Transport, *limits)
	}
	opts = append(opts[:len(opts):len(opts)], option.WithHTTPClient(&patched))
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

// explicitAliasRanges makes every instances.updateNetworkInterface body carry aliasIpRanges.
// The method has PATCH semantics: a field left out of the body is left unchanged. The REST
// client marshals with protojson, which leaves out an empty repeated field, so removing a
// NIC's last alias range (a release, or a move off a node's only egress IP) would succeed and
// change nothing (googleapis/google-cloud-python#11931 reports the same through the Python
// client; the discovery-based Go client has ForceSendFields for it). The provider calls this
// method only to set alias ranges, so a body without the field always means "none".
type explicitAliasRanges struct{ base http.RoundTripper }

func (t explicitAliasRanges) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodPatch || !strings.HasSuffix(r.URL.Path, "/updateNetworkInterface") || r.Body == nil {
		return t.base.RoundTrip(r)
	}
	b, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the updateNetworkInterface body: %w", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("updateNetworkInterface body is not a JSON object: %w", err)
	}
	if _, ok := fields["aliasIpRanges"]; !ok {
		fields["aliasIpRanges"] = json.RawMessage("[]")
		if b, err = json.Marshal(fields); err != nil {
			return nil, err
		}
	}
	out := r.Clone(r.Context())
	out.Body = io.NopCloser(bytes.NewReader(b))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	out.ContentLength = int64(len(b))
	return t.base.RoundTrip(out)
}
