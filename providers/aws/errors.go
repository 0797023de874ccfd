package aws

import (
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/smithy-go"

	"github.com/egressd/egressd/providers"
)

// kinds maps EC2 error codes to what the coordinator does about them.
var kinds = map[string]providers.ErrorKind{
	"InvalidNetworkInterfaceID.NotFound":  providers.KindNotFound,
	"InvalidNetworkInterfaceID.Malformed": providers.KindNotFound,
	"InvalidInstanceID.NotFound":          providers.KindNotFound,
	"InvalidInstanceID.Malformed":         providers.KindNotFound,
	"InvalidAllocationID.NotFound":        providers.KindNotFound,
	"InvalidAssociationID.NotFound":       providers.KindNotFound,
	"InvalidAttachmentID.NotFound":        providers.KindNotFound,
	"InvalidSubnetID.NotFound":            providers.KindNotFound,
	"InvalidAddress.NotFound":             providers.KindNotFound,

	"PrivateIpAddressLimitExceeded":     providers.KindCapacityExhausted,
	"InsufficientFreeAddressesInSubnet": providers.KindCapacityExhausted,
	"AttachmentLimitExceeded":           providers.KindCapacityExhausted,
	"AddressLimitExceeded":              providers.KindCapacityExhausted,
	"NetworkInterfaceLimitExceeded":     providers.KindCapacityExhausted,
	"InsufficientAddressCapacity":       providers.KindCapacityExhausted,
	"TagLimitExceeded":                  providers.KindCapacityExhausted,

	"RequestLimitExceeded": providers.KindThrottled,
	"Throttling":           providers.KindThrottled,
	"ThrottlingException":  providers.KindThrottled,
	"RequestThrottled":     providers.KindThrottled,

	"InvalidIPAddress.InUse":           providers.KindConflict,
	"Resource.AlreadyAssociated":       providers.KindConflict,
	"InvalidNetworkInterface.InUse":    providers.KindConflict,
	"IncorrectState":                   providers.KindConflict,
	"IdempotentParameterMismatch":      providers.KindConflict,
	"InvalidParameterValue.InUse":      providers.KindConflict,
	"UnauthorizedOperation":            providers.KindPermission,
	"AuthFailure":                      providers.KindPermission,
	"OperationNotPermitted":            providers.KindPermission,
	"Blocked":                          providers.KindPermission,
	"OptInRequired":                    providers.KindPermission,
	"InvalidClientTokenId":             providers.KindPermission,
	"UnrecognizedClientException":      providers.KindPermission,
	"AccessDenied":                     providers.KindPermission,
	"AccessDeniedException":            providers.KindPermission,
	"SignatureDoesNotMatch":            providers.KindPermission,
	"InvalidNetworkInterface.NotFound": providers.KindNotFound,
}

// throttleRetryAfter is the hint given with a throttling error: EC2's token buckets refill
// within a second or two, and the SDK has already backed off for the whole retry budget.
const throttleRetryAfter = 2 * time.Second

// classify wraps err with the operation and, when EC2's code says what happened, a kind.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var quota ratelimit.QuotaExceededError
	if errors.As(err, &quota) {
		return &providers.Error{Kind: providers.KindThrottled, Op: op, Code: "RetryQuotaExceeded", RetryAfter: throttleRetryAfter, Err: err}
	}
	if code := errorCode(err); code != "" {
		if k, ok := kinds[code]; ok {
			e := &providers.Error{Kind: k, Op: op, Code: code, Err: err}
			if k == providers.KindThrottled {
				e.RetryAfter = throttleRetryAfter
			}
			return e
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
