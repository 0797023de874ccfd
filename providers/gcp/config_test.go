package gcp_test

import (
	"encoding/json"
	"testing"

	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/providers/gcp"
)

func TestConfigStrict(t *testing.T) {
	conformance.RunConfig(t, conformance.Config{
		Parse:     func(raw json.RawMessage) error { _, err := gcp.ParseConfig(raw); return err },
		Construct: gcp.Constructor,
		Valid: `{"clusterName":"c1","project":"p1","endpoint":"http://127.0.0.1:1","withoutAuthentication":true,
			"maxAliasRangesPerInterface":10,"retryBudget":"30s"}`,
		WrongTypes: map[string]string{"maxAliasRangesPerInterface": `"ten"`, "retryBudget": `"later"`, "withoutAuthentication": `"yes"`, "project": `7`},
		Required:   []string{"clusterName"},
	})
}

// TestLabelKeys pins the label keys: they are derived from the tag keys every provider writes,
// and a change would orphan every address labelled before it.
func TestLabelKeys(t *testing.T) {
	if gcp.LabelCluster != "egressd-io-cluster" || gcp.LabelOwner != "egressd-io-owner" {
		t.Fatalf("label keys %q, %q", gcp.LabelCluster, gcp.LabelOwner)
	}
}
