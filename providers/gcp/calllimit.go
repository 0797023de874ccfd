package gcp

import (
	"net/http"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/egressd/egressd/providers"
)

// callLimiter bounds the Compute requests the provider sends, attempt by attempt (the
// provider's retries and the SDK's included), with one token bucket for mutating methods and
// one for reads, in the configuration shape of the AWS provider (Config.CallLimits). The
// Provider-level limiter (providers.WithRateLimit) bounds operations, and one operation is
// one to fourteen Compute calls; only this one bounds what the project's API rate quotas see.
type callLimiter struct {
	base           http.RoundTripper
	mutating, read *rate.Limiter
}

func newCallLimiter(base http.RoundTripper, l providers.RateLimits) *callLimiter {
	mk := func(qps float64, burst int) *rate.Limiter {
		if qps <= 0 {
			return rate.NewLimiter(rate.Inf, 0)
		}
		return rate.NewLimiter(rate.Limit(qps), max(burst, 1))
	}
	return &callLimiter{base: base, mutating: mk(l.MutatingQPS, l.MutatingBurst), read: mk(l.ReadQPS, l.ReadBurst)}
}

// limiter picks the bucket of a request: GET (get, list, aggregatedList) and the operations'
// wait method (POST .../operations/NAME/wait, which changes nothing) are reads; every other
// method (insert, delete, updateNetworkInterface, add/deleteAccessConfig) mutates.
func (c *callLimiter) limiter(r *http.Request) *rate.Limiter {
	if r.Method == http.MethodGet || (r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/wait")) {
		return c.read
	}
	return c.mutating
}

// RoundTrip implements http.RoundTripper: it waits for a token, then sends.
func (c *callLimiter) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := c.limiter(r).Wait(r.Context()); err != nil {
		return nil, &providers.Error{Kind: providers.KindThrottled, Op: "waiting for the Compute call limit", Err: err, RetryAfter: time.Second}
	}
	return c.base.RoundTrip(r)
}
