package providers

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts provider calls, errors by kind and latency, labelled by provider and
// operation. One Metrics serves every provider of a process: build it once per Registerer and
// wrap each provider with Wrap.
type Metrics struct {
	calls   *prometheus.CounterVec
	errors  *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// NewMetrics registers the provider metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "egressd", Subsystem: "cloud", Name: "calls_total",
			Help: "Provider calls by provider and operation.",
		}, []string{"provider", "operation"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "egressd", Subsystem: "cloud", Name: "errors_total",
			Help: "Provider call errors by provider, operation and error kind (Other when unclassified).",
		}, []string{"provider", "operation", "kind"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "egressd", Subsystem: "cloud", Name: "call_duration_seconds",
			Help: "Provider call latency by provider and operation, retries included.",
			// Cloud calls take from tens of milliseconds to tens of seconds (retries, LROs).
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 10),
		}, []string{"provider", "operation"}),
	}
	for _, c := range []prometheus.Collector{m.calls, m.errors, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering provider metrics: %w", err)
		}
	}
	return m, nil
}

// Wrap returns p instrumented with m.
func (m *Metrics) Wrap(p Provider) Provider {
	name := p.Name()
	for _, op := range Operations {
		// Pre-create the series so dashboards see zeros rather than gaps.
		m.calls.WithLabelValues(name, string(op))
	}
	return &hooked{next: p, h: func(ctx context.Context, op Operation, fn func(context.Context) error) error {
		start := time.Now()
		err := fn(ctx)
		m.latency.WithLabelValues(name, string(op)).Observe(time.Since(start).Seconds())
		m.calls.WithLabelValues(name, string(op)).Inc()
		if err != nil {
			kind := "Other"
			if k := KindOf(err); k != 0 {
				kind = k.String()
			}
			m.errors.WithLabelValues(name, string(op), kind).Inc()
		}
		return err
	}}
}
