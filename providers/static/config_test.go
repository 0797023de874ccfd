package static_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/providers/static"
)

func TestConfigStrict(t *testing.T) {
	conformance.RunConfig(t, conformance.Config{
		Parse:      func(raw json.RawMessage) error { _, err := static.ParseConfig(raw); return err },
		Construct:  static.Constructor,
		Valid:      `{"clusterName":"c1","pools":[{"zone":"dc1","addresses":["192.0.2.16/28"],"interface":"eth0"}],"maxIPsPerNode":4}`,
		WrongTypes: map[string]string{"pools": `{"zone":"dc1"}`, "maxIPsPerNode": `"4"`, "clusterName": `["c1"]`},
		Required:   []string{"clusterName", "pools"},
	})
}

// TestConfigNestedField: a pool's fields are parsed as strictly as the top level, and the error
// names both the list and the field ("ips" misspelt for "addresses").
func TestConfigNestedField(t *testing.T) {
	_, err := static.ParseConfig(json.RawMessage(`{"clusterName":"c1","pools":[{"zone":"dc1","ips":["192.0.2.1"]}]}`))
	if err == nil || !strings.Contains(err.Error(), `"pools"`) || !strings.Contains(err.Error(), `"ips"`) {
		t.Fatalf("want an error naming pools and ips, got %v", err)
	}
}
