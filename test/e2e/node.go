package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	"github.com/egressd/egressd/test/netns"
)

// Node is a Kubernetes node: a namespace of the bed with a mount namespace of its own, held by
// a sleeping process, in which containerd, the kubelet and kube-proxy run. Paths the kubelet
// and the CNI plugins hard-code (/var/lib/kubelet, /var/log/pods, /var/log/containers,
// /var/lib/cni) and the bpffs (/sys/fs/bpf) are the node's own there, and the host-wide
// sysctls the kubelet sets (kernel.panic, vm.overcommit_memory...) are files of the node's.
// Every process of the node, containers and shims included, lives in the cgroup tree
// CgroupRoot, which is how teardown finds them all.
type Node struct {
	*netns.Node
	Config   NodeConfig
	Instance awssim.Instance
	// CgroupRoot is the kubelet's cgroupRoot, in every v1 hierarchy.
	CgroupRoot string
	// Socket is containerd's.
	Socket string

	cluster    *Cluster
	dir        string
	holder     *proc
	containerd *proc
	kubelet    *proc
	proxy      *proc
}

// Hard-coded paths that get a per-node directory in the node's mount namespace. /run/netns
// holds the pods' network namespaces, which containerd names cni-<uuid>: in the host's
// directory, every pod still running at teardown left an empty cni-* file behind, visible to
// `ip netns list` on the machine.
var nodePaths = []string{"/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/var/lib/cni", "/run/netns"}

// The host-wide sysctls the kubelet sets when they differ (container_manager_linux.go), with
// the values it wants: bind-mounted as files in the node's mount namespace, so no kubelet
// changes the machine's.
var kubeletSysctls = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

func (n *Node) start(ctx context.Context) error {
	c := n.cluster
	n.dir = filepath.Join(c.Config.Dir, "nodes", n.Name)
	n.CgroupRoot = "/" + c.Topo.ID + "-" + n.Name
	n.Socket = filepath.Join(n.dir, "containerd.sock")
	for _, d := range []string{"containerd/root", "containerd/state", "runc", "net.d", "sysctl", "bpffs"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, p := range nodePaths {
		if err := os.MkdirAll(filepath.Join(n.dir, p), 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			c.created = append(c.created, p)
		}
	}
	if err := makeCgroup(n.CgroupRoot + "/system"); err != nil {
		return err
	}
	if err := n.writeConfigs(); err != nil {
		return err
	}
	var err error
	if n.holder, err = n.run("mount-namespace", "unshare", "--mount", "--propagation", "private", "sleep", "infinity"); err != nil {
		return err
	}
	if err := n.waitOwnMountNS(ctx); err != nil {
		return err
	}
	if out, err := n.inMountNS("sh", "-ec", n.setupScript()).CombinedOutput(); err != nil {
		return fmt.Errorf("setting up the mount namespace: %w: %s", err, out)
	}
	if n.containerd, err = n.run("containerd", n.nsenter("containerd", "--config", filepath.Join(n.dir, "containerd.toml"))...); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "containerd's socket", 30*time.Second, func(context.Context) (bool, error) {
		if err := n.containerd.exited(); err != nil {
			return false, err
		}
		_, err := os.Stat(n.Socket)
		return err == nil, nil
	}); err != nil {
		return err
	}
	return nil
}

// startKubelet starts the kubelet and kube-proxy, once the images are in containerd.
func (n *Node) startKubelet() error {
	bin := n.cluster.Config.BinDir
	labels := []string{ZoneLabel + "=" + n.Zone.Name, "topology.kubernetes.io/region=" + Region,
		"node.kubernetes.io/instance-type=" + InstanceType}
	if n.Config.Gateway {
		labels = append(labels, GatewayLabel+"="+GatewayGroup)
	}
	var err error
	n.kubelet, err = n.run("kubelet", n.nsenter(filepath.Join(bin, "kubelet"),
		"--config="+filepath.Join(n.dir, "kubelet.yaml"), "--kubeconfig="+n.cluster.pki.path("node-"+n.Name+".kubeconfig"),
		"--hostname-override="+n.Name, "--node-ip="+n.IP.String(), "--node-labels="+strings.Join(labels, ","), "--v=1")...)
	if err != nil {
		return err
	}
	n.proxy, err = n.run("kube-proxy", n.nsenter(filepath.Join(bin, "kube-proxy"),
		"--config="+filepath.Join(n.dir, "kube-proxy.yaml"), "--v=1")...)
	return err
}

// run starts argv in the node's network namespace and cgroup tree.
func (n *Node) run(name string, argv ...string) (*proc, error) {
	wrap := []string{"sh", "-c", `for f in /sys/fs/cgroup/*` + n.CgroupRoot + `/system/cgroup.procs; do echo $$ > "$f"; done; exec "$@"`, "sh"}
	return start(n.Namespace, n.cluster.Config.Dir, n.Name+"-"+name, nil, append(wrap, argv...)...)
}

// nsenter prefixes argv to run it in the node's mount namespace.
func (n *Node) nsenter(argv ...string) []string {
	return append([]string{"nsenter", "--target", strconv.Itoa(n.holder.cmd.Process.Pid), "--mount", "--"}, argv...)
}

// inMountNS returns a command that runs in the node's mount and network namespaces.
func (n *Node) inMountNS(argv ...string) *exec.Cmd {
	a := append([]string{"--target", strconv.Itoa(n.holder.cmd.Process.Pid), "--mount", "--net", "--"}, argv...)
	return exec.Command("nsenter", a...)
}

func (n *Node) waitOwnMountNS(ctx context.Context) error {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return err
	}
	return n.cluster.waitFor(ctx, "the node's mount namespace", 10*time.Second, func(context.Context) (bool, error) {
		if err := n.holder.exited(); err != nil {
			return false, err
		}
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.holder.cmd.Process.Pid))
		return err == nil && l != self && strings.Contains(sleeping(n.holder.cmd.Process.Pid), "sleep"), nil
	})
}

func sleeping(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return string(b)
}

// setupScript makes the node's mounts inside its mount namespace. bpffs is made shared
// (in this namespace only) because containerd refuses a HostToContainer volume whose source is
// on a private mount.
func (n *Node) setupScript() string {
	var b strings.Builder
	b.WriteString("mount -t bpf bpf /sys/fs/bpf\nmount --make-shared /sys/fs/bpf\n")
	for _, p := range nodePaths {
		fmt.Fprintf(&b, "mount --bind %s %s\n", filepath.Join(n.dir, p), p)
	}
	for k := range kubeletSysctls {
		fmt.Fprintf(&b, "mount --bind %s /proc/sys/%s\n", filepath.Join(n.dir, "sysctl", strings.ReplaceAll(k, "/", ".")), k)
	}
	return b.String()
}

func (n *Node) writeConfigs() error {
	c := n.cluster
	p := c.pki
	if err := p.issue("node-"+n.Name, "system:node:"+n.Name, []string{"system:nodes"}, nil, nil); err != nil {
		return err
	}
	if _, err := p.kubeconfig("node-"+n.Name, fmt.Sprintf("https://%s:%d", c.CP.IP, apiPort)); err != nil {
		return err
	}
	for k, v := range kubeletSysctls {
		if err := os.WriteFile(filepath.Join(n.dir, "sysctl", strings.ReplaceAll(k, "/", ".")), []byte(v+"\n"), 0o644); err != nil {
			return err
		}
	}
	// Gateway nodes carry the chart's gateway taint, as the node pools of docs/terraform do.
	taints := ""
	if n.Config.Gateway {
		taints = "registerWithTaints:\n- {key: " + GatewayLabel + ", value: \"true\", effect: NoSchedule}\n"
	}
	files := map[string]string{
		"containerd.toml": fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # Root here lacks CAP_SYS_RESOURCE: without this, runc cannot lower oom_score_adj and every
  # sandbox fails ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  disable_apparmor = true
  tolerate_missing_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[6]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[9]q
`, filepath.Join(n.dir, "containerd/root"), filepath.Join(n.dir, "containerd/state"), n.Socket,
			filepath.Join(n.dir, "containerd-ttrpc.sock"), PauseImage, filepath.Join(n.dir, "runc"),
			filepath.Join(c.Config.BinDir, "cni"), filepath.Join(n.dir, "net.d"), filepath.Join(n.dir, "opt")),
		"kubelet.yaml": fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[2]s}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: %[3]s
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[4]s
imageServiceEndpoint: unix://%[4]s
providerID: %[5]s
clusterDomain: cluster.local
serializeImagePulls: false
evictionHard: {memory.available: 1Mi, nodefs.available: 1%%, imagefs.available: 1%%, nodefs.inodesFree: 1%%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 4s
%[6]s`, n.IP, p.path("ca.crt"), n.CgroupRoot, n.Socket, n.Instance.ProviderID, taints),
		"kube-proxy.yaml": fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %[1]s}
hostnameOverride: %[2]s
clusterCIDR: %[3]s
mode: iptables
# Conntrack sizes and timeouts are host-wide: leave them as the machine has them.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`, p.path("kube-proxy.kubeconfig"), n.Name, c.Topo.Spec.ClusterCIDR),
		"net.d/10-bridge.conflist": fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "e2e",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, n.PodCIDR),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(n.dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Ctr runs ctr against the node's containerd, in the k8s.io namespace.
func (n *Node) Ctr(args ...string) ([]byte, error) {
	a := append([]string{"--address", n.Socket, "--namespace", "k8s.io"}, args...)
	out, err := exec.Command("ctr", a...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ctr %s on %s: %w: %s", strings.Join(args, " "), n.Name, err, out)
	}
	return out, nil
}

// Exec runs argv in the node's network and mount namespaces (ip, nft, bpftool...).
func (n *Node) Exec(argv ...string) ([]byte, error) {
	out, err := n.inMountNS(argv...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s on %s: %w: %s", strings.Join(argv, " "), n.Name, err, out)
	}
	return out, nil
}

func (n *Node) exited() error {
	for _, p := range []*proc{n.holder, n.containerd, n.kubelet, n.proxy} {
		if p != nil {
			if err := p.exited(); err != nil {
				return err
			}
		}
	}
	return nil
}

// stop stops kube-proxy and the kubelet, then containerd, then kills whatever is left in the
// node's cgroups (containers, shims) and removes them. The mount namespace, and with it every
// mount the node made (bpffs, the kubelet's tmpfs volumes, pod namespaces), goes with its last
// process.
func (n *Node) stop() error {
	for _, p := range []*proc{n.proxy, n.kubelet, n.containerd} {
		p.stop(10 * time.Second)
	}
	var err error
	if n.CgroupRoot != "" {
		err = removeCgroup(n.CgroupRoot)
	}
	n.holder.stop(time.Second)
	return err
}
