package gcp_test

import (
	"testing"

	"github.com/egressd/egressd/providers/gcp"
)

// TestLabelKeys pins the label keys: they are derived from the tag keys every provider writes,
// and a change would orphan every address labelled before it.
func TestLabelKeys(t *testing.T) {
	if gcp.LabelCluster != "egressd-io-cluster" || gcp.LabelOwner != "egressd-io-owner" {
		t.Fatalf("label keys %q, %q", gcp.LabelCluster, gcp.LabelOwner)
	}
}
