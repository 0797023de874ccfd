package agent

import (
	"context"
	"fmt"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/egressd/egressd/gateway/agent/dataplane"
)

// CommandOptions are the egressd-agent command line.
type CommandOptions struct {
	NodeName, Kubeconfig, Namespace            string
	MetricsBindAddress, HealthProbeBindAddress string
	TunnelPort, ProbePort                      uint16
	PodInterfacePatterns                       []string
	// BPFFS is the bpffs mount; egressd pins under BPFFS/egressd.
	BPFFS string
	// Cleanup removes the datapath instead of running.
	Cleanup bool
}

// Main is the egressd-agent composition root: the datapath, the manager and the agent. It
// runs until ctx ends and leaves the datapath running (a restarted agent picks it up from the
// pinned maps); only Cleanup removes it.
func Main(ctx context.Context, o CommandOptions) error {
	logger := log.FromContext(ctx)
	dp := dataplane.New(dataplane.Config{
		PinRoot:           filepath.Join(o.BPFFS, "egressd"),
		TunnelPort:        o.TunnelPort,
		InterfacePatterns: o.PodInterfacePatterns,
	})
	if o.Cleanup {
		if err := dp.Remove(ctx); err != nil {
			return fmt.Errorf("removing the datapath: %w", err)
		}
		logger.Info("datapath removed")
		return nil
	}
	defer dp.Close() // file descriptors only; pinned maps and links stay

	var cfg *rest.Config
	var err error
	if o.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("loading the API server config: %w", err)
	}
	mgr, err := NewManager(cfg, ManagerOptions{NodeName: o.NodeName,
		MetricsBindAddress: o.MetricsBindAddress, HealthProbeBindAddress: o.HealthProbeBindAddress})
	if err != nil {
		return err
	}
	if _, err := Setup(mgr, Config{NodeName: o.NodeName, Namespace: o.Namespace, ProbePort: o.ProbePort,
		Dataplane: dp, Registerer: metrics.Registry}); err != nil {
		return err
	}
	logger.Info("starting", "node", o.NodeName)
	return mgr.Start(ctx)
}
