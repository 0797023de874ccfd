package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/egressd/egressd/providers"
)

func (p *Provider) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+Base+"/"+p.version+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return p.do(req, out)
}

func (p *Provider) do(req *http.Request, out any) error {
	token, err := p.token()
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return errorOf(resp.Status, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// DiscoverNode implements providers.Provider.
func (p *Provider) DiscoverNode(ctx context.Context, node providers.NodeRef) (*providers.NodeInfo, error) {
	out := new(providers.NodeInfo)
	if err := p.call(ctx, PathDiscoverNode, node, out); err != nil {
		return nil, fmt.Errorf("discovering node %s: %w", node.Name, err)
	}
	return out, nil
}

// EnsureIP implements providers.Provider.
func (p *Provider) EnsureIP(ctx context.Context, req providers.EnsureRequest) (*providers.Assignment, error) {
	out := new(providers.Assignment)
	if err := p.call(ctx, PathEnsureIP, req, out); err != nil {
		return nil, fmt.Errorf("ensuring %s on %s: %w", req.IP, req.Node.Name, err)
	}
	return out, nil
}

// MoveIP implements providers.Provider.
func (p *Provider) MoveIP(ctx context.Context, req providers.MoveRequest) (*providers.Assignment, error) {
	out := new(providers.Assignment)
	if err := p.call(ctx, PathMoveIP, req, out); err != nil {
		return nil, fmt.Errorf("moving %s to %s: %w", req.Current.IP, req.To.Name, err)
	}
	return out, nil
}

// ReleaseIP implements providers.Provider.
func (p *Provider) ReleaseIP(ctx context.Context, req providers.ReleaseRequest) error {
	if err := p.call(ctx, PathReleaseIP, req, nil); err != nil {
		return fmt.Errorf("releasing %s: %w", req.Current.IP, err)
	}
	return nil
}

// ListOwned implements providers.Provider.
func (p *Provider) ListOwned(ctx context.Context, cluster string) ([]providers.OwnedResource, error) {
	if cluster == "" {
		cluster = p.cluster
	}
	var out ListOwnedResponse
	if err := p.call(ctx, PathListOwned, ListOwnedRequest{Cluster: cluster}, &out); err != nil {
		return nil, fmt.Errorf("listing resources of cluster %s: %w", cluster, err)
	}
	return out.Resources, nil
}

// ReleaseOwned implements providers.Provider.
func (p *Provider) ReleaseOwned(ctx context.Context, res providers.OwnedResource) error {
	if err := p.call(ctx, PathReleaseOwned, res, nil); err != nil {
		return fmt.Errorf("releasing %s %s: %w", res.Kind, res.ID, err)
	}
	return nil
}
