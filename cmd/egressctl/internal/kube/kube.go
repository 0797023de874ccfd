// Package kube connects egressctl to the API server the way kubectl does: --kubeconfig, else
// $KUBECONFIG, else ~/.kube/config, else the in-cluster service account; --context picks a
// context and the context's namespace is the default namespace.
package kube

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// Flags are the connection flags every API command takes.
type Flags struct {
	Kubeconfig string
	Context    string
}

// Connect returns a client that knows the core and egressd kinds, and the namespace of the
// selected context ("default" when it names none).
func Connect(f Flags) (client.Client, string, error) {
	cfg, ns, err := Config(f)
	if err != nil {
		return nil, "", err
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, "", err
	}
	if err := egressv1.AddToScheme(scheme); err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("creating API client: %w", err)
	}
	return c, ns, nil
}

// Config loads the REST config of the selected context and its namespace ("default" when it
// names none).
func Config(f Flags) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.Kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: f.Context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("loading kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("reading the context's namespace: %w", err)
	}
	cfg.UserAgent = "egressctl"
	return cfg, ns, nil
}
