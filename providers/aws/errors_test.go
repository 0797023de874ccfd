package aws

import (
	"testing"

	"github.com/aws/smithy-go"

	"github.com/egressd/egressd/providers"
)

// TestClassifyByCode: kinds come from EC2's error codes. InvalidParameterValue is EC2's code
// for every bad parameter, so its message never makes it a Conflict (EnsureIP asks EC2 who
// holds the address instead: TestEnsureOthersPrimary).
func TestClassifyByCode(t *testing.T) {
	for _, tc := range []struct {
		code, msg string
		want      providers.ErrorKind
	}{
		{"InvalidIPAddress.InUse", "The specified address 10.0.1.5 is already in use.", providers.KindConflict},
		{"InvalidParameterValue", "Address 10.0.1.5 is the primary address of eni-0abc and cannot be reassigned", 0},
		{"InvalidParameterValue", "Address 10.0.1.5 is already assigned to eni-0abc", 0},
		{"InvalidParameterValue", "Invalid value 'x' for PrivateIpAddress", 0},
		{"PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.", providers.KindCapacityExhausted},
	} {
		err := classify("assigning", &smithy.GenericAPIError{Code: tc.code, Message: tc.msg})
		if got := providers.KindOf(err); got != tc.want {
			t.Errorf("%s %q: kind %v, want %v", tc.code, tc.msg, got, tc.want)
		}
	}
}
