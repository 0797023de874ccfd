package azure_test

import (
	"testing"

	"github.com/egressd/egressd/providers/azure/azuresimtest"
	"github.com/egressd/egressd/providers/conformance"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, azuresimtest.Harness{})
}

// TestConformanceUniform runs the suite on Uniform scale-set instances (AKS's default pools),
// where egress IPs are public only.
func TestConformanceUniform(t *testing.T) {
	conformance.Run(t, azuresimtest.Harness{Uniform: true})
}
