package coordinator

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/providers"
)

// Static pools live in each EgressGateway: a controller provider named "static" or of type
// static is refused with a message that says where they go, since the ledger's spec.provider
// "static" must mean the static source alone.
func TestBuildProvidersRefusesStatic(t *testing.T) {
	reg := providers.Registry{"plugin": func(context.Context, string, json.RawMessage) (providers.Provider, error) {
		t.Fatal("constructed a provider that should have been refused")
		return nil, nil
	}}
	for name, raw := range map[string]string{
		"static":  `{"pools":[{"zone":"a","addresses":["192.0.2.10"]}]}`,
		"onprem":  `{"type":"static","pools":[]}`,
		"static2": `{"type":"static"}`,
	} {
		cfg := Config{ClusterName: "c1", Providers: map[string]json.RawMessage{name: json.RawMessage(raw)}}
		_, err := BuildProviders(context.Background(), cfg, reg, prometheus.NewRegistry())
		if err == nil || !strings.Contains(err.Error(), "spec.addresses.static") || !strings.Contains(err.Error(), name) {
			t.Errorf("provider %s %s: %v, want an error naming it and spec.addresses.static", name, raw, err)
		}
	}
}
