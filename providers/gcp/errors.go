package gcp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	computepb "cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/googleapi"

	"github.com/egressd/egressd/providers"
)

// Retry pacing within the budget (Config.RetryBudget).
const (
	retryBase = 50 * time.Millisecond
	retryMax  = 2 * time.Second
)

func apiErr(err error) *googleapi.Error {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge
	}
	return nil
}

func reason(ge *googleapi.Error) string {
	if len(ge.Errors) > 0 {
		return ge.Errors[0].Reason
	}
	return ""
}

func isStatus(err error, code int) bool {
	ge := apiErr(err)
	return ge != nil && ge.Code == code
}

func isThrottle(ge *googleapi.Error) bool {
	if ge.Code == http.StatusTooManyRequests {
		return true
	}
	r := reason(ge)
	return ge.Code == http.StatusForbidden && (r == "rateLimitExceeded" || r == "userRateLimitExceeded")
}

// retryable: throttling, transient server errors and stale fingerprints (412), all of which
// are answered by re-reading and trying again.
func retryable(err error) bool {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return pe.Code == errCodeNotVisibleYet || pe.Code == errCodeReserving
	}
	ge := apiErr(err)
	if ge == nil {
		return false
	}
	switch {
	case isThrottle(ge):
		return true
	case ge.Code == http.StatusPreconditionFailed:
		return true
	case ge.Code >= 500:
		return true
	case ge.Code == http.StatusBadRequest && reason(ge) == "resourceNotReady":
		// The resource is still being changed by an operation (an address RESERVING).
		return true
	}
	return false
}

// errCodeNotVisibleYet marks a read that does not yet show a resource the provider just
// created or saw (409 alreadyExists then 404): eventual consistency, retried.
const errCodeNotVisibleYet = "NotVisibleYet"

// errCodeReserving marks an address read while its insert operation runs (status RESERVING):
// it cannot be bound or deleted until RESERVED, so the read is retried.
const errCodeReserving = "AddressReserving"

// classify turns an SDK error into a providers.Error where the kind is known.
func classify(op string, err error) error {
	if err == nil || providers.KindOf(err) != 0 {
		return err // nothing to classify, or classified already
	}
	ge := apiErr(err)
	if ge == nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	r := reason(ge)
	switch {
	case ge.Code == http.StatusNotFound:
		return &providers.Error{Kind: providers.KindNotFound, Op: op, Code: r, Err: err}
	case isThrottle(ge):
		return &providers.Error{Kind: providers.KindThrottled, Op: op, Code: r, Err: err}
	case ge.Code == http.StatusForbidden && (r == "quotaExceeded" || r == "QUOTA_EXCEEDED"):
		return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: r, Err: err}
	case ge.Code == http.StatusForbidden || ge.Code == http.StatusUnauthorized:
		return &providers.Error{Kind: providers.KindPermission, Op: op, Code: r, Err: err}
	case ge.Code == http.StatusConflict || ge.Code == http.StatusPreconditionFailed:
		return &providers.Error{Kind: providers.KindConflict, Op: op, Code: r, Err: err}
	}
	// Anything else, a 400 among them, is passed on with GCE's own message. A 400's reason
	// ("invalid", "invalidParameter") is shared by every malformed or refused request, and its
	// message is prose: egressd never classifies by it. A NIC's alias limit is the provider's
	// own check (maxAliasRangesPerInterface), before any call.
	return fmt.Errorf("%s: %w", op, err)
}

// opError turns a DONE operation carrying an error into an error (nil when it succeeded).
func opError(op string, pb *computepb.Operation) error {
	code := pb.GetHttpErrorStatusCode()
	errs := pb.GetError().GetErrors()
	if len(errs) == 0 && (code == 0 || (code >= 200 && code < 300)) {
		return nil
	}
	ecode, msg := "", pb.GetHttpErrorMessage()
	if len(errs) > 0 {
		ecode, msg = errs[0].GetCode(), errs[0].GetMessage()
	}
	err := fmt.Errorf("operation %s (%s) failed: %d %s: %s", pb.GetName(), pb.GetOperationType(), code, ecode, msg)
	switch ecode {
	case "QUOTA_EXCEEDED", "IP_SPACE_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED":
		return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: ecode, Err: err}
	case "IP_IN_USE_BY_ANOTHER_RESOURCE", "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE", "CONDITION_NOT_MET", "RESOURCE_ALREADY_EXISTS":
		return &providers.Error{Kind: providers.KindConflict, Op: op, Code: ecode, Err: err}
	case "RESOURCE_NOT_FOUND":
		return &providers.Error{Kind: providers.KindNotFound, Op: op, Code: ecode, Err: err}
	}
	if code == http.StatusForbidden {
		return &providers.Error{Kind: providers.KindPermission, Op: op, Code: ecode, Err: err}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// retry runs step until it succeeds, fails for good, or the budget is spent. Throttling past
// the budget surfaces as a Throttled error with a retry hint; a stale fingerprint past the
// budget as a Conflict.
func (p *Provider) retry(ctx context.Context, op string, step func() error) error {
	deadline := time.Now().Add(p.budget)
	delay := retryBase
	for {
		err := step()
		if err == nil {
			return nil
		}
		if !retryable(err) {
			return classify(op, err)
		}
		if time.Now().Add(delay).After(deadline) {
			ce := classify(op, err)
			var pe *providers.Error
			if errors.As(ce, &pe) && pe.Kind == providers.KindThrottled {
				pe.RetryAfter = delay
			}
			return ce
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", op, ctx.Err())
		case <-t.C:
		}
		delay *= 2
		if delay > retryMax {
			delay = retryMax
		}
	}
}
