package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/egressd/egressd/test/envtest"
	"github.com/egressd/egressd/test/netns"
)

const (
	releaseNS  = "egressd-system"
	workloadNS = "demo"
	module     = "github.com/egressd/egressd"
	// upgradeTag is the agent image tag `helm upgrade` rolls out (the same sources as the
	// chart's appVersion image, under another name).
	upgradeTag = "0.1.0-e2e.2"
)

// TestCluster builds the real cluster, installs the chart with helm and checks, in order:
// nodes Ready and a pod running over the bridge CNI; the controller Deployment and agent
// DaemonSet Ready with the chart's own security context; a workload pod on the worker leaving
// through a gateway with the egress IP; a leader change followed by an IP move; a rolling
// agent upgrade under a long-lived connection; an uninstall that leaves nothing on the nodes
// nor in the simulator; and a teardown that leaves nothing on the machine.
func TestCluster(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the real cluster needs root (network and mount namespaces, cgroups, containerd); run as root, as CI does")
	}
	if testing.Short() {
		t.Skip("skipping the real cluster in -short mode")
	}
	for _, tool := range []string{"containerd", "runc", "ctr", "nsenter", "unshare", "iptables", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run hack/deps.sh", tool)
		}
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	kubeDir, err := envtest.AssetsDir(ctx)
	if err != nil {
		t.Fatal(err)
	}
	binDir, err := e2eBinaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "egressd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("EGRESSD_E2E_KEEP") != "" {
			t.Logf("work directory kept: %s (logs/)", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	start := time.Now()
	egressd, err := BuildImages(ctx, filepath.Join(dir, "images"), "",
		"egressd-controller="+module+"/cmd/egressd-controller:user=65532", "egressd-agent="+module+"/cmd/egressd-agent:user=0")
	if err != nil {
		t.Fatal(err)
	}
	tools, err := BuildImages(ctx, filepath.Join(dir, "images"), "e2e",
		"e2e-pause="+module+"/test/e2e/cmd/pause", "e2e-client="+module+"/test/e2e/cmd/client:user=65532")
	if err != nil {
		t.Fatal(err)
	}
	upgraded, err := BuildImages(ctx, filepath.Join(dir, "images-upgrade"), upgradeTag, "egressd-agent="+module+"/cmd/egressd-agent:user=0")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("images built in %s", time.Since(start).Round(time.Millisecond))
	for _, set := range []map[string]Image{egressd, tools} {
		for _, img := range set {
			t.Logf("FIGURE image %s linux/amd64: layer %.1f MiB compressed, %.1f MiB uncompressed", img.Ref,
				float64(img.Layer)/(1<<20), float64(img.Uncompressed)/(1<<20))
		}
	}

	netnsBefore := netnsNames()
	c, err := Up(ctx, Config{KubeDir: kubeDir, BinDir: binDir, Dir: dir,
		Nodes:  []NodeConfig{{Name: "gw-a1", Zone: 0, Gateway: true}, {Name: "gw-a2", Zone: 0, Gateway: true}, {Name: "worker-b1", Zone: 1}},
		Images: []Image{tools["e2e-pause"], tools["e2e-client"], egressd["egressd-controller"], egressd["egressd-agent"], upgraded["egressd-agent"]},
		Log:    t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = c.Close()
		}
	})
	t.Logf("cluster up (3 nodes Ready) %s after the start", time.Since(began).Round(time.Millisecond))
	s := &suite{t: t, c: c, ctx: ctx}
	if s.crc, err = client.New(c.Rest, client.Options{Scheme: mustScheme(t)}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"WorkloadRunsOverCNI", s.workloadRuns},
		{"HelmInstall", s.helmInstall},
		{"EgressThroughGateway", s.egressThroughGateway},
		{"LeaderFailoverThenIPMove", s.leaderFailover},
		{"RollingAgentUpgrade", s.rollingUpgrade},
		{"HelmUninstall", s.uninstall},
	}
	for _, st := range steps {
		if !t.Run(st.name, st.fn) {
			s.dumpLogs()
			return
		}
	}
	closed = true
	if err := c.Close(); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	s.checkTeardown(dir, netnsBefore)
	t.Logf("e2e wall time %s", time.Since(began).Round(time.Millisecond))
}

// e2eBinaries returns the directory of hack/e2e-binaries.sh (EGRESSD_E2E_BINARIES when set).
func e2eBinaries(ctx context.Context) (string, error) {
	if d := os.Getenv("EGRESSD_E2E_BINARIES"); d != "" {
		return d, nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(envtest.RepoRoot(), "hack", "e2e-binaries.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/e2e-binaries.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func mustScheme(t *testing.T) *k8sruntime.Scheme {
	s, err := envtest.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	if err := appsv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

type suite struct {
	t   *testing.T
	c   *Cluster
	ctx context.Context
	crc client.Client

	podIP    string
	egressIP string
	before   map[string]nodeState // per node, before helm install
}

func (s *suite) wait(t *testing.T, what string, timeout time.Duration, cond func(context.Context) (bool, error)) {
	t.Helper()
	if err := s.c.waitFor(s.ctx, what, timeout, cond); err != nil {
		t.Fatal(err)
	}
}

// workloadRuns starts the client pod on the worker, before egressd exists: it reaches the
// echo host over the bridge CNI's veth and the routed underlay, with its pod IP as source.
func (s *suite) workloadRuns(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workloadNS}}
	if err := s.crc.Create(s.ctx, ns); err != nil {
		t.Fatal(err)
	}
	s.wait(t, "the default ServiceAccount of "+workloadNS, time.Minute, func(ctx context.Context) (bool, error) {
		_, err := s.c.Client.CoreV1().ServiceAccounts(workloadNS).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	no, yes := false, true
	uid := int64(65532)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: workloadNS, Labels: map[string]string{"app": "client"}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": "worker-b1"},
			TerminationGracePeriodSeconds: new(int64),
			AutomountServiceAccountToken:  &no,
			Containers: []corev1.Container{{Name: "client", Image: ClientImage, ImagePullPolicy: corev1.PullNever,
				Args: []string{"-target=" + s.c.Echo.String(), fmt.Sprintf("-http-port=%d", netns.HTTPPort),
					fmt.Sprintf("-flow-port=%d", netns.FlowPort)},
				SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, AllowPrivilegeEscalation: &no,
					ReadOnlyRootFilesystem: &yes, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
		},
	}
	start := time.Now()
	if err := s.crc.Create(s.ctx, pod); err != nil {
		t.Fatal(err)
	}
	s.wait(t, "the client pod Running", 2*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := s.c.Client.CoreV1().Pods(workloadNS).Get(ctx, "client", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		s.podIP = p.Status.PodIP
		return p.Status.Phase == corev1.PodRunning, nil
	})
	t.Logf("client pod Running on worker-b1 with IP %s after %s", s.podIP, time.Since(start).Round(time.Millisecond))
	st := s.clientStatus(t, func(st clientStatus) bool { return st.httpOK > 0 })
	if st.lastIP != s.podIP {
		t.Fatalf("echo host saw %s, want the pod IP %s (no egress policy yet)", st.lastIP, s.podIP)
	}
}
