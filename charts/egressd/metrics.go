// Package chart holds what the egressd Helm chart promises about the binaries it deploys: the
// Prometheus metrics its dashboard and alerts read. docs/metrics.md documents the same list,
// and the tests in this package keep the two, the dashboard and the PrometheusRule in step.
// The binaries' own tests compare what they register against Metrics.
package chart

// MetricType is a Prometheus metric type.
type MetricType string

const (
	Counter   MetricType = "counter"
	Gauge     MetricType = "gauge"
	Histogram MetricType = "histogram"
)

// Component is the binary that exports a metric.
type Component string

const (
	Controller Component = "controller"
	Agent      Component = "agent"
)

// Metric is one metric the chart's dashboard and alerts may use.
type Metric struct {
	Name      string
	Type      MetricType
	Labels    []string
	Component Component
	Help      string
}

// Metrics is every egressd metric, in the order of docs/metrics.md.
var Metrics = []Metric{
	{"egressd_gateways", Gauge, []string{"gateway", "zone", "state"}, Controller,
		"Gateway nodes per EgressGateway, zone and state (Active, Standby, Draining, Unhealthy)."},
	{"egressd_failovers_total", Counter, []string{"gateway", "zone"}, Controller,
		"Failovers: a gateway of the EgressGateway in the zone left Active or Standby and its role went to another."},
	{"egressd_ip_moves_total", Counter, []string{"gateway", "provider"}, Controller,
		"Egress IPs moved between nodes by the provider."},
	{"egressd_cloud_calls_total", Counter, []string{"provider", "operation"}, Controller,
		"Provider calls, by provider and operation (the providers.Operation names: DiscoverNode, EnsureIP, MoveIP, ReleaseIP, ListOwned, ReleaseOwned)."},
	{"egressd_cloud_errors_total", Counter, []string{"provider", "operation", "kind"}, Controller,
		"Failed provider calls; kind is NotFound, CapacityExhausted, Throttled, Conflict, Permission (providers.ErrorKind names) or Other."},
	{"egressd_cloud_call_duration_seconds", Histogram, []string{"provider", "operation"}, Controller,
		"Latency of provider calls, including waits for zone operations and long-running operations."},
	{"egressd_reconcile_errors_total", Counter, []string{"controller"}, Controller,
		"Reconciles that returned an error, by controller."},
	{"egressd_gc_released_total", Counter, []string{"provider", "kind"}, Controller,
		"Unclaimed cloud resources tagged as this cluster's, released by garbage collection after the grace period."},
	{"egressd_egress_ips", Gauge, []string{"gateway", "zone", "assigned"}, Controller,
		"Egress IPs in the ledger per EgressGateway and zone; assigned is \"true\" when the cloud holds the IP where the ledger says."},
	{"egressd_controller_probes_failing", Gauge, []string{"gateway"}, Controller,
		"1 while the coordinator's probes fail for every gateway of the EgressGateway and are ignored because the agents' Leases are fresh (Degraded reason ControllerProbesFailing)."},
	{"egressd_datapath_packets_total", Counter, []string{"group", "gateway"}, Agent,
		"Packets the node's datapath steered to a gateway node (gateway) of an EgressGateway (group)."},
	{"egressd_datapath_bytes_total", Counter, []string{"group", "gateway"}, Agent,
		"Bytes the node's datapath steered to a gateway node of an EgressGateway."},
	{"egressd_datapath_drops_total", Counter, []string{"group", "reason"}, Agent,
		"Packets the node's datapath dropped, by EgressGateway and reason."},
	{"egressd_datapath_map_entries", Gauge, []string{"map"}, Agent,
		"Entries in a BPF map of the node's datapath (counted at most every 30 s)."},
	{"egressd_datapath_map_max_entries", Gauge, []string{"map"}, Agent,
		"Size (max_entries) of a BPF map of the node's datapath."},
	{"egressd_snat_ports_in_use", Gauge, []string{"egress_ip", "destination"}, Agent,
		"Source ports of an egress IP in use toward a destination (address:port/protocol): its translated connections in conntrack. The top 10 destinations per egress IP, sampled at most every 15 s."},
	{"egressd_snat_connections", Gauge, []string{"gateway", "egress_ip"}, Agent,
		"Connections a gateway translated to an egress IP (its NAT entries in conntrack), over every destination, sampled at most every 15 s."},
	{"egressd_snat_port_budget", Gauge, nil, Agent,
		"Source ports one egress IP has toward one destination (the gateway's SNAT port range)."},
	{"egressd_snat_exhausted_total", Counter, []string{"egress_ip"}, Agent,
		"Times a sample found an egress IP's ports toward a destination all in use, and those of every other egress IP of its group the gateway overflows new connections to (once per destination until it has a free port again)."},
	{"egressd_snat_refused_total", Counter, []string{"egress_ip"}, Agent,
		"New connections that found every egress IP of their group on the gateway at its port budget toward their destination, by the first-choice egress IP they were sent to anyway (conntrack refuses them unless a port freed). Groups with several egress IPs; counted in nftables, not sampled."},
	{"egressd_conntrack_insert_failed_total", Counter, nil, Agent,
		"New connections the node's conntrack refused because their translated tuple was taken: what an exhausted SNAT port range drops."},
	{"egressd_gateway_probe_up", Gauge, []string{"group", "gateway"}, Agent,
		"1 when the node's probes reach the gateway node over the tunnel, 0 when the gateway is considered down."},
	{"egressd_egress_ip_delivered", Gauge, []string{"egress_ip"}, Agent,
		"1 once the fabric delivers a cloud egress IP to this node (a probe sent from it came back; the node SNATs to it), 0 while the proof is pending."},
}

// Lookup returns the metric named name, accepting the _bucket, _sum and _count series of
// histograms.
func Lookup(name string) (Metric, bool) {
	for _, m := range Metrics {
		if m.Name == name {
			return m, true
		}
		if m.Type == Histogram {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if m.Name+suffix == name {
					return m, true
				}
			}
		}
	}
	return Metric{}, false
}
