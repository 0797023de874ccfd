package azure

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/egressd/egressd/providers"
)

// classify maps ARM errors to provider errors by HTTP status and ARM error code
// (azcore.ResponseError's StatusCode and ErrorCode), never by message text.
func classify(op string, err error) error {
	if err == nil || providers.KindOf(err) != 0 {
		return err // nothing to classify, or classified already
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s: %w", op, err)
	}
	code := re.ErrorCode
	switch {
	case re.StatusCode == http.StatusNotFound:
		return &providers.Error{Kind: providers.KindNotFound, Op: op, Code: code, Err: err}
	case re.StatusCode == http.StatusTooManyRequests:
		e := &providers.Error{Kind: providers.KindThrottled, Op: op, Code: code, Err: err}
		if re.RawResponse != nil {
			if s := re.RawResponse.Header.Get("Retry-After"); s != "" {
				if d, err := time.ParseDuration(s + "s"); err == nil {
					e.RetryAfter = d
				}
			}
		}
		return e
	case re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized:
		return &providers.Error{Kind: providers.KindPermission, Op: op, Code: code, Err: err}
	case re.StatusCode == http.StatusConflict || re.StatusCode == http.StatusPreconditionFailed ||
		code == "PrivateIPAddressInUse" || code == "PublicIPAddressInUse" || code == "AnotherOperationInProgress":
		return &providers.Error{Kind: providers.KindConflict, Op: op, Code: code, Err: err}
	case strings.Contains(code, "Limit") || strings.Contains(code, "Quota") || code == "SubnetIsFull":
		return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: code, Err: err}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// armCode returns the HTTP status and ARM error code of err (0 and "" when it carries no ARM
// response). A failed long-running operation carries the operation's error code.
func armCode(err error) (int, string) {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return 0, ""
	}
	return re.StatusCode, re.ErrorCode
}

// isStale reports a write refused because its If-Match etag is no longer the resource's:
// another writer changed it since it was read.
func isStale(err error) bool {
	status, code := armCode(err)
	return status == http.StatusPreconditionFailed || code == "PreconditionFailed"
}

// isBusy reports a write refused, or an operation failed, because another operation on the
// resource or one it references is running: AnotherOperationInProgress (409, or an operation's
// error), RetryableError (429 with ReferencedResourceNotProvisioned) and
// RetryableErrorDueToAnotherOperation (the 429 the network RP answers for a resource locked by
// another operation); the SDK's retry policy retries the 429s first, these come past it.
func isBusy(err error) bool {
	_, code := armCode(err)
	return code == "AnotherOperationInProgress" || code == "RetryableError" || code == "RetryableErrorDueToAnotherOperation"
}
