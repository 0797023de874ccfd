package aws_test

import (
	"testing"

	"github.com/egressd/egressd/providers/aws/awssimtest"
	"github.com/egressd/egressd/providers/conformance"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, awssimtest.Harness{})
}
