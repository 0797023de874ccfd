// Package aws is the egressd provider for Amazon EC2: egress IPs are secondary private
// addresses on the node's primary ENI or on a dedicated ENI egressd creates and attaches, moved
// between nodes with AssignPrivateIpAddresses+AllowReassignment (the Elastic IP follows the
// address), with Elastic IPs for public egress. It owns every call to the EC2 SDK.
//
// Ownership. Everything egressd creates carries egressd.io/cluster and egressd.io/owner
// tags, and only tagged resources are ever released. A private address cannot be tagged, so
// its ownership is recorded on the interface holding it:
//   - on a dedicated ENI (tagged egressd.io/role=egress-interface and the cluster), every
//     secondary address is the cluster's: the ENI is egressd's alone;
//   - on any other ENI (the node's primary), a tag egressd.io/ip/<address> = <cluster>/<gateway>
//     marks the address as egressd's. The tag is written before the address is assigned, so a
//     crash leaves at worst a tag for an address the ENI does not hold, which is ignored: an
//     address is owned only when the ENI that holds it carries the record.
//
// A move leaves the old holder's record in place (a standing record): moving the address back
// is then one AssignPrivateIpAddresses, with no tag call on the critical path. Standing records
// go when the address is released (every record of it in the VPC), and when an ENI would pass
// EC2's 50 tags: the records of addresses it does not hold are pruned first.
//
// Describe calls are eventually consistent, so the provider also remembers, for its lifetime,
// the dedicated ENIs and Elastic IPs it created: a retry that does not see them yet reuses
// them instead of creating a second one.
package aws

import (
	"context"
	"net/netip"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/egressd/egressd/providers"
)

// Type is the provider type the controller's registry knows this package by.
const Type = "aws"

// Tags only this provider writes, besides egressv1.TagCluster and egressv1.TagOwner, which
// every provider writes.
const (
	TagRole      = "egressd.io/role"
	TagInstance  = "egressd.io/instance"
	TagPrivateIP = "egressd.io/private-ip"
	TagCreated   = "egressd.io/created"
	// TagIPPrefix + address, on a non-dedicated ENI, records the address as a cluster's.
	TagIPPrefix = "egressd.io/ip/"

	roleDedicated = "egress-interface"
	descDedicated = "egressd egress interface"
)

// Provider implements providers.Provider on EC2.
type Provider struct {
	name string
	api  EC2API
	cfg  Config

	mu sync.Mutex
	// dedicated and eips remember what this process created, keyed by cluster/instance and
	// cluster/address: EC2 describes may not show a new resource for a few seconds.
	dedicated map[string]dedicatedENI
	eips      map[string]publicIP
	// doubt holds, by cluster/address, when an AllocateAddress whose answer was lost was
	// sent: it may have allocated an Elastic IP that describes do not show yet.
	doubt map[string]time.Time
	// journal lays this process's own recent placements over what describes show.
	journal *journal
	// types caches instance type limits: they never change for a type name.
	types map[string]typeLimits
}

type dedicatedENI struct {
	iface *iface
}

type publicIP struct {
	Allocation string
	Public     netip.Addr
}

type typeLimits struct{ maxENIs, ipsPerENI int }

var (
	_ providers.Provider        = (*Provider)(nil)
	_ providers.NodesDiscoverer = (*Provider)(nil)
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

// WithStaticCredentials uses a fixed access key (simulators and tests), so that callers outside
// this package need not import the SDK.
func WithStaticCredentials(id, secret string) Option {
	return WithCredentials(credentials.NewStaticCredentialsProvider(id, secret, ""))
}

// New builds the provider named name from cfg (defaults applied here). It reads instance
// metadata only when Region or VPC is missing.
func New(ctx context.Context, name string, cfg Config, opts ...Option) (*Provider, error) {
	cfg, o, err := providers.Prepare(Type, name, cfg, opts)
	if err != nil {
		return nil, err
	}
	api, md, err := newClients(ctx, &cfg, o)
	if err != nil {
		return nil, err
	}
	if cfg.VPC == "" {
		vpc, err := vpcFromIMDS(ctx, md)
		if err != nil {
			return nil, err
		}
		cfg.VPC = vpc
	}
	return &Provider{name: name, api: api, cfg: cfg, dedicated: map[string]dedicatedENI{}, eips: map[string]publicIP{},
		doubt: map[string]time.Time{}, journal: newJournal(time.Duration(cfg.ConsistencyWindow)), types: map[string]typeLimits{}}, nil
}

// Name implements providers.Provider: the configured name.
func (p *Provider) Name() string { return p.name }

// VPC returns the VPC the provider works in.
func (p *Provider) VPC() string { return p.cfg.VPC }
