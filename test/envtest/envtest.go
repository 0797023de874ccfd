// Package envtest starts a real kube-apiserver and etcd (built from the Go module proxy by
// hack/kube-binaries.sh), installs egressd's generated CRDs from the Helm chart, and hands out
// clients. Tests call Start; the lab, which outlives any test, calls StartServer.
package envtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// AssetsEnv names the variable that points at a directory holding kube-apiserver and etcd.
// The Makefile sets it; without it the harness runs hack/kube-binaries.sh, which builds once
// and then answers from its cache.
const AssetsEnv = "EGRESSD_KUBE_ASSETS"

// Server is a running API server with egressd's CRDs installed.
type Server struct {
	// Config reaches the API server as cluster admin.
	Config *rest.Config
	// Client is a controller-runtime client whose scheme knows core and egressd kinds.
	Client client.Client
	// Scheme is Client's scheme.
	Scheme *k8sruntime.Scheme
	// Kubeconfig is the path of a kubeconfig file for kubectl and the binaries.
	Kubeconfig string

	env *crenvtest.Environment
	dir string
}

// Start runs a server for the duration of t and stops it in t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	s, err := StartServer(ctx)
	if err != nil {
		t.Fatalf("starting the envtest API server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping the envtest API server: %v", err)
		}
	})
	return s
}

// NewScheme returns a scheme with the core, coordination, apiextensions and egressd kinds.
func NewScheme() (*k8sruntime.Scheme, error) {
	s := k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{
		corev1.AddToScheme, coordinationv1.AddToScheme, apiextensionsv1.AddToScheme, egressv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// StartServer starts kube-apiserver and etcd, installs the CRDs and waits until they serve.
func StartServer(ctx context.Context) (*Server, error) {
	assets, err := AssetsDir(ctx)
	if err != nil {
		return nil, err
	}
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "egressd-envtest-")
	if err != nil {
		return nil, err
	}
	env := &crenvtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        []string{CRDDir()},
		ErrorIfCRDPathMissing:    true,
		Scheme:                   scheme,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	cfg, err := env.Start()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	s := &Server{Config: cfg, Scheme: scheme, env: env, dir: dir}
	if s.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	user, err := env.AddUser(crenvtest.User{Name: "egressd-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("adding an admin user: %w", err), s.Stop())
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("writing the admin kubeconfig: %w", err), s.Stop())
	}
	s.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(s.Kubeconfig, kc, 0o600); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	return s, nil
}

// Stop stops the API server and etcd and removes their files.
func (s *Server) Stop() error {
	err := s.env.Stop()
	return errors.Join(err, os.RemoveAll(s.dir))
}

// RepoRoot is the root of the egressd checkout this package was built from.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// CRDDir is where controller-gen writes the CRDs: the Helm chart's files, the one copy that
// tests and the chart share.
func CRDDir() string { return filepath.Join(RepoRoot(), "charts", "egressd", "files", "crds") }

// AssetsDir returns the directory holding kube-apiserver and etcd, building them if needed.
func AssetsDir(ctx context.Context) (string, error) {
	if dir := os.Getenv(AssetsEnv); dir != "" {
		return dir, nil
	}
	script := filepath.Join(RepoRoot(), "hack", "kube-binaries.sh")
	cmd := exec.CommandContext(ctx, script)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("running %s: %w", script, err)
	}
	return strings.TrimSpace(string(out)), nil
}
