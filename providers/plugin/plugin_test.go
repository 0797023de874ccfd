package plugin_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws/awssimtest"
	"github.com/egressd/egressd/providers/azure/azuresimtest"
	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/providers/gcp/gcpsimtest"
	"github.com/egressd/egressd/providers/plugin"
)

// shortDir is a temporary directory whose paths fit a unix socket address (at most 107
// bytes, which t.TempDir under a long test name can exceed).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "egp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// serveUnix serves h on a unix socket, as a sidecar does, and returns the endpoint.
func serveUnix(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(shortDir(t), "plugin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "unix://" + sock
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func wrap(t *testing.T, p providers.Provider) providers.Provider {
	endpoint := serveUnix(t, plugin.NewHandler(p, plugin.WithToken("s3cret")))
	tokenFile := writeFile(t, shortDir(t), "token", "s3cret\n")
	c, err := plugin.New(context.Background(), "plugin-"+p.Name(), plugin.Config{ClusterName: "c1", Endpoint: endpoint, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "plugin-"+p.Name() || c.ServerName() != p.Name() {
		t.Fatalf("name %q, server name %q; want plugin-%s, %s", c.Name(), c.ServerName(), p.Name(), p.Name())
	}
	return c
}

// TestConformance runs the suite through the plugin protocol over a unix socket, wrapping
// each cloud's provider on its simulator (every simtest harness takes the same Wrap).
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

// counting counts the requests that reach a handler.
func counting(n *atomic.Int32, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}

// TestTransports covers how the client reaches a plugin: unix socket or TLS verified
// against a CA file, with a token from a file or the environment, and what it refuses.
func TestTransports(t *testing.T) {
	ctx := context.Background()
	dir := shortDir(t)
	goodToken := writeFile(t, dir, "token", "s3cret\n")
	wrongToken := writeFile(t, dir, "wrong", "guess")
	emptyToken := writeFile(t, dir, "empty", "\n")
	t.Setenv("EGRESSD_TEST_PLUGIN_TOKEN", "s3cret")

	var tlsHits, plainHits atomic.Int32
	tlsSrv := httptest.NewTLSServer(counting(&tlsHits, plugin.NewHandler(failing{}, plugin.WithToken("s3cret"))))
	t.Cleanup(tlsSrv.Close)
	ca := writeFile(t, dir, "ca.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw})))
	// A CA that did not sign tlsSrv's certificate (every httptest server shares one).
	otherCA := writeFile(t, dir, "other.crt", selfSignedCA(t))
	notPEM := writeFile(t, dir, "not.pem", "hello")
	plain := httptest.NewServer(counting(&plainHits, plugin.NewHandler(failing{}, plugin.WithToken("s3cret"))))
	t.Cleanup(plain.Close)
	sock := serveUnix(t, plugin.NewHandler(failing{}, plugin.WithToken("s3cret")))
	tokenless := serveUnix(t, plugin.NewHandler(failing{}))

	cases := []struct {
		name string
		cfg  plugin.Config
		// err: a substring of New's error, "" for success; permission: the error is a
		// providers Permission error (the server's 401).
		err        string
		permission bool
	}{
		{name: "unix socket, token file", cfg: plugin.Config{Endpoint: sock, TokenFile: goodToken}},
		{name: "unix socket, token from the environment", cfg: plugin.Config{Endpoint: sock, TokenEnv: "EGRESSD_TEST_PLUGIN_TOKEN"}},
		{name: "unix socket, wrong token", cfg: plugin.Config{Endpoint: sock, TokenFile: wrongToken}, err: "missing or wrong bearer token", permission: true},
		{name: "server without a token refuses everyone", cfg: plugin.Config{Endpoint: tokenless, TokenFile: goodToken}, err: "no token configured", permission: true},
		{name: "TLS verified against the CA file", cfg: plugin.Config{Endpoint: tlsSrv.URL, TokenFile: goodToken, CAFile: ca}},
		{name: "TLS, wrong token", cfg: plugin.Config{Endpoint: tlsSrv.URL, TokenFile: wrongToken, CAFile: ca}, err: "missing or wrong bearer token", permission: true},
		{name: "TLS signed by another CA", cfg: plugin.Config{Endpoint: tlsSrv.URL, TokenFile: goodToken, CAFile: otherCA}, err: "certificate"},
		{name: "TLS without caFile", cfg: plugin.Config{Endpoint: tlsSrv.URL, TokenFile: goodToken}, err: "caFile is required with https"},
		{name: "caFile without a certificate", cfg: plugin.Config{Endpoint: tlsSrv.URL, TokenFile: goodToken, CAFile: notPEM}, err: "no PEM certificate"},
		{name: "plain HTTP over TCP", cfg: plugin.Config{Endpoint: plain.URL, TokenFile: goodToken}, err: "plain HTTP over TCP would send the token"},
		{name: "token inline in the configuration", cfg: plugin.Config{Endpoint: sock, Token: "s3cret"}, err: "ends up in the controller's ConfigMap"},
		{name: "no token", cfg: plugin.Config{Endpoint: sock}, err: "tokenFile or tokenEnv is required"},
		{name: "both token sources", cfg: plugin.Config{Endpoint: sock, TokenFile: goodToken, TokenEnv: "EGRESSD_TEST_PLUGIN_TOKEN"}, err: "set one"},
		{name: "empty token file", cfg: plugin.Config{Endpoint: sock, TokenFile: emptyToken}, err: "is empty"},
		{name: "unset token variable", cfg: plugin.Config{Endpoint: sock, TokenEnv: "EGRESSD_TEST_PLUGIN_UNSET"}, err: "empty or unset"},
		{name: "unknown scheme", cfg: plugin.Config{Endpoint: "tcp://127.0.0.1:1", TokenFile: goodToken}, err: "want unix:///path/to.sock or https://host:port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.ClusterName = "c1"
			c, err := plugin.New(ctx, "p", tc.cfg)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("New: error %v, want one containing %q", err, tc.err)
			case tc.permission != providers.IsPermission(err):
				t.Fatalf("New: error %v: Permission %v, want %v", err, providers.IsPermission(err), tc.permission)
			}
			if err != nil {
				return
			}
			// A call after negotiation carries the token too, and errors keep their kind.
			if _, err := c.EnsureIP(ctx, providers.EnsureRequest{IP: netip.MustParseAddr("10.0.0.1")}); !providers.IsThrottled(err) {
				t.Fatalf("EnsureIP: %v, want the plugin's Throttled", err)
			}
		})
	}
	if n := plainHits.Load(); n != 0 {
		t.Errorf("%d requests reached the plain-HTTP server; the client must refuse before sending", n)
	}
	if tlsHits.Load() == 0 {
		t.Error("no request reached the TLS server")
	}
}

// TestTokenFileRotation: a rotated Secret (the kubelet rewrites the mounted file) takes
// effect on the next call, without rebuilding the provider.
func TestTokenFileRotation(t *testing.T) {
	ctx := context.Background()
	var want atomic.Value
	want.Store("one")
	inner := plugin.NewHandler(failing{}, plugin.WithToken("one"))
	rotated := plugin.NewHandler(failing{}, plugin.WithToken("two"))
	endpoint := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if want.Load() == "one" {
			inner.ServeHTTP(w, r)
			return
		}
		rotated.ServeHTTP(w, r)
	}))
	dir := shortDir(t)
	tokenFile := writeFile(t, dir, "token", "one")
	c, err := plugin.New(ctx, "p", plugin.Config{ClusterName: "c1", Endpoint: endpoint, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	want.Store("two")
	if _, err := c.EnsureIP(ctx, providers.EnsureRequest{IP: netip.MustParseAddr("10.0.0.1")}); !providers.IsPermission(err) {
		t.Fatalf("old token after the server rotated: %v, want Permission", err)
	}
	writeFile(t, dir, "token", "two\n")
	if _, err := c.EnsureIP(ctx, providers.EnsureRequest{IP: netip.MustParseAddr("10.0.0.1")}); !providers.IsThrottled(err) {
		t.Fatalf("after the file rotated: %v, want the plugin's Throttled", err)
	}
}

func TestErrorsAndNegotiation(t *testing.T) {
	ctx := context.Background()
	tokenFile := writeFile(t, shortDir(t), "token", "s3cret")
	c, err := plugin.New(ctx, "p", plugin.Config{Endpoint: serveUnix(t, plugin.NewHandler(failing{}, plugin.WithToken("s3cret"))), TokenFile: tokenFile})
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

	old := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"name":"future","versions":["v7"]}`))
	}))
	if _, err := plugin.New(ctx, "p", plugin.Config{Endpoint: old, TokenFile: tokenFile}); err == nil {
		t.Fatal("negotiated with a server that does not speak v1")
	}
}

// selfSignedCA returns the PEM of a fresh CA certificate for 127.0.0.1.
func selfSignedCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func asErr(err error, target **providers.Error) bool { return errors.As(err, target) }
