package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/egressd/egressd/bpf/marks"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
)

// Values of CommandOptions.Steering.
const (
	SteeringStack    = "stack"
	SteeringRedirect = "redirect"
)

// CommandOptions are the egressd-agent command line.
type CommandOptions struct {
	NodeName, Kubeconfig, Namespace            string
	MetricsBindAddress, HealthProbeBindAddress string
	TunnelPort, ProbePort                      uint16
	PodInterfacePatterns                       []string
	// Steering is how steered packets reach the tunnel: "stack" (through the rest of the tc
	// chain and the node's netfilter, so the CNI's NetworkPolicy applies) or "redirect" (the
	// classifier redirects them itself, skipping both; dataplane.Config.Redirect).
	Steering string
	// SNATPorts is the source port range a gateway translates to, "min-max" (dataplane.Config.SNATPorts);
	// empty: the kernel's choice.
	SNATPorts string
	// PrefixBudget bounds the prefixes of policies; the controller's must be the same.
	PrefixBudget contract.PrefixBudget
	// BPFFS is the bpffs mount; egressd pins under BPFFS/egressd.
	BPFFS string
	// Cleanup removes the datapath instead of running.
	Cleanup bool
	// DaemonSet is the name of the agents' DaemonSet in Namespace. When set, a stopping agent
	// whose DaemonSet is being deleted or gone (an uninstall) removes the datapath.
	DaemonSet string
	// Uninstall deletes DaemonSet in the foreground and waits for it to go, instead of running:
	// the chart's pre-delete hook.
	Uninstall bool
	// HoldEstablished is how long an established TCP flow waits for its egress IP to land on a
	// listed gateway after its own went away (dataplane.Config.HoldEstablished; negative: never).
	HoldEstablished time.Duration
	// NoDeliveryProof serves cloud egress IPs on the cloud's word (Config.NoDeliveryProof).
	NoDeliveryProof bool
	// MarkMask is the packet mark bits egressd owns on the node (marks.ParseMask, e.g.
	// "0x00003fff"); empty: marks.DefaultMask.
	MarkMask string
}

// Main is the egressd-agent composition root: the datapath, the manager and the agent. It
// runs until ctx ends and leaves the datapath running (a restarted agent picks it up from the
// pinned maps) unless its DaemonSet is being deleted (uninstall.go); Cleanup removes it.
func Main(ctx context.Context, o CommandOptions) error {
	logger := log.FromContext(ctx)
	if o.Steering != SteeringStack && o.Steering != SteeringRedirect {
		return fmt.Errorf("--steering %q: want %q or %q", o.Steering, SteeringStack, SteeringRedirect)
	}
	snatPorts, err := dataplane.ParsePortRange(o.SNATPorts)
	if err != nil {
		return fmt.Errorf("--snat-ports: %w", err)
	}
	marks, err := marks.ParseMask(o.MarkMask)
	if err != nil {
		return fmt.Errorf("--mark-mask: %w", err)
	}
	logger.Info("packet marks", "layout", marks.String())
	dp := dataplane.New(dataplane.Config{
		Marks:             marks,
		SNATPorts:         snatPorts,
		PinRoot:           filepath.Join(o.BPFFS, "egressd"),
		TunnelPort:        o.TunnelPort,
		InterfacePatterns: o.PodInterfacePatterns,
		Redirect:          o.Steering == SteeringRedirect,
		HoldEstablished:   o.HoldEstablished,
	})
	if o.Cleanup {
		if err := dp.Remove(ctx); err != nil {
			return fmt.Errorf("removing the datapath: %w", err)
		}
		logger.Info("datapath removed")
		return nil
	}

	var cfg *rest.Config
	if o.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("loading the API server config: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if o.Uninstall {
		if o.DaemonSet == "" {
			return fmt.Errorf("uninstall needs the DaemonSet's name (--daemonset)")
		}
		logger.Info("deleting the agents' DaemonSet in the foreground", "daemonset", o.DaemonSet)
		return DeleteDaemonSet(ctx, cs, o.Namespace, o.DaemonSet)
	}
	defer dp.Close() // file descriptors only; pinned maps and links stay
	if o.DaemonSet != "" {
		defer func() {
			// ctx is done: ask with a context of its own.
			gone, err := Uninstalling(context.WithoutCancel(ctx), cs, o.Namespace, o.DaemonSet)
			if err != nil {
				logger.Error(err, "keeping the datapath: cannot tell an uninstall from a restart")
				return
			}
			if !gone {
				return
			}
			if err := dp.Remove(context.WithoutCancel(ctx)); err != nil {
				logger.Error(err, "removing the datapath on uninstall")
				return
			}
			logger.Info("DaemonSet deleted: datapath removed", "daemonset", o.DaemonSet)
		}()
	}
	flows := NewFlowHub()
	mgr, err := NewManager(cfg, ManagerOptions{NodeName: o.NodeName, Flows: flows,
		MetricsBindAddress: o.MetricsBindAddress, HealthProbeBindAddress: o.HealthProbeBindAddress})
	if err != nil {
		return err
	}
	if _, err := Setup(mgr, Config{NodeName: o.NodeName, Namespace: o.Namespace, ProbePort: o.ProbePort,
		PrefixBudget: o.PrefixBudget, Dataplane: dp, Registerer: metrics.Registry, NoDeliveryProof: o.NoDeliveryProof,
		MaxGroup: marks.MaxGroup(), Flows: flows}); err != nil {
		return err
	}
	logger.Info("starting", "node", o.NodeName)
	return mgr.Start(ctx)
}
