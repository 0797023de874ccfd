package plugin_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws/awssimtest"
	"github.com/egressd/egressd/providers/azure/azuresimtest"
	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/providers/gcp/gcpsimtest"
	"github.com/egressd/egressd/providers/plugin"
)

func wrap(t *testing.T, p providers.Provider) providers.Provider {
	srv := httptest.NewServer(plugin.NewHandler(p, plugin.WithToken("s3cret")))
	t.Cleanup(srv.Close)
	c, err := plugin.New(context.Background(), "plugin-"+p.Name(), plugin.Config{ClusterName: "c1", Endpoint: srv.URL, Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "plugin-"+p.Name() || c.ServerName() != p.Name() {
		t.Fatalf("name %q, server name %q; want plugin-%s, %s", c.Name(), c.ServerName(), p.Name(), p.Name())
	}
	return c
}

// TestConformance runs the suite through the plugin protocol, wrapping each cloud's provider
// on its simulator (every simtest harness takes the same Wrap).
func TestConformance(t *testing.T) {
	for name, h := range map[string]conformance.Harness{
		"aws":   awssimtest.Harness{Wrap: wrap},
		"gcp":   gcpsimtest.Harness{Wrap: wrap},
		"azure": azuresimtest.Harness{Wrap: wrap},
	} {
		t.Run(name, func(t *testing.T) { conformance.Run(t, h) })
	}
}

type failing struct{ providers.Provider }

func (failing) Name() string { return "failing" }
func (failing) EnsureIP(context.Context, providers.EnsureRequest) (*providers.Assignment, error) {
	return nil, &providers.Error{Kind: providers.KindThrottled, Op: "x", Code: "RequestLimitExceeded", RetryAfter: 1500 * time.Millisecond}
}

func TestErrorsAndNegotiation(t *testing.T) {
	srv := httptest.NewServer(plugin.NewHandler(failing{}))
	defer srv.Close()
	ctx := context.Background()
	c, err := plugin.New(ctx, "p", plugin.Config{Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.EnsureIP(ctx, providers.EnsureRequest{IP: netip.MustParseAddr("10.0.0.1")})
	if !providers.IsThrottled(err) || providers.RetryAfter(err) != 1500*time.Millisecond {
		t.Fatalf("error lost its kind or hint on the wire: %v", err)
	}
	var pe *providers.Error
	if !asErr(err, &pe) || pe.Code != "RequestLimitExceeded" {
		t.Fatalf("code lost: %v", err)
	}

	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"name":"future","versions":["v7"]}`))
	}))
	defer old.Close()
	if _, err := plugin.New(ctx, "p", plugin.Config{Endpoint: old.URL}); err == nil {
		t.Fatal("negotiated with a server that does not speak v1")
	}
	tok := httptest.NewServer(plugin.NewHandler(failing{}, plugin.WithToken("t")))
	defer tok.Close()
	if _, err := plugin.New(ctx, "p", plugin.Config{Endpoint: tok.URL}); !providers.IsPermission(err) {
		t.Fatalf("no token: want Permission, got %v", err)
	}
}

func asErr(err error, target **providers.Error) bool { return errors.As(err, target) }
