package azure

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v7"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
)

// InterfacesAPI is the subset of armnetwork.InterfacesClient the provider calls, in the SDK's
// own signatures.
type InterfacesAPI interface {
	Get(ctx context.Context, resourceGroupName string, networkInterfaceName string, options *armnetwork.InterfacesClientGetOptions) (armnetwork.InterfacesClientGetResponse, error)
	BeginCreateOrUpdate(ctx context.Context, resourceGroupName string, networkInterfaceName string, parameters armnetwork.Interface, options *armnetwork.InterfacesClientBeginCreateOrUpdateOptions) (*runtime.Poller[armnetwork.InterfacesClientCreateOrUpdateResponse], error)
	NewListPager(resourceGroupName string, options *armnetwork.InterfacesClientListOptions) *runtime.Pager[armnetwork.InterfacesClientListResponse]
	// NewListVirtualMachineScaleSetVMNetworkInterfacesPager reads a Uniform scale-set
	// instance's NICs (the network resource provider's read-only view of the instance model).
	NewListVirtualMachineScaleSetVMNetworkInterfacesPager(resourceGroupName string, virtualMachineScaleSetName string, virtualmachineIndex string, options *armnetwork.InterfacesClientListVirtualMachineScaleSetVMNetworkInterfacesOptions) *runtime.Pager[armnetwork.InterfacesClientListVirtualMachineScaleSetVMNetworkInterfacesResponse]
	// NewListVirtualMachineScaleSetNetworkInterfacesPager reads the NICs of every instance of
	// a Uniform scale set (batched discovery).
	NewListVirtualMachineScaleSetNetworkInterfacesPager(resourceGroupName string, virtualMachineScaleSetName string, options *armnetwork.InterfacesClientListVirtualMachineScaleSetNetworkInterfacesOptions) *runtime.Pager[armnetwork.InterfacesClientListVirtualMachineScaleSetNetworkInterfacesResponse]
}

// ScaleSetVMsAPI is the subset of armcompute.VirtualMachineScaleSetVMsClient the provider
// calls: a Uniform scale-set instance's model, read and written (with If-Match on its etag).
type ScaleSetVMsAPI interface {
	Get(ctx context.Context, resourceGroupName string, vmScaleSetName string, instanceID string, options *armcompute.VirtualMachineScaleSetVMsClientGetOptions) (armcompute.VirtualMachineScaleSetVMsClientGetResponse, error)
	BeginUpdate(ctx context.Context, resourceGroupName string, vmScaleSetName string, instanceID string, parameters armcompute.VirtualMachineScaleSetVM, options *armcompute.VirtualMachineScaleSetVMsClientBeginUpdateOptions) (*runtime.Poller[armcompute.VirtualMachineScaleSetVMsClientUpdateResponse], error)
}

// PublicIPPrefixesAPI is the subset of armnetwork.PublicIPPrefixesClient the provider calls:
// the prefixes Uniform instances' public IPs are drawn from.
type PublicIPPrefixesAPI interface {
	Get(ctx context.Context, resourceGroupName string, publicIPPrefixName string, options *armnetwork.PublicIPPrefixesClientGetOptions) (armnetwork.PublicIPPrefixesClientGetResponse, error)
	BeginCreateOrUpdate(ctx context.Context, resourceGroupName string, publicIPPrefixName string, parameters armnetwork.PublicIPPrefix, options *armnetwork.PublicIPPrefixesClientBeginCreateOrUpdateOptions) (*runtime.Poller[armnetwork.PublicIPPrefixesClientCreateOrUpdateResponse], error)
	BeginDelete(ctx context.Context, resourceGroupName string, publicIPPrefixName string, options *armnetwork.PublicIPPrefixesClientBeginDeleteOptions) (*runtime.Poller[armnetwork.PublicIPPrefixesClientDeleteResponse], error)
	NewListPager(resourceGroupName string, options *armnetwork.PublicIPPrefixesClientListOptions) *runtime.Pager[armnetwork.PublicIPPrefixesClientListResponse]
}

// PublicIPAddressesAPI is the subset of armnetwork.PublicIPAddressesClient the provider calls.
type PublicIPAddressesAPI interface {
	Get(ctx context.Context, resourceGroupName string, publicIPAddressName string, options *armnetwork.PublicIPAddressesClientGetOptions) (armnetwork.PublicIPAddressesClientGetResponse, error)
	BeginCreateOrUpdate(ctx context.Context, resourceGroupName string, publicIPAddressName string, parameters armnetwork.PublicIPAddress, options *armnetwork.PublicIPAddressesClientBeginCreateOrUpdateOptions) (*runtime.Poller[armnetwork.PublicIPAddressesClientCreateOrUpdateResponse], error)
	BeginDelete(ctx context.Context, resourceGroupName string, publicIPAddressName string, options *armnetwork.PublicIPAddressesClientBeginDeleteOptions) (*runtime.Poller[armnetwork.PublicIPAddressesClientDeleteResponse], error)
	NewListPager(resourceGroupName string, options *armnetwork.PublicIPAddressesClientListOptions) *runtime.Pager[armnetwork.PublicIPAddressesClientListResponse]
	// GetVirtualMachineScaleSetPublicIPAddress reads the public IP of a Uniform scale-set
	// instance's ipConfiguration (the network resource provider's read-only view).
	GetVirtualMachineScaleSetPublicIPAddress(ctx context.Context, resourceGroupName string, virtualMachineScaleSetName string, virtualmachineIndex string, networkInterfaceName string, ipConfigurationName string, publicIPAddressName string, options *armnetwork.PublicIPAddressesClientGetVirtualMachineScaleSetPublicIPAddressOptions) (armnetwork.PublicIPAddressesClientGetVirtualMachineScaleSetPublicIPAddressResponse, error)
}

// SubnetsAPI is the subset of armnetwork.SubnetsClient the provider calls.
type SubnetsAPI interface {
	Get(ctx context.Context, resourceGroupName string, virtualNetworkName string, subnetName string, options *armnetwork.SubnetsClientGetOptions) (armnetwork.SubnetsClientGetResponse, error)
}

// Clients are the SDK clients the provider uses.
type Clients struct {
	Interfaces        InterfacesAPI
	PublicIPAddresses PublicIPAddressesAPI
	Subnets           SubnetsAPI
	PublicIPPrefixes  PublicIPPrefixesAPI
	ScaleSetVMs       ScaleSetVMsAPI
}

// NewClients builds the armnetwork and armcompute clients for a subscription.
func NewClients(subscription string, cred azcore.TokenCredential, opts *arm.ClientOptions) (Clients, error) {
	nics, err := armnetwork.NewInterfacesClient(subscription, cred, opts)
	if err != nil {
		return Clients{}, fmt.Errorf("creating network interfaces client: %w", err)
	}
	pips, err := armnetwork.NewPublicIPAddressesClient(subscription, cred, opts)
	if err != nil {
		return Clients{}, fmt.Errorf("creating public IP addresses client: %w", err)
	}
	subs, err := armnetwork.NewSubnetsClient(subscription, cred, opts)
	if err != nil {
		return Clients{}, fmt.Errorf("creating subnets client: %w", err)
	}
	prefixes, err := armnetwork.NewPublicIPPrefixesClient(subscription, cred, opts)
	if err != nil {
		return Clients{}, fmt.Errorf("creating public IP prefixes client: %w", err)
	}
	vms, err := armcompute.NewVirtualMachineScaleSetVMsClient(subscription, cred, opts)
	if err != nil {
		return Clients{}, fmt.Errorf("creating scale-set VMs client: %w", err)
	}
	return Clients{Interfaces: nics, PublicIPAddresses: pips, Subnets: subs, PublicIPPrefixes: prefixes, ScaleSetVMs: vms}, nil
}

// clientsFor builds the armnetwork clients of cfg's subscription with DefaultAzureCredential
// (Workload Identity, managed identity, environment, CLI), the provider's retry policy and
// cfg's call limits.
func clientsFor(cfg Config) (Clients, error) {
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return Clients{}, fmt.Errorf("creating Azure credential: %w", err)
	}
	o := ClientOptions(cfg.Endpoint, nil, cfg.InsecureAllowCredentialWithHTTP, 4)
	if cfg.CallLimits != nil {
		o.PerRetryPolicies = append(o.PerRetryPolicies, CallLimitPolicy(*cfg.CallLimits))
	}
	return NewClients(cfg.SubscriptionID, cred, o)
}

// ClientOptions returns ARM client options for endpoint (empty: public Azure) with the
// retry policy the provider relies on (429 and 5xx retried, Retry-After honoured).
func ClientOptions(endpoint string, transport policy.Transporter, insecureHTTP bool, maxRetries int32) *arm.ClientOptions {
	o := &arm.ClientOptions{ClientOptions: policy.ClientOptions{
		Retry:                           policy.RetryOptions{MaxRetries: maxRetries, RetryDelay: 200 * time.Millisecond, MaxRetryDelay: 10 * time.Second},
		InsecureAllowCredentialWithHTTP: insecureHTTP,
	}}
	if endpoint != "" {
		o.Cloud = cloud.Configuration{
			ActiveDirectoryAuthorityHost: endpoint,
			Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
				cloud.ResourceManager: {Endpoint: endpoint, Audience: "https://management.azure.com"},
			},
		}
	}
	if transport != nil {
		o.Transport = transport
	}
	return o
}

// IMDSCompute is the part of the Instance Metadata Service answer the provider uses.
type IMDSCompute struct {
	SubscriptionID    string `json:"subscriptionId"`
	ResourceGroupName string `json:"resourceGroupName"`
	Location          string `json:"location"`
	Name              string `json:"name"`
}

// IMDSAPI reads the controller's own VM metadata.
type IMDSAPI interface {
	Compute(ctx context.Context) (IMDSCompute, error)
}

const defaultIMDSEndpoint = "http://169.254.169.254"

// IMDS is the Azure Instance Metadata Service client.
type IMDS struct {
	// Endpoint is http://169.254.169.254 in Azure (the default); tests point it at a simulator.
	Endpoint string
	Client   *http.Client
}

// Compute implements IMDSAPI.
func (m IMDS) Compute(ctx context.Context) (IMDSCompute, error) {
	ep := m.Endpoint
	if ep == "" {
		ep = defaultIMDSEndpoint
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep+"/metadata/instance?api-version=2021-02-01", nil)
	if err != nil {
		return IMDSCompute{}, fmt.Errorf("reading IMDS: %w", err)
	}
	req.Header.Set("Metadata", "true")
	c := m.Client
	if c == nil {
		// IMDS must never go through a proxy.
		c = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	}
	resp, err := c.Do(req)
	if err != nil {
		return IMDSCompute{}, fmt.Errorf("reading IMDS: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return IMDSCompute{}, fmt.Errorf("reading IMDS: %s: %s", resp.Status, b)
	}
	var doc struct {
		Compute IMDSCompute `json:"compute"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return IMDSCompute{}, fmt.Errorf("parsing IMDS: %w", err)
	}
	return doc.Compute, nil
}
