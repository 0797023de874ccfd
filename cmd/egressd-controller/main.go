// Command egressd-controller runs the coordinator: gateway selection, health, egress IP
// placement and cloud sync, status, and garbage collection. It is the only egressd component
// that holds cloud credentials.
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/egressd/egressd/gateway/coordinator"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws"
	"github.com/egressd/egressd/providers/azure"
	"github.com/egressd/egressd/providers/gcp"
	"github.com/egressd/egressd/providers/plugin"
	"github.com/egressd/egressd/providers/static"

	// The image holds only this binary (hack/images), so there is no CA bundle for the cloud
	// APIs' TLS. These Mozilla roots are used only when the system has none: a bundle mounted
	// at /etc/ssl/certs (or named by SSL_CERT_FILE) still wins, for private endpoints.
	_ "golang.org/x/crypto/x509roots/fallback"
)

func main() {
	configPath := flag.String("config", "/etc/egressd/config.yaml", "controller configuration (clusterName, namespace, providers)")
	leaderElect := flag.Bool("leader-elect", true, "elect a leader among replicas")
	metricsAddr := flag.String("metrics-bind-address", ":8080", "Prometheus metrics address")
	healthAddr := flag.String("health-probe-bind-address", ":8081", "healthz/readyz address")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	// --kubeconfig is controller-runtime's own flag, read by ctrl.GetConfig.
	if err := run(*configPath, *leaderElect, *metricsAddr, *healthAddr); err != nil {
		fmt.Fprintln(os.Stderr, "egressd-controller:", err)
		os.Exit(1)
	}
}

func run(configPath string, leaderElect bool, metricsAddr, healthAddr string) error {
	cfg, err := coordinator.LoadConfig(configPath)
	if err != nil {
		return err
	}
	rest, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	return coordinator.Run(ctrl.SetupSignalHandler(), coordinator.RunOptions{
		Config:     cfg,
		RestConfig: rest,
		// The explicit registry: every provider implementation this binary carries.
		Registry: providers.Registry{
			"aws":    aws.Constructor,
			"gcp":    gcp.NewFromConfig,
			"azure":  azure.NewFromConfig,
			"static": static.Constructor,
			"plugin": plugin.Constructor,
		},
		LeaderElect:            leaderElect,
		MetricsBindAddress:     metricsAddr,
		HealthProbeBindAddress: healthAddr,
	})
}
