package agent

import (
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/agent/dataplane"
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
	descMapEntries = prometheus.NewDesc("egressd_datapath_map_entries",
		"Entries in a BPF map of the node's datapath (counted at most every 30 s).",
		[]string{"map"}, nil)
	descMapMax = prometheus.NewDesc("egressd_datapath_map_max_entries",
		"Size (max_entries) of a BPF map of the node's datapath.",
		[]string{"map"}, nil)
	descSNATInUse = prometheus.NewDesc("egressd_snat_ports_in_use",
		"Source ports of an egress IP in use toward a destination (address:port/protocol): its translated connections in conntrack. The top 10 destinations per egress IP, sampled at most every 15 s.",
		[]string{"egress_ip", "destination"}, nil)
	descSNATConns = prometheus.NewDesc("egressd_snat_connections",
		"Connections a gateway translated to an egress IP (its NAT entries in conntrack), over every destination, sampled at most every 15 s.",
		[]string{"gateway", "egress_ip"}, nil)
	descSNATBudget = prometheus.NewDesc("egressd_snat_port_budget",
		"Source ports one egress IP has toward one destination (the gateway's SNAT port range).",
		nil, nil)
	descSNATExhausted = prometheus.NewDesc("egressd_snat_exhausted_total",
		"Times a sample found an egress IP's ports toward a destination all in use, and those of every other egress IP of its group the gateway overflows new connections to (once per destination until it has a free port again).",
		[]string{"egress_ip"}, nil)
	descSNATRefused = prometheus.NewDesc("egressd_snat_refused_total",
		"New connections that found every egress IP of their group on the gateway at its port budget toward their destination, by the first-choice egress IP they were sent to anyway (conntrack refuses them unless a port freed). Groups with several egress IPs; counted in nftables, not sampled.",
		[]string{"egress_ip"}, nil)
	descInsertFailed = prometheus.NewDesc("egressd_conntrack_insert_failed_total",
		"New connections the node's conntrack refused because their translated tuple was taken: what an exhausted SNAT port range drops.",
		nil, nil)
	descProbeUp = prometheus.NewDesc("egressd_gateway_probe_up",
		"1 when the node's probes reach the gateway node over the tunnel, 0 when the gateway is considered down.",
		[]string{"group", "gateway"}, nil)
	descDelivered = prometheus.NewDesc("egressd_egress_ip_delivered",
		"Per cloud egress IP the cloud gave this node: 1 once a probe sent from it came back (the fabric delivers it here and the node SNATs to it), 0 while that proof is pending.",
		[]string{"egress_ip"}, nil)
)

// collector reads the bpf counters and the probe results at scrape time, so the metrics are
// exactly the datapath's (which survive agent restarts) and nothing is copied on the hot path.
// Map fill is the exception: counting walks every key, so it is refreshed at most every
// mapFillInterval.
type collector struct {
	a *Agent

	mu       sync.Mutex
	fill     []bpf.MapFill
	fillTime time.Time
	snat     snatSampler
}

// mapFillInterval bounds how often a scrape walks the maps (about 30 ms for a full 64k map,
// BenchmarkMapFill).
const mapFillInterval = 30 * time.Second

// filler is the Dataplane's optional map-fill report.
type filler interface {
	MapFill() ([]bpf.MapFill, error)
}

func (c *collector) mapFill(now time.Time) []bpf.MapFill {
	f, ok := c.a.cfg.Dataplane.(filler)
	if !ok {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fill == nil || now.Sub(c.fillTime) >= mapFillInterval {
		if fill, err := f.MapFill(); err == nil {
			c.fill, c.fillTime = fill, now
		}
	}
	return c.fill
}

// snatInterval bounds how often a scrape dumps conntrack for the SNAT metrics.
const snatInterval = 15 * time.Second

// snatTopDestinations bounds egressd_snat_ports_in_use: the fullest destinations per egress IP.
const snatTopDestinations = 10

// snatReporter is the Dataplane's optional SNAT port report (gateways).
type snatReporter interface {
	SNATUsage() (dataplane.SNATUsage, error)
}

// snatSampler keeps the latest SNAT sample and counts exhaustion: an (egress IP, destination)
// pair exhausted (at its budget with nowhere to overflow, SNATUse.Exhausted) counts once, again
// only after a sample saw it otherwise.
type snatSampler struct {
	last      *dataplane.SNATUsage
	time      time.Time
	full      map[snatPair]bool
	exhausted map[netip.Addr]uint64
}

type snatPair struct {
	ip    netip.Addr
	dst   netip.AddrPort
	proto uint8
}

// add takes a new sample.
func (s *snatSampler) add(u dataplane.SNATUsage, now time.Time) {
	if s.exhausted == nil {
		s.exhausted = map[netip.Addr]uint64{}
	}
	full := map[snatPair]bool{}
	for _, use := range u.Use {
		if !use.Exhausted {
			continue
		}
		p := snatPair{use.EgressIP, use.Destination, use.Proto}
		full[p] = true
		if !s.full[p] {
			s.exhausted[use.EgressIP]++
		}
	}
	for _, use := range u.Use {
		if _, ok := s.exhausted[use.EgressIP]; !ok {
			s.exhausted[use.EgressIP] = 0 // present from the first sample that sees the IP
		}
	}
	s.full, s.last, s.time = full, &u, now
}

// top is the fullest destinations of each egress IP, at most n each.
func (s *snatSampler) top(n int) []dataplane.SNATUse {
	if s.last == nil {
		return nil
	}
	per := map[netip.Addr]int{}
	var out []dataplane.SNATUse
	for _, use := range s.last.Use { // fullest first
		if per[use.EgressIP] < n {
			per[use.EgressIP]++
			out = append(out, use)
		}
	}
	return out
}

// connections sums the last sample's connections per egress IP, every destination included
// (top keeps the fullest only).
func (s *snatSampler) connections() map[netip.Addr]int {
	out := map[netip.Addr]int{}
	for _, use := range s.last.Use {
		out[use.EgressIP] += use.Ports
	}
	return out
}

func (c *collector) snatSample(now time.Time) *snatSampler {
	r, ok := c.a.cfg.Dataplane.(snatReporter)
	if !ok {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snat.last == nil || now.Sub(c.snat.time) >= snatInterval {
		if u, err := r.SNATUsage(); err == nil {
			c.snat.add(u, now)
		}
	}
	if c.snat.last == nil {
		return nil
	}
	return &c.snat
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSNATInUse
	ch <- descSNATBudget
	ch <- descSNATConns
	ch <- descSNATExhausted
	ch <- descSNATRefused
	ch <- descInsertFailed
	ch <- descPackets
	ch <- descBytes
	ch <- descDrops
	ch <- descMapEntries
	ch <- descMapMax
	ch <- descProbeUp
	ch <- descDelivered
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
	for _, f := range c.mapFill(time.Now()) {
		ch <- prometheus.MustNewConstMetric(descMapEntries, prometheus.GaugeValue, float64(f.Entries), f.Map)
		ch <- prometheus.MustNewConstMetric(descMapMax, prometheus.GaugeValue, float64(f.MaxEntries), f.Map)
	}
	for ip := range a.delivery.snapshot() {
		ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.GaugeValue, 1, ip.String())
	}
	for _, ip := range a.delivery.pending() {
		ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.GaugeValue, 0, ip.String())
	}
	if res.State.Gateway != nil {
		if s := c.snatSample(time.Now()); s != nil {
			c.mu.Lock()
			for _, use := range s.top(snatTopDestinations) {
				ch <- prometheus.MustNewConstMetric(descSNATInUse, prometheus.GaugeValue, float64(use.Ports),
					use.EgressIP.String(), use.Destination.String()+"/"+protoName(use.Proto))
			}
			for ip, n := range s.connections() {
				ch <- prometheus.MustNewConstMetric(descSNATConns, prometheus.GaugeValue, float64(n), a.cfg.NodeName, ip.String())
			}
			for ip, n := range s.exhausted {
				ch <- prometheus.MustNewConstMetric(descSNATExhausted, prometheus.CounterValue, float64(n), ip.String())
			}
			for ip, n := range s.last.Refused {
				ch <- prometheus.MustNewConstMetric(descSNATRefused, prometheus.CounterValue, float64(n), ip.String())
			}
			ch <- prometheus.MustNewConstMetric(descSNATBudget, prometheus.GaugeValue, float64(s.last.Budget))
			ch <- prometheus.MustNewConstMetric(descInsertFailed, prometheus.CounterValue, float64(s.last.InsertFailed))
			c.mu.Unlock()
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
