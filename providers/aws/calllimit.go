package aws

import (
	"context"
	"strings"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
	"golang.org/x/time/rate"

	"github.com/egressd/egressd/providers"
)

// callLimiter bounds the EC2 requests the provider sends, attempt by attempt (SDK retries
// included), with one token bucket for mutating actions and one for reads. The Provider-level
// limiter (providers.WithRateLimit) bounds operations, and one operation is one to five EC2
// calls; only this one bounds what the cloud's own limits see.
type callLimiter struct {
	mutating, read *rate.Limiter
}

func newCallLimiter(l providers.RateLimits) *callLimiter {
	mk := func(qps float64, burst int) *rate.Limiter {
		if qps <= 0 {
			return rate.NewLimiter(rate.Inf, 0)
		}
		return rate.NewLimiter(rate.Limit(qps), max(burst, 1))
	}
	return &callLimiter{mutating: mk(l.MutatingQPS, l.MutatingBurst), read: mk(l.ReadQPS, l.ReadBurst)}
}

// readPrefixes name the EC2 actions that change nothing.
var readPrefixes = []string{"Describe", "Get", "List"}

func (c *callLimiter) limiter(action string) *rate.Limiter {
	for _, p := range readPrefixes {
		if strings.HasPrefix(action, p) {
			return c.read
		}
	}
	return c.mutating
}

// apiOption adds the limiter to an SDK client's stack after the retry middleware, so every
// attempt waits for a token.
func (c *callLimiter) apiOption(stack *middleware.Stack) error {
	return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("egressdCallLimit",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			lim := c.limiter(awsmiddleware.GetOperationName(ctx))
			if err := lim.Wait(ctx); err != nil {
				return middleware.FinalizeOutput{}, middleware.Metadata{}, &providers.Error{Kind: providers.KindThrottled,
					Op: "waiting for the EC2 call limit", Err: err, RetryAfter: time.Second}
			}
			return next.HandleFinalize(ctx, in)
		}), middleware.After)
}
