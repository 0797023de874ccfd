// Package e2e is egressd's real-cluster suite (DESIGN.md §7): a Kubernetes cluster on one
// machine whose every component is real and built or installed by the project — etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler in a control-plane namespace, and
// nodes, each a network namespace of test/netns with its own mount namespace, containerd,
// kubelet, kube-proxy, bridge CNI and bpffs — behind the VPC router of test/lab that follows the
// EC2 simulator, with the echo host outside. The chart is installed, upgraded and removed there
// with helm and the images hack/images builds. docs/e2e.md describes it.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	"github.com/egressd/egressd/test/lab"
	"github.com/egressd/egressd/test/netns"
)

// Prefix starts the name of every network namespace and cgroup the suite creates. It differs
// from the lab's ("edlab-") and the test bed's default ("edtb-"), so Sweep never touches theirs.
const Prefix = "edk8s-"

// Names the cluster uses.
const (
	ClusterName  = "egressd-e2e"
	Region       = "us-east-1"
	InstanceType = "m5.large"
	GatewayLabel = "egressd.io/gateway"
	GatewayGroup = "e2e"
	ZoneLabel    = "topology.kubernetes.io/zone"
	// ServiceCIDR holds the ClusterIPs; the first is the kubernetes Service.
	ServiceCIDR = "10.96.0.0/16"
	apiPort     = 6443
)

// Config says where the binaries are.
type Config struct {
	// KubeDir holds kube-apiserver and etcd (hack/kube-binaries.sh).
	KubeDir string
	// BinDir holds kube-controller-manager, kube-scheduler, kube-proxy, kubelet, helm and cni/
	// (hack/e2e-binaries.sh).
	BinDir string
	// Dir is the work directory: PKI, configs, node state, logs.
	Dir string
	// Nodes of the cluster; gateways get the gateway label at registration.
	Nodes []NodeConfig
	// Images are imported into every node's containerd before its kubelet starts; the pause
	// image (PauseImage) must be among them.
	Images []Image
	// Log receives progress lines.
	Log func(format string, args ...any)
}

// NodeConfig is one Kubernetes node.
type NodeConfig struct {
	Name    string
	Zone    int // index: zone 0 is us-east-1a
	Gateway bool
}

// Cluster is a running cluster. Close it.
type Cluster struct {
	Config Config
	// ID starts the name of every namespace and cgroup of this cluster.
	ID        string
	Topo      *netns.Topology
	CP        *netns.Node // control plane: etcd, kube-apiserver, kcm, scheduler, the EC2 simulator
	Nodes     []*Node
	Sim       *awssim.Server
	SimURL    string // the EC2 endpoint, reachable from every node and pod
	VPC       string
	Echo      netip.Addr
	Client    kubernetes.Interface
	Rest      *rest.Config
	AdminConf string // kubeconfig of cluster-admin, valid inside the control-plane namespace

	pki     *pki
	router  *lab.Router
	procs   []*proc // control plane, in start order
	servers []func() error
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	created []string // host directories created as mount points, removed by Close
}

// Up builds the cluster and waits until every node is Ready. On error everything built so far
// is torn down.
func Up(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	if err := Sweep(); err != nil {
		cfg.Log("sweeping leftovers of earlier runs: %v", err)
	}
	c := &Cluster{Config: cfg}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	for _, d := range []string{"logs", "pki"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	step := func(name string, fn func(context.Context) error) error {
		start := time.Now()
		if err := fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		cfg.Log("%s: %s", name, time.Since(start).Round(time.Millisecond))
		return nil
	}
	for _, s := range []struct {
		name string
		fn   func(context.Context) error
	}{
		{"network namespaces", c.buildTopology},
		{"EC2 simulator and VPC router", c.startCloud},
		{"control plane", c.startControlPlane},
		{"nodes", c.startNodes},
	} {
		if err := step(s.name, s.fn); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// buildTopology creates every namespace at once, before any containerd runs: the first
// namespace created turns /run/netns into a bind mount, and pod namespaces made before that
// would become hidden mounts that pod teardown cannot remove.
func (c *Cluster) buildTopology(ctx context.Context) error {
	spec := netns.Spec{Prefix: Prefix, Routed: true, IsolatedNodes: true, NoHostileRules: true, NoIPv6: true,
		Zones: []netns.ZoneSpec{{Name: Region + "a"}, {Name: Region + "b"}}}
	for _, n := range c.Config.Nodes {
		spec.Nodes = append(spec.Nodes, netns.NodeSpec{Name: n.Name, Zone: spec.Zones[n.Zone].Name})
	}
	spec.Nodes = append(spec.Nodes, netns.NodeSpec{Name: "cp", Zone: spec.Zones[0].Name})
	topo, err := netns.Build(ctx, spec)
	if err != nil {
		return err
	}
	c.Topo, c.ID = topo, topo.ID
	c.CP = topo.Node("cp")
	for i, nc := range c.Config.Nodes {
		c.Nodes = append(c.Nodes, &Node{Node: topo.Nodes[i], Config: nc, cluster: c})
	}
	c.Echo = topo.External.Addr4()[0]
	return nil
}

// startCloud runs the EC2 simulator in-process, listening in the control-plane namespace so
// that the controller's pods reach it over the underlay, seeds it (lab.SeedVPC) and starts the
// VPC router that follows it (lab.Router).
func (c *Cluster) startCloud(ctx context.Context) error {
	c.Sim = awssim.New(Region)
	ln, err := c.CP.Listen("tcp", net.JoinHostPort(c.CP.IP.String(), "0"))
	if err != nil {
		return err
	}
	c.SimURL = "http://" + ln.Addr().String()
	c.serve(ln, c.Sim)
	nodes := []*netns.Node{}
	for _, n := range c.Nodes {
		nodes = append(nodes, n.Node)
	}
	vpc, instances, err := lab.SeedVPC(c.Sim, c.Topo, append(nodes, c.CP), InstanceType, ClusterName)
	if err != nil {
		return err
	}
	c.VPC = vpc
	for i, n := range c.Nodes {
		n.Instance = instances[i]
	}
	c.router = lab.NewRouter(c.Sim, c.Topo, nodes, instances, c.Config.Dir)
	if err := c.router.Sync(); err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.router.Run(rctx)
	}()
	return nil
}

func (c *Cluster) serve(ln net.Listener, h http.Handler) {
	s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	c.servers = append(c.servers, s.Close)
	go func() { _ = s.Serve(ln) }()
}

// startControlPlane issues the certificates and starts etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler in the control-plane namespace.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	var err error
	if c.pki, err = newPKI(filepath.Join(c.Config.Dir, "pki")); err != nil {
		return err
	}
	p := c.pki
	cpIP := net.IP(c.CP.IP.AsSlice())
	svcIP := net.ParseIP("10.96.0.1")
	server := fmt.Sprintf("https://%s:%d", c.CP.IP, apiPort)
	if err := p.issue("apiserver", "kube-apiserver", nil, []net.IP{cpIP, svcIP, net.ParseIP("127.0.0.1")},
		[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}); err != nil {
		return err
	}
	ids := map[string][2]string{ // file name → CN, O
		"admin":                    {"e2e-admin", "system:masters"},
		"apiserver-kubelet-client": {"kube-apiserver-kubelet-client", "system:masters"},
		"kube-controller-manager":  {"system:kube-controller-manager", ""},
		"kube-scheduler":           {"system:kube-scheduler", ""},
		"kube-proxy":               {"system:kube-proxy", ""},
	}
	for name, id := range ids {
		var org []string
		if id[1] != "" {
			org = []string{id[1]}
		}
		if err := p.issue(name, id[0], org, nil, nil); err != nil {
			return err
		}
		if _, err := p.kubeconfig(name, server); err != nil {
			return err
		}
	}
	c.AdminConf = p.path("admin.kubeconfig")
	dir := c.Config.Dir
	kube, bin := c.Config.KubeDir, c.Config.BinDir
	etcd, err := start(c.CP.Namespace, dir, "etcd", nil, filepath.Join(kube, "etcd"),
		"--data-dir="+filepath.Join(dir, "etcd"), "--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379", "--listen-peer-urls=http://127.0.0.1:2380",
		"--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, etcd)
	api, err := start(c.CP.Namespace, dir, "kube-apiserver", nil, filepath.Join(kube, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379", "--advertise-address="+c.CP.IP.String(), "--bind-address=0.0.0.0",
		fmt.Sprintf("--secure-port=%d", apiPort), "--service-cluster-ip-range="+ServiceCIDR,
		"--client-ca-file="+p.path("ca.crt"), "--tls-cert-file="+p.path("apiserver.crt"),
		"--tls-private-key-file="+p.path("apiserver.key"),
		"--kubelet-client-certificate="+p.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p.path("apiserver-kubelet-client.key"),
		// Node names do not resolve here: reach kubelets (logs, exec) at their InternalIP.
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.path("sa.pub"), "--service-account-signing-key-file="+p.path("sa.key"),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction", "--allow-privileged=true",
		"--profiling=false", "--v=1")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, api)
	if c.Rest, err = clientcmd.BuildConfigFromFlags("", c.AdminConf); err != nil {
		return err
	}
	// The test process lives in the root namespace: dial the API server from inside the
	// control-plane namespace, as any client on the underlay would.
	c.Rest.Dial = c.CP.DialContext
	c.Rest.QPS, c.Rest.Burst = 50, 100
	if c.Client, err = kubernetes.NewForConfig(c.Rest); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "kube-apiserver to serve", 90*time.Second, func(ctx context.Context) (bool, error) {
		if err := api.exited(); err != nil {
			return false, err
		}
		// readyz includes the RBAC bootstrap roles, which kube-controller-manager needs at once.
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil, nil
	}); err != nil {
		return err
	}
	kcm, err := start(c.CP.Namespace, dir, "kube-controller-manager", nil, filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig="+p.path("kube-controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+p.path("kube-controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+p.path("kube-controller-manager.kubeconfig"),
		"--service-account-private-key-file="+p.path("sa.key"), "--root-ca-file="+p.path("ca.crt"),
		"--use-service-account-credentials=true", "--leader-elect=false", "--bind-address=127.0.0.1",
		"--cluster-signing-cert-file="+p.path("ca.crt"), "--cluster-signing-key-file="+p.path("ca.key"),
		"--service-cluster-ip-range="+ServiceCIDR, "--v=1")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, kcm)
	sched, err := start(c.CP.Namespace, dir, "kube-scheduler", nil, filepath.Join(bin, "kube-scheduler"),
		"--kubeconfig="+p.path("kube-scheduler.kubeconfig"),
		"--authentication-kubeconfig="+p.path("kube-scheduler.kubeconfig"),
		"--authorization-kubeconfig="+p.path("kube-scheduler.kubeconfig"),
		"--leader-elect=false", "--bind-address=127.0.0.1", "--v=1")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, sched)
	// kube-controller-manager's service-account controllers make what every pod needs.
	return c.waitFor(ctx, "the default ServiceAccount and kube-root-ca.crt", 90*time.Second, func(ctx context.Context) (bool, error) {
		for _, p := range []*proc{kcm, sched} {
			if err := p.exited(); err != nil {
				return false, err
			}
		}
		if _, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return false, nil
		}
		_, err := c.Client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil, nil
	})
}

func (c *Cluster) startNodes(ctx context.Context) error {
	for _, n := range c.Nodes {
		if err := n.start(ctx); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	if err := c.Import(c.Config.Images...); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := n.startKubelet(); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return c.waitFor(ctx, "every node Ready", 3*time.Minute, func(ctx context.Context) (bool, error) {
		for _, n := range c.Nodes {
			if err := n.exited(); err != nil {
				return false, err
			}
			node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil || !nodeReady(node) {
				return false, nil
			}
		}
		return true, nil
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitFor polls cond every 250 ms until it is true, fails, or timeout passes.
func (c *Cluster) waitFor(ctx context.Context, what string, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Node returns the node with the given name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Close tears everything down: the nodes (kubelet, kube-proxy, containerd, every container and
// shim, by cgroup), the control plane, the simulator, the namespaces and the host directories
// it created. It is idempotent.
func (c *Cluster) Close() error {
	var errs []error
	for i := len(c.Nodes) - 1; i >= 0; i-- {
		errs = append(errs, c.Nodes[i].stop())
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(10 * time.Second)
	}
	c.procs = nil
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	for _, s := range c.servers {
		_ = s()
	}
	c.servers = nil
	if c.Topo != nil {
		errs = append(errs, c.Topo.Close())
		c.Topo = nil
	}
	for i := len(c.created) - 1; i >= 0; i-- {
		if err := os.Remove(c.created[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	c.created = nil
	return errors.Join(errs...)
}

// Sweep removes what a crashed run left: processes in its cgroups and the cgroups, and its
// namespaces (netns.Sweep, which leaves live runs alone).
func Sweep() error {
	var errs []error
	entries, _ := os.ReadDir("/sys/fs/cgroup/pids")
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), Prefix) {
			continue
		}
		if pid, ok := ownerPID(e.Name()); ok && pid != os.Getpid() && processAlive(pid) {
			continue
		}
		errs = append(errs, removeCgroup(e.Name()))
	}
	return errors.Join(append(errs, netns.Sweep(Prefix))...)
}

// ownerPID extracts the pid from a name that starts with a topology ID, <Prefix><hex>-<pid>-...
func ownerPID(name string) (int, bool) {
	parts := strings.Split(strings.TrimPrefix(name, Prefix), "-")
	if len(parts) < 2 {
		return 0, false
	}
	pid, err := strconv.Atoi(parts[1])
	return pid, err == nil && pid > 0
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
