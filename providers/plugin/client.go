package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/egressd/egressd/providers"
)

// Config is the plugin client's JSON configuration.
type Config struct {
	// Endpoint is the plugin server: http(s)://host:port or unix:///path/to.sock.
	Endpoint string `json:"endpoint"`
	// Name overrides the provider name the server reports.
	Name string `json:"name,omitempty"`
	// Token is sent as a bearer token when set.
	Token string `json:"token,omitempty"`
}

// Client implements providers.Provider by calling a plugin server.
type Client struct {
	base    string
	name    string
	token   string
	version string
	hc      *http.Client
}

var _ providers.Provider = (*Client)(nil)

// Constructor has the providers.Constructor signature.
func Constructor(ctx context.Context, raw json.RawMessage) (providers.Provider, error) {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("parsing plugin provider configuration: %w", err)
	}
	return New(ctx, cfg, nil)
}

var _ providers.Constructor = Constructor

// New connects to a plugin server and negotiates the protocol version. hc may be nil.
func New(ctx context.Context, cfg Config, hc *http.Client) (*Client, error) {
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
	c := &Client{base: base, token: cfg.Token, hc: hc}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+Base+"/info", nil)
	if err != nil {
		return nil, fmt.Errorf("negotiating plugin protocol: %w", err)
	}
	var info Info
	if err := c.do(req, &info); err != nil {
		return nil, fmt.Errorf("negotiating plugin protocol with %s: %w", cfg.Endpoint, err)
	}
	if !slices.Contains(info.Versions, Version) {
		return nil, fmt.Errorf("negotiating plugin protocol with %s: server speaks %v, client %s", cfg.Endpoint, info.Versions, Version)
	}
	c.version, c.name = Version, info.Name
	if cfg.Name != "" {
		c.name = cfg.Name
	}
	return c, nil
}

// Name implements providers.Provider.
func (c *Client) Name() string { return c.name }

func (c *Client) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+Base+"/"+c.version+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, out)
}

func (c *Client) do(req *http.Request, out any) error {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var eb ErrorBody
		if json.Unmarshal(b, &eb) != nil || eb.Error.Message == "" {
			return fmt.Errorf("plugin answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		msg := errors.New(eb.Error.Message)
		if k, ok := kindNames[eb.Error.Kind]; ok {
			return &providers.Error{Kind: k, Op: "plugin " + eb.Error.Op, Code: eb.Error.Code, RetryAfter: retryAfter(eb.Error.RetryAfterMS), Err: msg}
		}
		return fmt.Errorf("plugin %s: %w", eb.Error.Op, msg)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// DiscoverNode implements providers.Provider.
func (c *Client) DiscoverNode(ctx context.Context, node providers.NodeRef) (*providers.NodeInfo, error) {
	out := new(providers.NodeInfo)
	if err := c.call(ctx, PathDiscoverNode, node, out); err != nil {
		return nil, fmt.Errorf("discovering node %s: %w", node.Name, err)
	}
	return out, nil
}

// EnsureIP implements providers.Provider.
func (c *Client) EnsureIP(ctx context.Context, req providers.EnsureRequest) (*providers.Assignment, error) {
	out := new(providers.Assignment)
	if err := c.call(ctx, PathEnsureIP, req, out); err != nil {
		return nil, fmt.Errorf("ensuring %s on %s: %w", req.IP, req.Node.Name, err)
	}
	return out, nil
}

// MoveIP implements providers.Provider.
func (c *Client) MoveIP(ctx context.Context, req providers.MoveRequest) (*providers.Assignment, error) {
	out := new(providers.Assignment)
	if err := c.call(ctx, PathMoveIP, req, out); err != nil {
		return nil, fmt.Errorf("moving %s to %s: %w", req.Current.IP, req.To.Name, err)
	}
	return out, nil
}

// ReleaseIP implements providers.Provider.
func (c *Client) ReleaseIP(ctx context.Context, req providers.ReleaseRequest) error {
	if err := c.call(ctx, PathReleaseIP, req, nil); err != nil {
		return fmt.Errorf("releasing %s: %w", req.Current.IP, err)
	}
	return nil
}

// ListOwned implements providers.Provider.
func (c *Client) ListOwned(ctx context.Context, cluster string) ([]providers.OwnedResource, error) {
	var out ListOwnedResponse
	if err := c.call(ctx, PathListOwned, ListOwnedRequest{Cluster: cluster}, &out); err != nil {
		return nil, fmt.Errorf("listing resources of cluster %s: %w", cluster, err)
	}
	return out.Resources, nil
}

// ReleaseOwned implements providers.Provider.
func (c *Client) ReleaseOwned(ctx context.Context, res providers.OwnedResource) error {
	if err := c.call(ctx, PathReleaseOwned, res, nil); err != nil {
		return fmt.Errorf("releasing %s %s: %w", res.Kind, res.ID, err)
	}
	return nil
}
