package aws

import (
	"testing"

	"github.com/aws/smithy-go"

	"github.com/egressd/egressd/providers"
)

func TestClassifyAddressTaken(t *testing.T) {
	for _, tc := range []struct {
		code, msg string
		want      providers.ErrorKind
	}{
		{"InvalidIPAddress.InUse", "The specified address 10.0.1.5 is already in use.", providers.KindConflict},
		{"InvalidParameterValue", "Address 10.0.1.5 is the primary address of eni-0abc and cannot be reassigned", providers.KindConflict},
		{"InvalidParameterValue", "Address 10.0.1.5 is already assigned to eni-0abc", providers.KindConflict},
		{"InvalidParameterValue", "Invalid value 'x' for PrivateIpAddress", 0},
		{"PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.", providers.KindCapacityExhausted},
	} {
		err := classify("assigning", &smithy.GenericAPIError{Code: tc.code, Message: tc.msg})
		if got := providers.KindOf(err); got != tc.want {
			t.Errorf("%s %q: kind %v, want %v", tc.code, tc.msg, got, tc.want)
		}
	}
}
