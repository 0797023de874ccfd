package static_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/providers/static"
)

// TestConfigStrict: the configuration cases of the conformance suite, as for every provider
// in the controller's registry.
func TestConfigStrict(t *testing.T) {
	conformance.RunConfig(t, conformance.Config{
		Construct:  static.Constructor,
		Valid:      `{"clusterName":"c1","pools":[{"zone":"dc1","addresses":["192.0.2.16/28"],"interface":"eth0"}],"maxIPsPerNode":4}`,
		WrongTypes: map[string]string{"pools": `{"zone":"dc1"}`, "maxIPsPerNode": `"4"`, "clusterName": `["c1"]`},
	})
}

// TestConfigNestedField: nested objects are parsed as strictly as the top level, and the error
// names both the outer and the inner field ("ips" misspelt for a pool's "addresses").
func TestConfigNestedField(t *testing.T) {
	_, err := static.Constructor(t.Context(), "dc1", json.RawMessage(`{"pools":[{"zone":"dc1","ips":["192.0.2.1"]}]}`))
	if err == nil || !strings.Contains(err.Error(), `"pools"`) || !strings.Contains(err.Error(), `"ips"`) {
		t.Fatalf("want an error naming pools and ips, got %v", err)
	}
}
