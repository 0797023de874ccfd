package azure_test

import (
	"testing"

	"github.com/egressd/egressd/providers/azure/azuresimtest"
	"github.com/egressd/egressd/providers/conformance"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, azuresimtest.Harness{})
}
