// Package azure is egressd's Azure provider: egress IPs are static secondary ipConfigurations
// on the node's network interface, written with a PUT of the whole NIC as read (so its
// load-balancer backend pools, application security groups and other ipConfigurations are
// kept) and awaited through the long-running operation. Public egress associates a Standard
// SKU static public IP with the ipConfiguration.
//
// Ownership: ipConfigurations carry no tags, so their name encodes the cluster
// (egressd-<8 hex of sha256(cluster)>-<ip>); public IPs carry the egressd.io/cluster and
// egressd.io/owner tags. Only names and tags of this cluster are ever changed or released.
//
// Nodes of Uniform scale sets (AKS's default pools) serve public egress only (vmss.go): their
// ipConfigurations belong to the instance's compute model, which takes no private address, so
// egressd adds one there with a public IP drawn from a prefix it creates per gateway and zone,
// and the cloud's Dynamic address is the assignment's PublicNATSource (PrivateAddressNotHeld).
//
// It owns the armnetwork and armcompute SDKs; nothing else in egressd imports them.
package azure

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/egressd/egressd/providers"
)

// Type is the provider type the controller's registry knows this package by.
const Type = "azure"

// Provider implements providers.Provider for Azure. Public IPs carry the egressv1.TagCluster
// and egressv1.TagOwner tags.
type Provider struct {
	name    string
	c       Clients
	cfg     Config
	mu      sync.Mutex
	nics    map[string]nicRef     // VM resource ID (lower case) → its primary NIC; a VM's NICs do not change while it exists
	lists   map[string]*nicList   // lower(resource group) → its last NIC list (discovery.go)
	subnets map[string]subnetRead // lower(subnet ID) → its address prefix
	written uint64                // NIC writes started or ended (forgetListed), so a list that overlapped one is not kept
	lks     map[string]*sync.Mutex
	last    MoveWindow
}

// MoveWindow is how long a move left the address on no NIC, as observed by the provider
// (removal operation done → addition operation done). The public IP travels with the
// ipConfiguration, so its window is the same.
type MoveWindow struct {
	IP     netip.Addr
	Window time.Duration
}

var (
	_ providers.Provider        = (*Provider)(nil)
	_ providers.NodesDiscoverer = (*Provider)(nil)
)

// Option adjusts how New builds the provider (tests and composition roots).
type Option func(*options)

type options struct {
	clients *Clients
	imds    IMDSAPI
}

// WithClients uses c instead of armnetwork clients built from the configuration.
func WithClients(c Clients) Option { return func(o *options) { o.clients = &c } }

// WithIMDS reads the controller VM's metadata from md when the configuration does not name
// the subscription or the resource group.
func WithIMDS(md IMDSAPI) Option { return func(o *options) { o.imds = md } }

// New builds the provider named name from cfg (defaults applied here): armnetwork clients with
// DefaultAzureCredential (Workload Identity, managed identity, environment, CLI). It reads IMDS
// only when cfg names no subscription or no resource group.
func New(ctx context.Context, name string, cfg Config, opts ...Option) (*Provider, error) {
	cfg, o, err := providers.Prepare(Type, name, cfg, opts)
	if err != nil {
		return nil, err
	}
	if l := cfg.PublicIPPrefixLength; l < minPublicIPPrefixLength || l > maxPublicIPPrefixLength {
		return nil, fmt.Errorf("azure provider %s: publicIPPrefixLength %d: Azure's IPv4 public IP prefixes are /%d to /%d", name, l, minPublicIPPrefixLength, maxPublicIPPrefixLength)
	}
	if cfg.SubscriptionID == "" || cfg.ResourceGroup == "" {
		md := o.imds
		if md == nil {
			md = IMDS{Endpoint: cfg.IMDSEndpoint}
		}
		c, err := md.Compute(ctx)
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
	var c Clients
	if o.clients != nil {
		c = *o.clients
	} else if c, err = clientsFor(cfg); err != nil {
		return nil, err
	}
	return &Provider{name: name, c: c, cfg: cfg, nics: map[string]nicRef{},
		lists: map[string]*nicList{}, subnets: map[string]subnetRead{}, lks: map[string]*sync.Mutex{}}, nil
}

// Name implements providers.Provider: the configured name.
func (p *Provider) Name() string { return p.name }

func (p *Provider) pollOptions() *runtime.PollUntilDoneOptions {
	return &runtime.PollUntilDoneOptions{Frequency: time.Duration(p.cfg.PollFrequency)}
}

// LastMoveWindow returns the window of the last move.
func (p *Provider) LastMoveWindow() MoveWindow {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}
