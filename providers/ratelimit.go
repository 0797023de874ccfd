package providers

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// RateLimits bound the calls one provider makes, before they reach the cloud's own limits
// (EC2 and ARM throttle per account and region, with separate and larger budgets for reads).
// A zero QPS means unlimited.
type RateLimits struct {
	MutatingQPS   float64 `json:"mutatingQPS,omitempty"`
	MutatingBurst int     `json:"mutatingBurst,omitempty"`
	ReadQPS       float64 `json:"readQPS,omitempty"`
	ReadBurst     int     `json:"readBurst,omitempty"`
}

// DefaultRateLimits stay well below EC2's documented mutating bucket (refill 5/s per action
// class) and leave headroom for other tools in the same account.
var DefaultRateLimits = RateLimits{MutatingQPS: 2, MutatingBurst: 10, ReadQPS: 10, ReadBurst: 20}

func newLimiter(qps float64, burst int) *rate.Limiter {
	if qps <= 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	if burst < 1 {
		burst = 1
	}
	return rate.NewLimiter(rate.Limit(qps), burst)
}

// WithRateLimit returns p limited client-side: mutating operations and reads draw from
// separate token buckets. A call that would have to wait past its context's deadline returns
// a Throttled error at once, with the wait as RetryAfter, instead of sleeping into a timeout.
func WithRateLimit(p Provider, l RateLimits) Provider {
	mut := newLimiter(l.MutatingQPS, l.MutatingBurst)
	read := newLimiter(l.ReadQPS, l.ReadBurst)
	return &hooked{next: p, h: func(ctx context.Context, op Operation, fn func(context.Context) error) error {
		lim := read
		if op.Mutating() {
			lim = mut
		}
		if err := wait(ctx, lim, p.Name(), op); err != nil {
			return err
		}
		return fn(ctx)
	}}
}

func wait(ctx context.Context, lim *rate.Limiter, provider string, op Operation) error {
	r := lim.Reserve()
	delay := r.Delay()
	if delay == 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
		r.Cancel()
		return &Error{Kind: KindThrottled, Op: provider + " " + string(op), Code: "ClientRateLimit",
			RetryAfter: delay, Err: context.DeadlineExceeded}
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return &Error{Kind: KindThrottled, Op: provider + " " + string(op), Code: "ClientRateLimit",
			RetryAfter: delay, Err: ctx.Err()}
	}
}
