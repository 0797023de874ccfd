package aws_test

import (
	"testing"

	"github.com/egressd/egressd/providers/aws/awssimtest"
	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/test/cloudsim/simkit"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, awssimtest.Harness{})
}

// TestConformanceAWSTiming runs the suite with the simulator's AWS timing profile at 1/100th
// of its delays (calls ~1.5 ms, propagation ~55 ms, describe lag up to 100 ms, attaching and
// detaching ~30 ms), at a fixed seed: the provider must converge, never leak and never hold
// an address twice while describes lag its own writes.
func TestConformanceAWSTiming(t *testing.T) {
	p := simkit.MustProfile("aws:0.01")
	conformance.Run(t, awssimtest.Harness{Timing: &p, Seed: 14})
}
