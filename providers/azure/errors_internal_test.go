package azure

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// TestIsBusy: the codes of a write refused because another operation holds the resource are
// re-read and retried, whatever their status (409, or the network RP's 429s); a rate limit's
// 429 and a stale etag are not "busy".
func TestIsBusy(t *testing.T) {
	for _, tc := range []struct {
		status int
		code   string
		want   bool
	}{
		{http.StatusConflict, "AnotherOperationInProgress", true},
		{http.StatusTooManyRequests, "RetryableError", true},
		{http.StatusTooManyRequests, "RetryableErrorDueToAnotherOperation", true},
		{http.StatusTooManyRequests, "SubscriptionRequestsThrottled", false},
		{http.StatusPreconditionFailed, "PreconditionFailed", false},
	} {
		err := fmt.Errorf("writing: %w", &azcore.ResponseError{StatusCode: tc.status, ErrorCode: tc.code})
		if got := isBusy(err); got != tc.want {
			t.Errorf("%d %s: busy %v, want %v", tc.status, tc.code, got, tc.want)
		}
	}
	if isBusy(errors.New("no ARM response")) {
		t.Error("an error without an ARM response is busy")
	}
}
