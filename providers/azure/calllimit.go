package azure

import (
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"golang.org/x/time/rate"

	"github.com/egressd/egressd/providers"
)

// callLimiter bounds the ARM requests the provider sends, attempt by attempt (the SDK's
// retries and the long-running operations' polls included), with one token bucket for
// mutating requests and one for reads, in the configuration shape of the AWS and GCP
// providers (Config.CallLimits). ARM throttles per subscription, principal, region and
// operation type (reads, writes, deletes), and the network resource provider again per
// subscription and region (docs/azure.md, "Rate limits"); the Provider-level limiter
// (providers.WithRateLimit) bounds operations, and one operation is one to a dozen ARM
// requests, so only this one bounds what those limits see.
type callLimiter struct {
	mutating, read *rate.Limiter
}

// CallLimitPolicy returns the per-attempt ARM call limiter of l, for arm.ClientOptions'
// PerRetryPolicies (New adds it from Config.CallLimits; callers of WithClients add it
// themselves).
func CallLimitPolicy(l providers.RateLimits) policy.Policy {
	mk := func(qps float64, burst int) *rate.Limiter {
		if qps <= 0 {
			return rate.NewLimiter(rate.Inf, 0)
		}
		return rate.NewLimiter(rate.Limit(qps), max(burst, 1))
	}
	return &callLimiter{mutating: mk(l.MutatingQPS, l.MutatingBurst), read: mk(l.ReadQPS, l.ReadBurst)}
}

// limiter picks the bucket of a request: GET and HEAD read (lists, gets, operation polls);
// PUT, PATCH, DELETE and POST change something.
func (c *callLimiter) limiter(method string) *rate.Limiter {
	if method == http.MethodGet || method == http.MethodHead {
		return c.read
	}
	return c.mutating
}

// Do implements policy.Policy: it waits for a token, then sends. A wait that would pass the
// request's deadline fails at once, Throttled, and is not retried by the SDK (a retry would
// wait again).
func (c *callLimiter) Do(req *policy.Request) (*http.Response, error) {
	if err := c.limiter(req.Raw().Method).Wait(req.Raw().Context()); err != nil {
		return nil, notRetried{&providers.Error{Kind: providers.KindThrottled, Op: "waiting for the ARM call limit", Code: "ClientRateLimit",
			Err: err, RetryAfter: time.Second}}
	}
	return req.Next()
}

// notRetried marks an error the SDK's retry policy must not retry (azcore's
// errorinfo.NonRetriable).
type notRetried struct{ error }

func (notRetried) NonRetriable() {}

func (e notRetried) Unwrap() error { return e.error }
