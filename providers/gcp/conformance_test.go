package gcp_test

import (
	"testing"

	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/providers/gcp/gcpsimtest"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, gcpsimtest.Harness{})
}
