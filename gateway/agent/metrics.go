package agent

import (
	"net/netip"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/bpf"
)

var (
	descPackets = prometheus.NewDesc("egressd_datapath_packets_total",
		"Packets the node's datapath steered to a gateway node (gateway) of an EgressGateway (group).",
		[]string{"group", "gateway"}, nil)
	descBytes = prometheus.NewDesc("egressd_datapath_bytes_total",
		"Bytes the node's datapath steered to a gateway node of an EgressGateway.",
		[]string{"group", "gateway"}, nil)
	descDrops = prometheus.NewDesc("egressd_datapath_drops_total",
		"Packets the node's datapath dropped, by EgressGateway and reason.",
		[]string{"group", "reason"}, nil)
	descProbeUp = prometheus.NewDesc("egressd_gateway_probe_up",
		"1 when the node's probes reach the gateway node over the tunnel, 0 when the gateway is considered down.",
		[]string{"group", "gateway"}, nil)
)

// collector reads the bpf counters and the probe results at scrape time, so the metrics are
// exactly the datapath's (which survive agent restarts) and nothing is copied on the hot path.
type collector struct{ a *Agent }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPackets
	ch <- descBytes
	ch <- descDrops
	ch <- descProbeUp
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	a.mu.Lock()
	res, prober := a.last, a.prober
	a.mu.Unlock()
	group := func(id uint32) string {
		if n, ok := res.GroupNames[id]; ok {
			return n
		}
		return strconv.FormatUint(uint64(id), 10)
	}
	gateway := func(id uint32) string {
		if id == bpf.GatewaySelf {
			return a.cfg.NodeName
		}
		if n, ok := res.GatewayNames[id]; ok {
			return n
		}
		return strconv.FormatUint(uint64(id), 10)
	}
	if stats, err := a.cfg.Dataplane.Stats(); err == nil {
		drops := map[string][bpf.NumDropReasons]uint64{}
		for k, s := range stats {
			g := group(k.Group)
			if k.Gateway != 0 {
				ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(s.Packets), g, gateway(k.Gateway))
				ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.Bytes), g, gateway(k.Gateway))
			}
			d := drops[g]
			for i, n := range s.Drops {
				d[i] += n
			}
			drops[g] = d
		}
		for g, d := range drops {
			for i, n := range d {
				ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(n), g, bpf.DropReasonNames[i])
			}
		}
	}
	if prober == nil {
		return
	}
	for _, m := range res.Members {
		up := 1.0
		if !m.Self {
			s, ok := prober.Status(probeAddr(m, a.cfg.ProbePort))
			if ok && !s.Up {
				up = 0
			}
		}
		ch <- prometheus.MustNewConstMetric(descProbeUp, prometheus.GaugeValue, up, m.Group, m.Node)
	}
}

func probeAddr(m Member, port uint16) netip.AddrPort { return netip.AddrPortFrom(m.Addr, port) }
