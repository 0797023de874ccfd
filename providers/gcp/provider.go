// Package gcp is egressd's Compute Engine provider: egress IPs are /32 alias IP ranges on a
// node's network interface (instances.updateNetworkInterface with the NIC fingerprint), each
// backed by a labelled static internal address reservation that both keeps the address from
// being handed to another VM and marks it as this cluster's for garbage collection (alias
// ranges themselves carry no labels). Public egress binds a labelled static external address
// through the NIC's single access config.
//
// It owns the cloud.google.com/go/compute SDK; nothing else in egressd imports it.
package gcp

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"cloud.google.com/go/compute/metadata"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

// Type is the provider type the controller's registry knows this package by.
const Type = "gcp"

// Label keys. GCP label keys allow only lowercase letters, digits, '-' and '_', so the tag keys
// every provider writes (egressv1.TagCluster, egressv1.TagOwner) are spelled with '-' for '.'
// and '/': egressd-io-cluster, egressd-io-owner.
var (
	LabelCluster = labelKey(egressv1.TagCluster)
	LabelOwner   = labelKey(egressv1.TagOwner)
)

// LabelConflict marks (with the cluster as its value) an internal reservation egressd inserted
// for an IP that another resource turned out to hold and that Compute would not delete: it
// carries no cluster label, so no egressd counts it as its own; an operator deletes it.
const LabelConflict = "egressd-io-conflict"

// accessConfigPrefix starts the name of the access config egressd creates; the rest is the
// egress IP it serves, so a NIC's access config says which egress IP it belongs to.
const accessConfigPrefix = "egressd-nat-"

// Provider implements providers.Provider for GCP.
type Provider struct {
	name       string
	cluster    string
	c          Clients
	project    string
	maxAliases int
	budget     time.Duration

	locksMu sync.Mutex
	locks   map[string]*sync.Mutex
	// gens counts this provider's mutations per instance, so that a read taken before the
	// instance lock is known to be still current (no extra instances.get) or is discarded.
	gens map[string]uint64

	subnetsMu sync.Mutex
	subnets   map[string]subnetworkRead // self link → last read

	statsMu sync.Mutex
	last    MoveWindow
}

// MoveWindow is how long a move left the address (and its public IP) on no instance, as the
// provider observed it: from the removal operation reported DONE to the addition reported
// DONE.
type MoveWindow struct {
	IP      netip.Addr
	Private time.Duration
	Public  time.Duration
}

var _ providers.Provider = (*Provider)(nil)

// Option adjusts how New builds the provider (tests and composition roots).
type Option func(*options)

type options struct {
	clients  *Clients
	metadata MetadataAPI
}

// WithClients uses c instead of REST clients built from the configuration.
func WithClients(c Clients) Option { return func(o *options) { o.clients = &c } }

// WithMetadata asks md for the project when the configuration names none.
func WithMetadata(md MetadataAPI) Option { return func(o *options) { o.metadata = md } }

// New builds the provider named name from cfg (defaults applied here): REST clients with
// Application Default Credentials (GKE Workload Identity on GKE), or none with
// WithoutAuthentication. It asks the metadata server for the project only when cfg names none.
func New(ctx context.Context, name string, cfg Config, opts ...Option) (*Provider, error) {
	cfg, o, err := providers.Prepare(Type, name, cfg, opts)
	if err != nil {
		return nil, err
	}
	var c Clients
	if o.clients != nil {
		c = *o.clients
	} else if c, err = NewClients(ctx, cfg.CallLimits, cfg.clientOptions()...); err != nil {
		return nil, err
	}
	if cfg.Project == "" {
		md := o.metadata
		if md == nil {
			md = metadata.NewClient(nil)
		}
		pid, err := ProjectFromMetadata(ctx, md)
		if err != nil {
			return nil, err
		}
		cfg.Project = pid
	}
	return &Provider{name: name, cluster: cfg.ClusterName, c: c, project: cfg.Project, maxAliases: cfg.MaxAliasRangesPerInterface,
		budget: time.Duration(cfg.RetryBudget), locks: map[string]*sync.Mutex{}, gens: map[string]uint64{}, subnets: map[string]subnetworkRead{}}, nil
}

// Name implements providers.Provider: the configured name.
func (p *Provider) Name() string { return p.name }

// LastMoveWindow returns the window of the last MoveIP that moved an address.
func (p *Provider) LastMoveWindow() MoveWindow {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	return p.last
}
