package coordinator

import (
	"context"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	chart "github.com/egressd/egressd/charts/egressd"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/static"
)

// The chart's dashboard and alerts read the controller's metrics by name and label: every
// controller metric the chart lists must be registered here with the same labels, and every
// metric registered here must be in the chart's catalog (docs/metrics.md).
func TestMetricsMatchTheChartCatalog(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := providers.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	// Touch one series of each vector so Gather reports it with its labels.
	m.Gateways.WithLabelValues("g", "z", "Active").Set(1)
	m.EgressIPs.WithLabelValues("g", "z", "true").Set(1)
	m.Failovers.WithLabelValues("g", "z").Inc()
	m.IPMoves.WithLabelValues("g", "aws").Inc()
	m.ReconcileErrors.WithLabelValues("egressgateway").Inc()
	m.GCReleased.WithLabelValues("aws", "PrivateIP").Inc()
	m.ControllerProbesFailing.WithLabelValues("g").Set(1)
	// One failing call through the decorator records calls, errors and latency.
	sp, err := static.New(static.Config{Pools: []static.Pool{{Zone: "z", Addresses: []string{"192.0.2.10"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pm.Wrap(sp).DiscoverNode(context.Background(), providers.NodeRef{Name: "missing"}); err == nil {
		t.Log("static DiscoverNode of an unknown node succeeded; errors_total may be absent")
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, mf := range mfs {
		var labels []string
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		slices.Sort(labels)
		got[mf.GetName()] = labels
	}
	for _, want := range chart.Metrics {
		if want.Component != chart.Controller {
			continue
		}
		labels, ok := got[want.Name]
		if !ok {
			t.Errorf("the chart reads %s, which the controller does not register", want.Name)
			continue
		}
		w := slices.Clone(want.Labels)
		slices.Sort(w)
		if !slices.Equal(labels, w) {
			t.Errorf("%s: labels %v, the chart expects %v", want.Name, labels, w)
		}
		delete(got, want.Name)
	}
	for name := range got {
		t.Errorf("%s is registered but not in the chart's metric catalog (charts/egressd/metrics.go, docs/metrics.md)", name)
	}
}
