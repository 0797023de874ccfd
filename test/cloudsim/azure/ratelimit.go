package azuresim

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// ARM's request classes for throttling: each has its own token bucket per subscription (and
// principal and region; the simulator has one subscription, one principal, one region).
const (
	RateReads   = "reads"
	RateWrites  = "writes"
	RateDeletes = "deletes"
)

// rateClass is the ARM throttling class of an HTTP method: GET (and HEAD) reads, DELETE
// deletes, every other method writes.
func rateClass(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead:
		return RateReads
	case http.MethodDelete:
		return RateDeletes
	}
	return RateWrites
}

// armBucket is one token bucket of ARM's regional throttling (since 2024): bucket tokens at
// most, refilled at refill per second, one token per request.
type armBucket struct {
	size, refill, tokens float64
	last                 time.Time
}

// SetRateLimit installs ARM's token-bucket throttling on a request class (RateReads,
// RateWrites, RateDeletes): a bucket of size tokens refilled at refillPerSecond. ARM's
// documented subscription defaults are 250 and 25/s for reads, 200 and 10/s for writes and for
// deletes (learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling).
// A request finding the bucket empty answers 429 SubscriptionRequestsThrottled with Retry-After
// (whole seconds until a token is back); every answered request carries
// x-ms-ratelimit-remaining-subscription-<class>. A size of 0 removes the limit. Throttled
// requests are counted as calls.
func (s *Sim) SetRateLimit(class string, size int, refillPerSecond float64) error {
	switch class {
	case RateReads, RateWrites, RateDeletes:
	default:
		return fmt.Errorf("rate limit class %q: want %s, %s or %s", class, RateReads, RateWrites, RateDeletes)
	}
	if size < 0 || refillPerSecond < 0 || (size > 0 && refillPerSecond == 0) {
		return fmt.Errorf("rate limit of %s: bucket %d refilled at %g/s: want a positive refill for a positive bucket", class, size, refillPerSecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buckets == nil {
		s.buckets = map[string]*armBucket{}
	}
	if size == 0 {
		delete(s.buckets, class)
		return nil
	}
	s.buckets[class] = &armBucket{size: float64(size), refill: refillPerSecond, tokens: float64(size), last: time.Now()}
	return nil
}

// takeTokenLocked draws the request's token from its class's bucket, if limited. It sets the
// remaining-requests header and returns the 429 to answer when the bucket is empty.
func (s *Sim) takeTokenLocked(w http.ResponseWriter, method string) *armError {
	class := rateClass(method)
	b := s.buckets[class]
	if b == nil {
		return nil
	}
	now := time.Now()
	b.tokens = min(b.size, b.tokens+now.Sub(b.last).Seconds()*b.refill)
	b.last = now
	if b.tokens < 1 {
		wait := int(math.Ceil((1 - b.tokens) / b.refill))
		w.Header().Set("Retry-After", strconv.Itoa(max(wait, 1)))
		w.Header().Set("x-ms-ratelimit-remaining-subscription-"+class, "0")
		return aerr(http.StatusTooManyRequests, "SubscriptionRequestsThrottled",
			"Number of '%s' requests for subscription '%s' exceeded. Please try again after '%d' seconds after the last request.", class, s.sub, max(wait, 1))
	}
	b.tokens--
	w.Header().Set("x-ms-ratelimit-remaining-subscription-"+class, strconv.Itoa(int(b.tokens)))
	return nil
}

// rpWindow is one of the network resource provider's own limits: limit requests per window
// (a fixed window started by its first request).
type rpWindow struct {
	limit  int
	window time.Duration
	start  time.Time
	used   int
}

// SetNetworkRPLimit installs the Microsoft.Network resource provider's throttling, applied after
// ARM's subscription buckets to every request the network RP serves (network interfaces,
// public IPs, subnets, scale-set NIC reads, operation polls): reads (GET) and writes (PUT,
// PATCH, POST, DELETE), each limit per window. Azure's documented defaults are 10,000 reads and
// 1,000 writes per 5 minutes, per subscription and region (request-limits-and-throttling,
// "Network throttling"); tests scale the window down. A request past its limit answers 429
// with Retry-After (whole seconds until the window ends) and the remaining count in
// x-ms-ratelimit-remaining-resource. Zero limits remove it. The reference names neither the
// error code nor the header's policy names of the network RP's throttling: the simulator's
// "TooManyRequests" and "Microsoft.Network/<class>" are assumptions (docs/testbed.md); clients
// should act on the 429 and Retry-After, as egressd's provider does.
func (s *Sim) SetNetworkRPLimit(reads, writes int, window time.Duration) error {
	if reads < 0 || writes < 0 || ((reads > 0 || writes > 0) && window <= 0) {
		return fmt.Errorf("network RP limit of %d reads and %d writes per %s: want non-negative limits and a positive window", reads, writes, window)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nrp = map[string]*rpWindow{}
	if reads > 0 {
		s.nrp[RateReads] = &rpWindow{limit: reads, window: window}
	}
	if writes > 0 {
		s.nrp[RateWrites] = &rpWindow{limit: writes, window: window}
	}
	return nil
}

// takeNetworkRPLocked counts a network-RP request against its class's window, if limited, and
// returns the 429 to answer when the window's requests are spent.
func (s *Sim) takeNetworkRPLocked(w http.ResponseWriter, method string) *armError {
	class := RateWrites
	if method == http.MethodGet || method == http.MethodHead {
		class = RateReads
	}
	l := s.nrp[class]
	if l == nil {
		return nil
	}
	now := time.Now()
	if l.start.IsZero() || now.Sub(l.start) >= l.window {
		l.start, l.used = now, 0
	}
	header := "Microsoft.Network/" + class
	if l.used >= l.limit {
		wait := int(math.Ceil(l.start.Add(l.window).Sub(now).Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(max(wait, 1)))
		w.Header().Set("x-ms-ratelimit-remaining-resource", header+";0")
		return aerr(http.StatusTooManyRequests, "TooManyRequests",
			"The network resource provider's limit of %d %s per %s for subscription '%s' is reached. Retry after %d seconds.", l.limit, class, l.window, s.sub, max(wait, 1))
	}
	l.used++
	w.Header().Set("x-ms-ratelimit-remaining-resource", header+";"+strconv.Itoa(l.limit-l.used))
	return nil
}
