// Command egressd-agent is egressd's node agent (gateway/agent). `egressd-agent cleanup` (or
// --cleanup) removes the datapath; SIGTERM stops the agent and leaves the datapath running,
// unless the agents' DaemonSet (--daemonset) is being deleted. `egressd-agent uninstall`
// deletes that DaemonSet in the foreground and waits (the chart's pre-delete hook).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager/signals"

	"github.com/egressd/egressd/bpf/marks"
	"github.com/egressd/egressd/gateway/agent"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
)

func main() {
	var o agent.CommandOptions
	var patterns string
	var tunnelPort, probePort uint
	var proveDelivery bool
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = contract.DefaultNamespace
	}
	flag.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	flag.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: in-cluster config")
	flag.StringVar(&o.Namespace, "namespace", ns, "namespace of the heartbeat Lease (default $POD_NAMESPACE)")
	flag.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":9090", "Prometheus metrics address; 0 disables")
	flag.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", ":9091", "/healthz and /readyz address; 0 disables")
	flag.UintVar(&tunnelPort, "tunnel-port", contract.DefaultTunnelPort, "VXLAN UDP port, the same on every node")
	flag.UintVar(&probePort, "probe-port", contract.DefaultProbePort, "probe UDP port, the same on every node")
	flag.IntVar(&o.PrefixBudget.Namespace, "namespace-prefix-budget", contract.DefaultNamespacePrefixBudget,
		"prefixes (destinationCIDRs plus excludedCIDRs) the EgressPolicies of one namespace may hold; the controller's policyPrefixBudget.namespace must be the same")
	flag.IntVar(&o.PrefixBudget.Cluster, "cluster-prefix-budget", contract.DefaultClusterPrefixBudget,
		"prefixes all ClusterEgressPolicies may hold; the controller's policyPrefixBudget.cluster must be the same")
	flag.StringVar(&patterns, "pod-interface-patterns", strings.Join(dataplane.DefaultInterfacePatterns, ","), "comma-separated name patterns of pod interfaces")
	flag.StringVar(&o.SNATPorts, "snat-ports", "", `source ports a gateway translates flows to on each egress IP, "min-max" (the port budget of one egress IP toward one destination); empty: the kernel's 1024-65535`)
	flag.StringVar(&o.MarkMask, "mark-mask", fmt.Sprintf("%#08x", marks.DefaultMask),
		"packet mark bits egressd owns on the node (steer, reply and tunnel flags, a magic, the group id); bits outside it are left to the CNI: Calico 0x00003fff, Cilium 0xffff0000 (docs/datapath.md#packet-marks)")
	flag.StringVar(&o.Steering, "steering", agent.SteeringStack, `how steered packets reach the tunnel: "stack" (the CNI's NetworkPolicy applies) or "redirect" (skips it; for CNIs that bypass the stack)`)
	flag.StringVar(&o.BPFFS, "bpffs", "/sys/fs/bpf", "bpffs mount; egressd pins under <bpffs>/egressd")
	flag.BoolVar(&proveDelivery, "prove-delivery", true, "SNAT to a cloud egress IP only once a probe sent from it came back (the cloud's fabric delivers it here); false: on the cloud's word")
	flag.DurationVar(&o.HoldEstablished, "hold-established", dataplane.DefaultHoldEstablished,
		"how long an established TCP connection whose gateway went away waits for its egress IP to land on another gateway (it then keeps its source address and port) before it is sent to any gateway; negative: never")
	flag.BoolVar(&o.Cleanup, "cleanup", false, "remove the datapath and exit")
	flag.StringVar(&o.DaemonSet, "daemonset", "", "the agents' DaemonSet in --namespace: stopping while it is being deleted removes the datapath")
	zo := zap.Options{}
	zo.BindFlags(flag.CommandLine)
	flag.Parse()
	log.SetLogger(zap.New(zap.UseFlagOptions(&zo)))
	o.TunnelPort, o.ProbePort = uint16(tunnelPort), uint16(probePort)
	o.NoDeliveryProof = !proveDelivery
	o.PodInterfacePatterns = strings.Split(patterns, ",")
	o.Cleanup = o.Cleanup || flag.Arg(0) == "cleanup"
	o.Uninstall = flag.Arg(0) == "uninstall"

	if err := agent.Main(signals.SetupSignalHandler(), o); err != nil {
		log.Log.Error(err, "egressd-agent")
		os.Exit(1)
	}
}
