package plugin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/egressd/egressd/providers"
)

// Type is the provider type the controller's registry knows this package by.
const Type = "plugin"

// Provider implements providers.Provider by calling a plugin server.
type Provider struct {
	name       string
	serverName string
	cluster    string
	base       string
	token      string
	version    string
	hc         *http.Client
}

var _ providers.Provider = (*Provider)(nil)

// Option adjusts how New builds the provider (tests and composition roots).
type Option func(*options)

type options struct{ hc *http.Client }

// WithHTTPClient sends the calls of an http(s):// endpoint through hc.
func WithHTTPClient(hc *http.Client) Option { return func(o *options) { o.hc = hc } }

// New builds the provider named name: it connects to the plugin server and negotiates the
// protocol version.
func New(ctx context.Context, name string, cfg Config, opts ...Option) (*Provider, error) {
	cfg, o, err := providers.Prepare(Type, name, cfg, opts)
	if err != nil {
		return nil, err
	}
	hc := o.hc
	if hc == nil {
		hc = &http.Client{}
	}
	base := strings.TrimSuffix(cfg.Endpoint, "/")
	if path, ok := strings.CutPrefix(cfg.Endpoint, "unix://"); ok {
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
		hc = &http.Client{Transport: tr}
		base = "http://plugin"
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("plugin endpoint %q: want http(s):// or unix://", cfg.Endpoint)
	}
	p := &Provider{name: name, cluster: cfg.ClusterName, base: base, token: cfg.Token, hc: hc}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+Base+"/info", nil)
	if err != nil {
		return nil, fmt.Errorf("negotiating plugin protocol: %w", err)
	}
	var info Info
	if err := p.do(req, &info); err != nil {
		return nil, fmt.Errorf("negotiating plugin protocol with %s: %w", cfg.Endpoint, err)
	}
	if !slices.Contains(info.Versions, Version) {
		return nil, fmt.Errorf("negotiating plugin protocol with %s: server speaks %v, client %s", cfg.Endpoint, info.Versions, Version)
	}
	p.version, p.serverName = Version, info.Name
	return p, nil
}

// Name implements providers.Provider: the configured name.
func (p *Provider) Name() string { return p.name }

// ServerName is the name the plugin server reports for itself (informational).
func (p *Provider) ServerName() string { return p.serverName }
