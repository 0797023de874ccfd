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
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

	env     *crenvtest.Environment
	dir     string
	mu      sync.Mutex // serialises Stop, StopAPIServer and StartAPIServer
	apiDown bool
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
	// The API server's certificates (serving, service-account keys) go to a directory of
	// ours rather than one envtest removes on Stop, so that RestartAPIServer brings it back
	// with the same certificates, port and client CA: clients keep their kubeconfig.
	certDir := filepath.Join(dir, "apiserver")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	env := &crenvtest.Environment{
		ControlPlane:             crenvtest.ControlPlane{APIServer: &crenvtest.APIServer{CertDir: certDir}},
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
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.env.Stop()
	return errors.Join(err, os.RemoveAll(s.dir))
}

// APIServerStopGrace is how long StopAPIServer lets kube-apiserver shut down after SIGTERM
// before it kills it, as the kubelet ends a static pod's grace period. With watches open
// through the lab's proxies kube-apiserver often outlasts envtest's own 30 s stop timeout.
const APIServerStopGrace = 2 * time.Second

// StopAPIServer stops kube-apiserver (SIGTERM, SIGKILL after APIServerStopGrace) and leaves
// etcd running with its data. Clients get connection refused until StartAPIServer. It reports
// whether the process needed the SIGKILL.
func (s *Server) StopAPIServer() (killed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apiDown {
		return false, nil
	}
	pid, err := findProcess("kube-apiserver", "--cert-dir="+s.env.ControlPlane.APIServer.CertDir)
	if err != nil {
		return false, err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return false, fmt.Errorf("stopping kube-apiserver (pid %d): %w", pid, err)
	}
	deadline := time.Now().Add(APIServerStopGrace)
	for alive(pid) {
		if time.Now().After(deadline) {
			killed = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// envtest reaps it and records the stop.
	if err := s.env.ControlPlane.APIServer.Stop(); err != nil {
		return killed, fmt.Errorf("stopping kube-apiserver: %w", err)
	}
	s.apiDown = true
	return killed, nil
}

// findProcess returns the pid of the process whose argv[0] ends in name and which has arg.
func findProcess(name, arg string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(argv) > 0 && filepath.Base(argv[0]) == name && slices.Contains(argv, arg) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process with %s", name, arg)
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the same address, with
// the same serving certificate, client CA and service-account keys, against the same etcd:
// every existing client and kubeconfig works again. It returns once /healthz answers.
func (s *Server) StartAPIServer() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.apiDown {
		return nil
	}
	if err := s.env.ControlPlane.APIServer.Start(); err != nil {
		return fmt.Errorf("starting kube-apiserver again: %w", err)
	}
	s.apiDown = false
	return nil
}

// RestartAPIServer stops kube-apiserver, keeps it down for down and starts it again.
func (s *Server) RestartAPIServer(down time.Duration) error {
	if _, err := s.StopAPIServer(); err != nil {
		return err
	}
	time.Sleep(down)
	return s.StartAPIServer()
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
