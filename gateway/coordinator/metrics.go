package coordinator

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the coordinator. Cloud call metrics come from the providers.Metrics decorator.
type Metrics struct {
	Gateways        *prometheus.GaugeVec
	EgressIPs       *prometheus.GaugeVec
	Failovers       *prometheus.CounterVec
	IPMoves         *prometheus.CounterVec
	ReconcileErrors *prometheus.CounterVec
	GCReleased      *prometheus.CounterVec
	// ControllerProbesFailing is 1 while a group's coordinator probe failures are ignored
	// (Plan.ProbesIgnored): no gateway is Unhealthy for them, so egressd_gateways shows nothing.
	ControllerProbesFailing *prometheus.GaugeVec
}

// NewMetrics registers the coordinator's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Gateways: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "egressd_gateways", Help: "Gateway nodes by group, zone and state.",
		}, []string{"gateway", "zone", "state"}),
		EgressIPs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "egressd_egress_ips", Help: "Egress IPs by group, zone and whether the cloud holds them on a node.",
		}, []string{"gateway", "zone", "assigned"}),
		Failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_failovers_total", Help: "Egress IPs moved off an unhealthy or drained gateway.",
		}, []string{"gateway", "zone"}),
		IPMoves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_ip_moves_total", Help: "Egress IP moves completed in the cloud.",
		}, []string{"gateway", "provider"}),
		ReconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_reconcile_errors_total", Help: "Reconciles that returned an error.",
		}, []string{"controller"}),
		GCReleased: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_gc_released_total", Help: "Unclaimed cloud resources released by garbage collection.",
		}, []string{"provider", "kind"}),
		ControllerProbesFailing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "egressd_controller_probes_failing",
			Help: "1 while the coordinator's probes fail for every gateway of the EgressGateway and are ignored because the agents' Leases are fresh.",
		}, []string{"gateway"}),
	}
	for _, c := range []prometheus.Collector{m.Gateways, m.EgressIPs, m.Failovers, m.IPMoves, m.ReconcileErrors, m.GCReleased, m.ControllerProbesFailing} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
