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

// classify maps ARM errors to provider errors.
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
