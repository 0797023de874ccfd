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
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/egressd/egressd/providers"
)

// InterfacesAPI is the subset of armnetwork.InterfacesClient the provider calls, in the SDK's
// own signatures.
type InterfacesAPI interface {
	Get(ctx context.Context, resourceGroupName string, networkInterfaceName string, options *armnetwork.InterfacesClientGetOptions) (armnetwork.InterfacesClientGetResponse, error)
	BeginCreateOrUpdate(ctx context.Context, resourceGroupName string, networkInterfaceName string, parameters armnetwork.Interface, options *armnetwork.InterfacesClientBeginCreateOrUpdateOptions) (*runtime.Poller[armnetwork.InterfacesClientCreateOrUpdateResponse], error)
	NewListPager(resourceGroupName string, options *armnetwork.InterfacesClientListOptions) *runtime.Pager[armnetwork.InterfacesClientListResponse]
}

// PublicIPAddressesAPI is the subset of armnetwork.PublicIPAddressesClient the provider calls.
type PublicIPAddressesAPI interface {
	Get(ctx context.Context, resourceGroupName string, publicIPAddressName string, options *armnetwork.PublicIPAddressesClientGetOptions) (armnetwork.PublicIPAddressesClientGetResponse, error)
	BeginCreateOrUpdate(ctx context.Context, resourceGroupName string, publicIPAddressName string, parameters armnetwork.PublicIPAddress, options *armnetwork.PublicIPAddressesClientBeginCreateOrUpdateOptions) (*runtime.Poller[armnetwork.PublicIPAddressesClientCreateOrUpdateResponse], error)
	BeginDelete(ctx context.Context, resourceGroupName string, publicIPAddressName string, options *armnetwork.PublicIPAddressesClientBeginDeleteOptions) (*runtime.Poller[armnetwork.PublicIPAddressesClientDeleteResponse], error)
	NewListPager(resourceGroupName string, options *armnetwork.PublicIPAddressesClientListOptions) *runtime.Pager[armnetwork.PublicIPAddressesClientListResponse]
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
}

// NewClients builds the armnetwork clients for a subscription.
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
	return Clients{Interfaces: nics, PublicIPAddresses: pips, Subnets: subs}, nil
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

// IMDS is the Azure Instance Metadata Service client.
type IMDS struct {
	// Endpoint is http://169.254.169.254 in Azure; tests point it at a simulator.
	Endpoint string
	Client   *http.Client
}

// Compute implements IMDSAPI.
func (m IMDS) Compute(ctx context.Context) (IMDSCompute, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.Endpoint+"/metadata/instance?api-version=2021-02-01", nil)
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

// Config is the provider's JSON configuration.
type Config struct {
	// SubscriptionID and ResourceGroup (the node resource group, MC_... on AKS) default to
	// the controller VM's own, from IMDS.
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
	PollFrequency string `json:"pollFrequency,omitempty"`
}

// NewFromConfig is the providers.Constructor for "azure": DefaultAzureCredential (Workload
// Identity, managed identity, environment, CLI).
func NewFromConfig(ctx context.Context, raw json.RawMessage) (providers.Provider, error) {
	var cfg Config
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return nil, fmt.Errorf("parsing azure provider config: %w", err)
		}
	}
	if cfg.SubscriptionID == "" || cfg.ResourceGroup == "" {
		ep := cfg.IMDSEndpoint
		if ep == "" {
			ep = "http://169.254.169.254"
		}
		c, err := (IMDS{Endpoint: ep}).Compute(ctx)
		if err != nil {
			return nil, err
		}
		if cfg.SubscriptionID == "" {
			cfg.SubscriptionID = c.SubscriptionID
		}
		if cfg.ResourceGroup == "" {
			cfg.ResourceGroup = c.ResourceGroupName
		}
		if cfg.Location == "" {
			cfg.Location = c.Location
		}
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("creating Azure credential: %w", err)
	}
	clients, err := NewClients(cfg.SubscriptionID, cred, ClientOptions(cfg.Endpoint, nil, cfg.InsecureAllowCredentialWithHTTP, 4))
	if err != nil {
		return nil, err
	}
	o := Options{SubscriptionID: cfg.SubscriptionID, ResourceGroup: cfg.ResourceGroup, Location: cfg.Location, MaxIPConfigurations: cfg.MaxIPConfigurationsPerInterface}
	if cfg.PollFrequency != "" {
		d, err := time.ParseDuration(cfg.PollFrequency)
		if err != nil {
			return nil, fmt.Errorf("parsing azure pollFrequency: %w", err)
		}
		o.PollFrequency = d
	}
	return New(clients, o), nil
}
