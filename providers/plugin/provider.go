package plugin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
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
	token      func() (string, error)
	version    string
	hc         *http.Client
}

var _ providers.Provider = (*Provider)(nil)

// Option adjusts how New builds the provider (tests and composition roots).
type Option func(*options)

type options struct{ hc *http.Client }

// WithHTTPClient sends the calls of an https:// endpoint through hc instead of a client that
// trusts only cfg.CAFile.
func WithHTTPClient(hc *http.Client) Option { return func(o *options) { o.hc = hc } }

// New builds the provider named name: it checks the transport (unix socket, or https with a
// CA file), finds the token, connects to the plugin server and negotiates the protocol
// version.
func New(ctx context.Context, name string, cfg Config, opts ...Option) (*Provider, error) {
	cfg, o, err := providers.Prepare(Type, name, cfg, opts)
	if err != nil {
		return nil, err
	}
	token, err := tokenSource(cfg)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", name, err)
	}
	hc, base, err := transport(cfg, o.hc)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", name, err)
	}
	p := &Provider{name: name, cluster: cfg.ClusterName, base: base, token: token, hc: hc}
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

// tokenSource returns how to get the bearer token on each call.
func tokenSource(cfg Config) (func() (string, error), error) {
	switch {
	case cfg.Token != "":
		return nil, errors.New("token: a token in the provider configuration ends up in the controller's ConfigMap; put it in a Secret and name it with tokenFile (a mounted key) or tokenEnv (env from secretKeyRef)")
	case cfg.TokenFile != "" && cfg.TokenEnv != "":
		return nil, errors.New("tokenFile and tokenEnv are both set; set one")
	case cfg.TokenFile != "":
		read := func() (string, error) {
			b, err := os.ReadFile(cfg.TokenFile)
			if err != nil {
				return "", fmt.Errorf("reading tokenFile: %w", err)
			}
			t := strings.TrimSpace(string(b))
			if t == "" {
				return "", fmt.Errorf("tokenFile %s is empty", cfg.TokenFile)
			}
			return t, nil
		}
		if _, err := read(); err != nil {
			return nil, err
		}
		return read, nil
	case cfg.TokenEnv != "":
		t := strings.TrimSpace(os.Getenv(cfg.TokenEnv))
		if t == "" {
			return nil, fmt.Errorf("tokenEnv: environment variable %s is empty or unset", cfg.TokenEnv)
		}
		return func() (string, error) { return t, nil }, nil
	default:
		return nil, errors.New("tokenFile or tokenEnv is required: the plugin protocol always authenticates the controller with a bearer token from a Secret")
	}
}

// transport builds the HTTP client for the endpoint: a unix socket, or https trusting only
// the CA file. Plain http over TCP is refused.
func transport(cfg Config, hc *http.Client) (*http.Client, string, error) {
	endpoint := strings.TrimSuffix(cfg.Endpoint, "/")
	switch {
	case strings.HasPrefix(endpoint, "unix://"):
		path := strings.TrimPrefix(endpoint, "unix://")
		if path == "" {
			return nil, "", fmt.Errorf("endpoint %q: no socket path", cfg.Endpoint)
		}
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
		return &http.Client{Transport: tr}, "http://plugin", nil
	case strings.HasPrefix(endpoint, "https://"):
		if hc != nil {
			return hc, endpoint, nil
		}
		if cfg.CAFile == "" {
			return nil, "", fmt.Errorf("endpoint %s: caFile is required with https (the CA that signed the plugin's certificate, mounted from a Secret or ConfigMap)", cfg.Endpoint)
		}
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, "", fmt.Errorf("reading caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("caFile %s: no PEM certificate in it", cfg.CAFile)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		return &http.Client{Transport: tr}, endpoint, nil
	case strings.HasPrefix(endpoint, "http://"):
		return nil, "", fmt.Errorf("endpoint %s: plain HTTP over TCP would send the token and every address in clear; use unix:///path/to.sock (a sidecar) or https:// with caFile", cfg.Endpoint)
	default:
		return nil, "", fmt.Errorf("endpoint %q: want unix:///path/to.sock or https://host:port", cfg.Endpoint)
	}
}

// Name implements providers.Provider: the configured name.
func (p *Provider) Name() string { return p.name }

// ServerName is the name the plugin server reports for itself (informational).
func (p *Provider) ServerName() string { return p.serverName }
