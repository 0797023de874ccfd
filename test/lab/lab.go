// Package lab is egressd's whole-cluster lab on one machine (DESIGN.md §7): nodes in zones as
// network namespaces (test/netns) behind a VPC router whose routes and Elastic-IP 1:1 NAT follow
// the EC2 simulator (test/cloudsim/aws), or with Config.Cloud "gcp" whose alias routes and
// access-config NAT follow the Compute Engine simulator (test/cloudsim/gcp, gcefabric), the envtest API server with Nodes and Pods registered as
// a kubelet and a CNI would, the real egressd-agent in every node and the real
// egressd-controller in a control-plane namespace, an echo server outside the VPC and a worker
// with a monitor pod in every zone. It owns the lifecycle of all of it — Up builds, Close tears down, Sweep removes what a
// crashed run left — and the events the walkthrough and the benchmarks play: gateway reboots
// and planned drains. `egressd-lab` (cmd/egressd-lab) and `make demo` drive it.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/egressd/egressd/gateway/contract"
	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	gcpsim "github.com/egressd/egressd/test/cloudsim/gcp"
	"github.com/egressd/egressd/test/cloudsim/gcp/gcefabric"
	"github.com/egressd/egressd/test/cloudsim/simkit"
	"github.com/egressd/egressd/test/envtest"
	"github.com/egressd/egressd/test/netns"
)

// Prefix starts the name of every namespace the lab creates; Sweep(Prefix) removes leftovers.
const Prefix = "edlab-"

// Names and labels the lab gives the cluster.
const (
	ClusterName    = "egressd-lab"
	SystemNS       = contract.DefaultNamespace
	WorkloadNS     = "demo"
	GatewayLabel   = "egressd.io/gateway"
	GatewayGroup   = "lab" // value of GatewayLabel on gateway nodes and name of the EgressGateway
	ZoneLabel      = "topology.kubernetes.io/zone"
	MonitorPodName = "monitor"
	Region         = "us-east-1"
	// ControlPlane is the bed node that runs egressd-controller: on the underlay (so it can
	// probe gateways) but not a Kubernetes Node, like a managed control plane.
	ControlPlane = "cp"
	// IMDSAddr is where every node finds its instance metadata, as on EC2 (and where the
	// control plane finds GCE's metadata server in the GCP lab).
	IMDSAddr = "169.254.169.254"
)

// The clouds the lab simulates (Config.Cloud), named as the providers' types are.
const (
	CloudAWS = "aws"
	CloudGCP = "gcp"
)

// The GCP lab's project and region: zone i is GCPRegion-a, GCPRegion-b, ...
const (
	GCPProject = "egressd-lab"
	GCPRegion  = "us-central1"
)

// Config describes a lab. The zero value of every field has a usable default.
type Config struct {
	// Zones is the number of zones (default 4), named us-east-1a, us-east-1b, ...
	Zones int
	// GatewaysPerZone is the number of gateway nodes per zone (default 2, the layout a user
	// deploys for HA: with one egress IP per zone, one Active holder and one Standby), named
	// gw-<zone letter><n>, e.g. gw-a1. 1 is the other supported case.
	GatewaysPerZone int
	// InstanceType of every node (default m5.large: 3 ENIs, 10 IPv4 addresses each).
	InstanceType string
	// BinDir holds egressd-agent and egressd-controller (default <repo>/bin).
	BinDir string
	// WorkDir holds logs, the kubeconfig, the controller's config and the agents' bpffs
	// (default a new directory under the system temp dir, removed by Close unless KeepWorkDir).
	WorkDir     string
	KeepWorkDir bool
	// NoControlPlane builds everything but does not start the agents and the controller
	// (the infrastructure tests, and the lab before the binaries exist).
	NoControlPlane bool
	// NotReadyAfter is how long after a gateway goes down its Node turns NotReady, as the node
	// lifecycle controller would do after its grace period (default 5 s; upstream's is 40-50 s,
	// which only makes the lab slower: egressd must not wait for it).
	NotReadyAfter time.Duration
	// Log receives progress lines (default io.Discard).
	Log io.Writer
	// Timing is the EC2 simulator's timing profile (simkit.ParseProfile: "instant", "aws",
	// "azure", "gcp", optionally ":<scale>"; default "instant"), and TimingSeed its seed (0:
	// from the clock; the seed used is logged).
	Timing     string
	TimingSeed int64
	// ProbeInterval is the demo EgressGateway's spec.health.interval (0: the default, 100 ms,
	// with the default threshold of 3): what bounds the outage of a dead gateway.
	ProbeInterval time.Duration
	// Cloud is the simulated cloud: CloudAWS (default: the EC2 simulator, zones us-east-1a,
	// ...) or CloudGCP (the Compute Engine simulator, project GCPProject, zones
	// us-central1-a, ..., the demo policy with public egress; Timing then applies to it).
	Cloud string
}

func (c *Config) defaults() error {
	if c.Zones == 0 {
		c.Zones = 4
	}
	if c.Zones < 1 || c.Zones > 8 {
		return fmt.Errorf("zones: %d, want 1-8", c.Zones)
	}
	if c.GatewaysPerZone == 0 {
		c.GatewaysPerZone = 2
	}
	if c.GatewaysPerZone < 1 || c.GatewaysPerZone > 4 {
		return fmt.Errorf("gateways per zone: %d, want 1-4", c.GatewaysPerZone)
	}
	if c.Cloud == "" {
		c.Cloud = CloudAWS
	}
	if c.Cloud != CloudAWS && c.Cloud != CloudGCP {
		return fmt.Errorf("cloud: %q, want %s or %s", c.Cloud, CloudAWS, CloudGCP)
	}
	if c.InstanceType == "" {
		c.InstanceType = "m5.large"
		if c.Cloud == CloudGCP {
			c.InstanceType = "e2-standard-4" // a label only: the GCP lab's capacity is alias ranges
		}
	}
	if c.BinDir == "" {
		c.BinDir = c.binDefault()
	}
	if c.NotReadyAfter == 0 {
		c.NotReadyAfter = 5 * time.Second
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if _, err := simkit.ParseProfile(c.Timing); err != nil {
		return err
	}
	return nil
}

// Node is one node of the lab: its namespace, its instance in the simulator and, unless the
// lab runs without control plane, its agent.
type Node struct {
	*netns.Node
	Instance awssim.Instance // the EC2 lab's
	// ProviderID is the Node's spec.providerID: aws:///zone/i-... or gce://project/zone/name.
	ProviderID string
	Gateway    bool // carries GatewayLabel when the lab starts
	agent      *process
	down       downState
}

// Lab is a running lab. Close it.
type Lab struct {
	Config Config
	Topo   *netns.Topology
	Sim    *awssim.Server // the EC2 lab's simulator
	GCE    *gcpsim.Sim    // the GCP lab's simulator
	// SimAddr is the simulator's EC2/IMDS/admin (or Compute/admin) endpoint (127.0.0.1:port in the root namespace,
	// and through a proxy at the same address in every lab namespace).
	SimAddr string
	VPC     string
	API     *envtest.Server
	// Kubeconfig reaches the API server from the root namespace and from every lab namespace.
	Kubeconfig string
	Nodes      []*Node // Kubernetes nodes, gateways first, in zone order
	CP         *netns.Node
	// Monitors are the monitor pods, one on the worker of each zone (worker-a1 runs
	// monitor-a, ...), in zone order; Monitor is the first zone's.
	Monitors []*netns.Pod
	Monitor  *netns.Pod
	Echo     netip.Addr // the echo server's address outside the VPC
	// OnPrem is, in the GCP lab, the echo server's address on a network the VPC reaches
	// without NAT (gcefabric.OnPrem): the group's private destination.
	OnPrem netip.Addr

	workDir    string
	bpffs      string
	controller *process
	router     *Router           // the EC2 lab's
	fabric     *gcefabric.Fabric // the GCP lab's
	servers    []*http.Server

	ctx      context.Context // lives until Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex // guards the processes
	fabricMu sync.Mutex // serialises the fabric namespace's netlink handle
	closed   bool
}

// Up builds a lab. On error, everything built so far is torn down.
func Up(ctx context.Context, cfg Config) (_ *Lab, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, nftables, bpffs)")
	}
	if !cfg.NoControlPlane {
		if err := CheckBinaries(cfg.BinDir); err != nil {
			return nil, err
		}
	}
	if err := Sweep(); err != nil {
		fmt.Fprintf(cfg.Log, "lab: sweeping leftovers of earlier runs: %v\n", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &Lab{Config: cfg, ctx: lctx, cancel: cancel}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	if l.workDir = cfg.WorkDir; l.workDir == "" {
		if l.workDir, err = os.MkdirTemp("", fmt.Sprintf("egressd-lab-%d-", os.Getpid())); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(l.workDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(l.workDir, "logs"), 0o755); err != nil {
		return nil, err
	}

	step := func(name string, fn func(context.Context) error) error {
		start := time.Now()
		fmt.Fprintf(cfg.Log, "lab: %s ...\n", name)
		if err := fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Fprintf(cfg.Log, "lab: %s done (%s)\n", name, time.Since(start).Round(time.Millisecond))
		return nil
	}
	if err := step("building namespaces", l.buildTopology); err != nil {
		return nil, err
	}
	if err := step("starting the "+cfg.simulatorName()+" simulator", l.startSimulator); err != nil {
		return nil, err
	}
	if err := step("starting the API server", l.startAPIServer); err != nil {
		return nil, err
	}
	if err := step("connecting namespaces to the API server and simulator", l.startProxies); err != nil {
		return nil, err
	}
	if err := step("registering nodes and pods", l.registerObjects); err != nil {
		return nil, err
	}
	if err := step("labelling the monitor pods", l.labelMonitors); err != nil {
		return nil, err
	}
	if cfg.NoControlPlane {
		return l, nil
	}
	if err := step("starting egressd-controller and the agents", l.startControlPlane); err != nil {
		return nil, err
	}
	return l, nil
}

// WorkDir is where the lab keeps logs, kubeconfig and configuration.
func (l *Lab) WorkDir() string { return l.workDir }

// Node returns the lab node with the given name, or nil.
func (l *Lab) Node(name string) *Node {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// nodeSpecs lays out the cluster: GatewaysPerZone gateways per zone (gw-a1, gw-a2, ...), then
// one worker per zone carrying that zone's monitor pod (worker-a1 with monitor-a, ...), then
// the control plane in the first zone. Gateways come first so Lab.Nodes lists them first.
func (c Config) nodeSpecs() []netns.NodeSpec {
	var out []netns.NodeSpec
	for i := range c.Zones {
		for k := range c.GatewaysPerZone {
			out = append(out, netns.NodeSpec{Name: fmt.Sprintf("gw-%s%d", zoneLetter(i), k+1), Zone: c.zone(i)})
		}
	}
	for i := range c.Zones {
		out = append(out, netns.NodeSpec{Name: "worker-" + zoneLetter(i) + "1", Zone: c.zone(i),
			Pods: []netns.PodSpec{{Name: MonitorPod(i)}}})
	}
	return append(out, netns.NodeSpec{Name: ControlPlane, Zone: c.zone(0)})
}

// MonitorPod is the name of zone i's monitor pod (monitor-a, monitor-b, ...). Every monitor pod
// carries the label app=MonitorPodName, which the demo policy selects.
func MonitorPod(i int) string { return MonitorPodName + "-" + zoneLetter(i) }

// setMonitors finds the monitor pods in the built topology.
func (l *Lab) setMonitors() {
	l.Monitors = nil
	for i := range l.Config.Zones {
		if p := l.Topo.Pod(MonitorPod(i)); p != nil {
			l.Monitors = append(l.Monitors, p)
		}
	}
	if len(l.Monitors) > 0 {
		l.Monitor = l.Monitors[0]
	}
}

// labelMonitors gives every monitor pod the label app=MonitorPodName the demo policy selects
// (registerObjects labels a pod app=<its name>), keeping the label app-pod=<its name>.
func (l *Lab) labelMonitors(ctx context.Context) error {
	for _, p := range l.Monitors {
		err := retryConflict(ctx, func() error {
			var pod corev1.Pod
			if err := l.API.Client.Get(ctx, client.ObjectKey{Namespace: WorkloadNS, Name: p.Name}, &pod); err != nil {
				return err
			}
			if pod.Labels == nil {
				pod.Labels = map[string]string{}
			}
			pod.Labels["app"], pod.Labels["app-pod"] = MonitorPodName, p.Name
			return l.API.Client.Update(ctx, &pod)
		})
		if err != nil {
			return fmt.Errorf("labelling pod %s: %w", p.Name, err)
		}
	}
	return nil
}

// Gateways returns the nodes that carried the gateway label when the lab started.
func (l *Lab) Gateways() []*Node {
	var out []*Node
	for _, n := range l.Nodes {
		if n.Gateway {
			out = append(out, n)
		}
	}
	return out
}

// Close tears everything down: processes, the router follower, proxies, namespaces, the API
// server, the bpffs mount and the work directory. It is idempotent and needs no context: it
// must also run after the caller's context was cancelled (Ctrl-C).
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	var errs []error
	l.stopProcesses()
	l.cancel()
	for _, s := range l.servers {
		_ = s.Close()
	}
	l.wg.Wait()
	if l.Topo != nil {
		errs = append(errs, l.Topo.Close())
	}
	if l.API != nil {
		errs = append(errs, l.API.Stop())
	}
	if l.bpffs != "" {
		errs = append(errs, unmountBPF(l.bpffs))
	}
	if l.workDir != "" && !l.Config.KeepWorkDir && l.Config.WorkDir == "" {
		errs = append(errs, os.RemoveAll(l.workDir))
	}
	return errors.Join(errs...)
}

func (Config) binDefault() string { return filepath.Join(envtest.RepoRoot(), "bin") }

func hostPort(s string) (string, int, error) {
	u, err := url.Parse(s)
	if err == nil && u.Host != "" {
		s = u.Host
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("parsing %q: %w", s, err)
	}
	return ap.Addr().String(), int(ap.Port()), nil
}

func zoneName(i int) string   { return Region + string(rune('a'+i)) }
func zoneLetter(i int) string { return string(rune('a' + i)) }

// zone names the lab's zone i in its cloud: zoneName(i) on AWS, GCPRegion-a, ... on GCP.
func (c Config) zone(i int) string {
	if c.Cloud == CloudGCP {
		return GCPRegion + "-" + zoneLetter(i)
	}
	return zoneName(i)
}

// region is the Nodes' topology.kubernetes.io/region.
func (c Config) region() string {
	if c.Cloud == CloudGCP {
		return GCPRegion
	}
	return Region
}

func (c Config) simulatorName() string {
	if c.Cloud == CloudGCP {
		return "Compute Engine"
	}
	return "EC2"
}

// ZonesHeld reports whether every egress IP in the view has a holder and every zone of the lab
// has one held by a node of that zone: the IP set is whole, whichever gateway holds each IP.
// Unlike AllActive it does not ask the failed gateways to be back.
func (l *Lab) ZonesHeld(v GatewayView) bool {
	held := map[string]bool{}
	for _, node := range v.Holders {
		if node == "" {
			return false
		}
		if n := l.Node(node); n != nil {
			held[n.Zone.Name] = true
		}
	}
	for i := range l.Config.Zones {
		if !held[l.Config.zone(i)] {
			return false
		}
	}
	return true
}
