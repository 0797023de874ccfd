//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// egressd datapath. Four tc programs share one set of maps:
//
//   egressd_pod         tc ingress of the host side of every pod interface:
//                       classifies packets leaving a pod, pins matching ones
//                       to a gateway of their group and marks them; they go
//                       on through the rest of the tc chain (a CNI's own
//                       programs) and the stack (its netfilter rules), so
//                       NetworkPolicy still applies, and policy routing
//                       takes them to the egressd tunnel device (or, when
//                       this node is the gateway, to the egress interface).
//   egressd_tun_ingress tc ingress of the egressd tunnel device: on a gateway,
//                       admits only frames from a cluster node carrying a pod
//                       of that node steered to the group (the sources map),
//                       records which node a flow came from and marks it for
//                       nftables SNAT and policy routing; on a source node,
//                       hands a reply to the pod only when it comes from the
//                       gateway its flow is pinned to.
//   egressd_tun_egress  tc egress of the tunnel device: on a source node,
//                       encapsulates steered packets to the gateway their
//                       flow is pinned to; on a gateway, re-encapsulates
//                       replies (de-NATed by conntrack, routed to the tunnel
//                       device by fwmark) to the node the flow came from.
//   egressd_probe       tc ingress of the node's underlay interface: answers
//                       health probes (gateway/probe) itself, so a node whose
//                       agent is restarting still looks alive while its
//                       datapath forwards.
//
// Layouts shared with Go are kept in the structs below; bpf2go generates the
// matching Go types.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

// tcx and cls_bpf both read -1 as "continue with the next program".
#define TC_NEXT -1

#define MAX_GATEWAYS 8

// Flags of every bpf_skb_set_tunnel_key: the outer UDP checksum is sent as zero, as RFC 7348
// (section 5) says a VXLAN sender should and Linux accepts on IPv4 (the underlay is IPv4
// only). It covers only the outer headers and the VXLAN header: the inner packet keeps its
// own checksums, and the Ethernet frame its FCS. Computing it (udp_set_csum) cost the sender
// 55-90 ns per tunnelled packet in a perf profile of BenchmarkDatapathPacketRate.
#define TUNNEL_KEY_FLAGS BPF_F_ZERO_CSUM_TX

// Packet marks (see docs/datapath.md#packet-marks): where egressd's fields sit
// in skb->mark is chosen on the node (the agent's --mark-mask) and set by the
// loader from bpf.MarkLayout, which also builds the nftables rules and ip
// rules, so the three agree. volatile: the compiler must read them from
// .rodata, not fold these defaults (the v4 layout, bpf.DefaultMarkMask) in.
// Every write keeps the bits outside mark_mask (a CNI's, kube-proxy's).
volatile const __u32 mark_mask = 0xffe0ffff;
volatile const __u32 mark_magic = 0x6e000000;
volatile const __u32 mark_magic_mask = 0xff000000;
// Came through the tunnel: replies must go back through it (ct mark).
volatile const __u32 mark_tunnel = 0x00800000;
// Reply to re-encapsulate (nftables sets it from the ct mark).
volatile const __u32 mark_reply = 0x00400000;
// A source node's packet to tunnel to a gateway.
volatile const __u32 mark_steer = 0x00200000;
// The group id, shifted up by mark_group_shift.
volatile const __u32 mark_group_mask = 0x0000ffff;
volatile const __u32 mark_group_shift = 0;

static __always_inline __u32 mark_group(__u32 gid)
{
	return (gid << mark_group_shift) & mark_group_mask;
}

static __always_inline __u32 group_of_mark(__u32 mark)
{
	return (mark & mark_group_mask) >> mark_group_shift;
}

// set_mark replaces egressd's bits of the mark with v, keeping the others.
static __always_inline void set_mark(struct __sk_buff *skb, __u32 v)
{
	skb->mark = (skb->mark & ~mark_mask) | v;
}

// The VNI: the group id, with bit 23 set on replies.
enum vni_layout {
	VNI_REPLY = 0x800000,
	VNI_GROUP_MASK = 0x7fffff,
};
// Puts the enum into BTF for bpf2go (-type vni_layout); nothing reads it,
// and the loader never creates its map.
const enum vni_layout *unused_vni_layout __attribute__((unused));

#define RULE_EXCLUDED 1

// Flags of a gateway in the groups map.
enum gw_flags {
	GW_HEALTHY = 1,
	GW_LOCAL = 2,
	// No new flows: a draining gateway keeps the flows pinned to it (while
	// healthy) but is never picked for a new one.
	GW_DRAINING = 4,
};
const enum gw_flags *unused_gw_flags __attribute__((unused));

enum drop_reason {
	DROP_NO_GATEWAY = 0, // no healthy gateway for a new flow
	DROP_NO_GROUP,       // rule points at an unknown group
	DROP_NO_TUNNEL,      // tunnel device not configured
	DROP_ENCAP,          // setting the tunnel key or redirecting failed
	DROP_NOT_SERVED,     // gateway received a group it does not serve
	DROP_NO_RETURN,      // reply without a recorded source node
	DROP_MALFORMED,      // headers could not be read
	DROP_RESERVED_PORT,  // a pod sent UDP to a reserved port (the tunnel's)
	DROP_FOREIGN_NODE,   // gateway: a tunnelled frame from a host that is no node
	DROP_FOREIGN_SOURCE, // gateway: inner source is no pod of the sending node
			     // steered to the group
	DROP_UNSOLICITED,    // source node: a reply for no flow pinned to its sender
	DROP_NO_FLOW,        // source node: a steered packet reached the tunnel
			     // device without a pinned flow
	DROP_HELD,           // source node: an established TCP flow waits for
			     // its egress IP to reach a listed gateway
	DROP_MAX,
};
// Like unused_vni_layout: puts the enum into BTF for bpf2go.
const enum drop_reason *unused_drop_reason __attribute__((unused));

struct endpoint_key {
	__u8 addr[16]; // IPv6, or IPv4-mapped IPv6 (::ffff:a.b.c.d)
};

// Flags of an endpoint.
enum ep_flags {
	// The pod may send to the second reserved port, the probe port: the
	// controller's pods, which probe every gateway.
	EP_PROBER = 1,
};
const enum ep_flags *unused_ep_flags __attribute__((unused));

struct endpoint {
	__u32 policy_set;
	__u32 ifindex; // host-side interface, 0 if unknown
	__u32 flags;   // EP_PROBER
};

struct rule4_key {
	__u32 prefixlen; // 32 + destination prefix length
	__u32 policy_set;
	__u8 addr[4];
};

struct rule6_key {
	__u32 prefixlen; // 32 + destination prefix length
	__u32 policy_set;
	__u8 addr[16];
};

struct rule {
	__u32 group;
	__u32 flags; // RULE_EXCLUDED
};

struct gateway {
	__u32 id;
	__u32 underlay; // IPv4, network byte order
	__u32 flags;    // GW_HEALTHY, GW_LOCAL, GW_DRAINING
	__u32 egress;   // the IPv4 it SNATs the group to (network order); 0: unknown
};

struct group {
	__u32 count;
	__u32 _pad;
	struct gateway gateways[MAX_GATEWAYS];
};

struct flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport; // ICMP echo: identifier
	__u16 dport;
	__u8 proto;
	__u8 _pad[3];
};

// Source node: the gateway a flow is pinned to and where replies go.
struct flow {
	__u32 group;
	__u32 gateway;
	__u32 ifindex;
	__u32 gw_underlay; // the gateway's underlay IPv4 (network order): the
			   // only sender whose replies reach the pod
	__u8 pod_mac[6];
	__u8 host_mac[6];
	// The egress IPv4 the flow leaves with (its gateway's when pinned,
	// network order; 0: unknown). A flow whose gateway goes away follows
	// this address to the gateway that holds it next, so the destination
	// keeps seeing the same source.
	__u32 egress;
	// When the flow's gateway went away (bpf_ktime_get_ns() >> 30, about
	// seconds; 0: it has not): bounds how long it is held.
	__u32 lost;
};

// Gateway: the node a tunnelled flow came from.
struct return_flow {
	__u32 node; // IPv4, network byte order
	__u32 group;
};

struct served_group {
	__u32 mark;
	__u32 _pad;
};

// Gateway: who may send a served group's traffic through the tunnel. A pod
// entry is (its node's underlay address, group, pod address); a node entry
// has group 0 and a zero address, and only tells a foreign host from a node
// with a spoofed inner source in the drop counters.
struct source_key {
	__u32 node; // IPv4, network byte order
	__u32 group;
	__u8 addr[16]; // IPv6, or IPv4-mapped IPv6
};

// Flags of the config map.
enum config_flags {
	// Steer by redirecting to the tunnel device from the classifier, as
	// before v3: no stack on the source node, so no CNI program after
	// egressd's and no netfilter rule sees steered traffic (NetworkPolicy
	// does not apply to it). For CNIs that bypass the stack themselves.
	CFG_REDIRECT = 1,
};
const enum config_flags *unused_config_flags __attribute__((unused));

struct config {
	__u32 tunnel_ifindex;
	__u32 flags; // CFG_REDIRECT
	// This node's underlay IPv4 (network byte order): the outer source of
	// every frame it tunnels, which the receiver checks.
	__u32 node_ip;
	// UDP ports pods may not send to, anywhere (network byte order; 0:
	// unused): the agent reserves the tunnel port and the probe port. A pod
	// that could reach a gateway's tunnel would hand it frames with any
	// inner source, and its node's masquerade would make them come from a
	// cluster node. Pods flagged EP_PROBER may send to the second one.
	__u16 reserved_ports[2];
	// How long an established TCP flow whose gateway went away is held
	// (its packets dropped, counted DROP_HELD, TCP retransmits them) while
	// no listed gateway holds its egress IP, before it is sent to another
	// gateway (which breaks it: the destination sees another source). In
	// units of 2^30 ns (about 1.07 s); 0: never held.
	__u32 hold;
};

struct stats_key {
	__u32 group;
	__u32 gateway; // 0: no gateway chosen; 0xffffffff: this node as gateway
};

struct stats {
	__u64 packets;
	__u64 bytes;
	__u64 drops[DROP_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct rule4_key);
	__type(value, struct rule);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rules4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct rule6_key);
	__type(value, struct rule);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rules6 SEC(".maps");

// A hash, not an array: userspace replaces a whole group at once and
// readers must never see half of an update.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct group);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} groups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct flow_key);
	__type(value, struct flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct flow_key);
	__type(value, struct return_flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} return_flows SEC(".maps");

// Tunnel egress: where the IPv4 fragments of a datagram go. The stack
// fragments a datagram that does not fit the tunnel device after conntrack
// reassembled it; only the first fragment carries the ports its flow is
// keyed by, so it records the tunnel endpoint for the later ones (sent
// after it).
struct frag_key {
	__u32 src;
	__u32 dst;
	__u16 id;
	__u8 proto;
	__u8 _pad;
};

struct frag_dest {
	__u32 remote; // underlay IPv4, network byte order
	__u32 group;
	__u32 gateway; // for the counters
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct frag_key);
	__type(value, struct frag_dest);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct served_group);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} served SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct source_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

// How this node reaches a tunnel peer's underlay IPv4 (the key, network
// order), resolved by the agent from the routing table (the route's device per
// peer, refreshed on every Apply): the programs encapsulate themselves and
// hand the frame to that device, so the kernel does neither the tunnel
// device's transmit nor its output route lookup (a collect-metadata device
// does a full one for every frame it sends: bpf_skb_set_tunnel_key always sets
// TUNNEL_NOCACHE). A peer without an entry takes the tunnel device's own
// encapsulation.
struct nexthop {
	__u32 ifindex; // the underlay device; the route lookup gives the next hop
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct nexthop);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nexthops SEC(".maps");

// Which path carried the frames the programs tunnel (Datapath.EncapStats):
// encapsulated in the program, or handed to the tunnel device and why.
enum encap_path {
	ENCAP_SENT = 0,   // encapsulated by the program, sent from the underlay device
	ENCAP_NO_NEXTHOP, // tunnel device: no next hop for the peer
	ENCAP_NOT_FIT,    // tunnel device: too long for the outer header, over the
			  // tunnel's MTU, or the kernel refused the room
	ENCAP_FIB,        // tunnel device: the route lookup gave ENCAP_FIB + its
			  // BPF_FIB_LKUP_RET_* code (NO_NEIGH: the peer's neighbour is
			  // not resolved yet, the tunnel device resolves it)
	ENCAP_PATH_MAX = ENCAP_FIB + 16,
};
const enum encap_path *unused_encap_path __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ENCAP_PATH_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} encap_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct stats_key);
	__type(value, struct stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

// Egress addresses the agent added to interfaces. No program reads it: it
// records ownership across agent restarts so stale addresses are removed
// and foreign ones never are.
struct owned_addr_key {
	__u8 addr[16];
	__u32 ifindex;
	__u32 prefixlen;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct owned_addr_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} owned_addrs SEC(".maps");

// Flow observation (egressctl observe, docs/datapath.md#observing-flows). The
// agent sets observe_cfg only while a client watches: with it off, a verdict
// point costs one array lookup. On, every sample-th packet (on average) at a
// verdict point is written to flow_events.
enum obs_point {
	OBS_POD = 1,	    // classifier on a pod's interface (steer, or drop)
	OBS_TUN_INGRESS,    // gateway: a tunnelled frame admitted or dropped
	OBS_DELIVER,	    // source node: a reply handed to its pod, or dropped
	OBS_TUN_EGRESS,	    // tunnel device egress: a drop (no flow, no return)
};
const enum obs_point *unused_obs_point __attribute__((unused));

enum obs_verdict {
	OBS_FORWARDED = 0, // steered to a gateway (worker), admitted (gateway), delivered (reply)
	OBS_DROPPED = 1,   // reason: enum drop_reason
	OBS_LOCAL = 2,	   // worker that is itself the group's gateway: SNATed here
};
const enum obs_verdict *unused_obs_verdict __attribute__((unused));

struct observe_config {
	__u32 enabled;
	__u32 sample; // 1 in sample packets (on average); 0 or 1: every packet
};

struct flow_event {
	__u64 ts; // bpf_ktime_get_ns()
	__u8 src[16];
	__u8 dst[16];
	__u16 sport; // network order; ICMP echo: identifier
	__u16 dport;
	__u8 proto;
	__u8 point;   // enum obs_point
	__u8 verdict; // enum obs_verdict
	__u8 reason;  // enum drop_reason when dropped
	__u32 group;
	__u32 gateway;	   // gateway id; GATEWAY_SELF on a gateway
	__u32 gw_underlay; // the gateway's (worker) or sending node's (gateway) underlay IPv4
	__u32 egress;	   // egress IPv4 the datapath knows for the flow (network order; 0: unknown)
	__u32 ifindex;
	__u32 len;
};
const struct flow_event *unused_flow_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct observe_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} observe_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_events SEC(".maps");

// observe writes a flow event when a client watches (observe_cfg) and the
// packet is sampled. drop < 0: not dropped; local: the verdict is OBS_LOCAL.
static __always_inline void observe(struct __sk_buff *skb, struct flow_key *k, __u8 point, int drop, int local,
				    __u32 group, __u32 gw, __u32 underlay, __u32 egress)
{
	__u32 zero = 0;
	struct observe_config *oc = bpf_map_lookup_elem(&observe_cfg, &zero);
	if (!oc || !oc->enabled)
		return;
	if (oc->sample > 1 && bpf_get_prandom_u32() % oc->sample)
		return;
	struct flow_event *e = bpf_ringbuf_reserve(&flow_events, sizeof(*e), 0);
	if (!e)
		return; // the reader is behind: the event is lost, the packet is not
	e->ts = bpf_ktime_get_ns();
	__builtin_memcpy(e->src, k->src, 16);
	__builtin_memcpy(e->dst, k->dst, 16);
	e->sport = k->sport;
	e->dport = k->dport;
	e->proto = k->proto;
	e->point = point;
	e->verdict = drop >= 0 ? OBS_DROPPED : (local ? OBS_LOCAL : OBS_FORWARDED);
	e->reason = drop >= 0 ? drop : 0;
	e->group = group;
	e->gateway = gw;
	e->gw_underlay = underlay;
	e->egress = egress;
	e->ifindex = skb->ifindex;
	e->len = skb->len;
	bpf_ringbuf_submit(e, 0);
}

// Probe protocol of gateway/probe (docs/control-plane.md): magic "EGRP",
// version, flags, two reserved bytes, 64-bit sequence.
#define PROBE_SIZE 16
#define PROBE_VERSION 1
#define PROBE_FLAG_REPLY 0x80
#define PROBE_FLAG_DRAINING 0x01
#define PROBE_TTL 64

#define PROBE_CFG_DRAINING 1

struct probe_config {
	__u32 node_ip; // IPv4, network byte order; requests to other addresses pass
	__u16 port;    // network byte order; 0: the program answers nothing
	__u8 flags;    // PROBE_CFG_DRAINING
	__u8 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct probe_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probe_cfg SEC(".maps");

struct pkt {
	struct flow_key key;
	// UDP destination port (network order) whenever the UDP header is in
	// the packet, first fragments included (key.dport is 0 for those);
	// 0 otherwise.
	__u16 udp_dport;
	__u16 l3_proto; // ETH_P_IP / ETH_P_IPV6, host order
	// IPv4 fragments: the datagram's id, whether this is the first
	// fragment, and the ports a first one carries (key has none).
	__u8 frag;
	__u8 frag_first;
	__u16 frag_id;
	__u16 frag_ports[2];
	__u8 eth_src[6];
	__u8 eth_dst[6];
	__u8 tcp_flags; // the TCP header's flags byte (SYN 0x02); 0 otherwise
};

static __always_inline void count(__u32 group, __u32 gw, __u64 bytes, int drop)
{
	struct stats_key k = {.group = group, .gateway = gw};
	struct stats *s = bpf_map_lookup_elem(&stats, &k);
	if (!s) {
		struct stats zero = {};
		bpf_map_update_elem(&stats, &k, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&stats, &k);
		if (!s)
			return;
	}
	if (drop >= 0 && drop < DROP_MAX) {
		s->drops[drop]++;
		return;
	}
	s->packets++;
	s->bytes += bytes;
}

// parse reads the L2-L4 headers into p. It returns 0 on success, 1 for
// packets egressd never handles (not IP) and -1 on malformed ones: an IP
// header with a bad version or length, a datagram longer than the frame, an
// L4 header cut short, or an IPv6 packet from an IPv4-mapped address.
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	struct ethhdr eth;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return 1;
	__builtin_memcpy(p->eth_src, eth.h_source, 6);
	__builtin_memcpy(p->eth_dst, eth.h_dest, 6);
	p->l3_proto = bpf_ntohs(eth.h_proto);

	__u32 l4off, end;
	__u8 proto;
	int frag = 0, first = 1;
	if (p->l3_proto == ETH_P_IP) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return -1;
		// The stack drops these; steering them would send garbage to a
		// gateway (and read ports from inside the IP header).
		__u32 tot = bpf_ntohs(ip.tot_len);
		if (ip.version != 4 || ip.ihl < 5 || tot < ip.ihl * 4 || ETH_HLEN + tot > skb->len)
			return -1;
		end = ETH_HLEN + tot;
		__builtin_memset(p->key.src, 0, 10);
		p->key.src[10] = 0xff;
		p->key.src[11] = 0xff;
		__builtin_memcpy(&p->key.src[12], &ip.saddr, 4);
		__builtin_memset(p->key.dst, 0, 10);
		p->key.dst[10] = 0xff;
		p->key.dst[11] = 0xff;
		__builtin_memcpy(&p->key.dst[12], &ip.daddr, 4);
		proto = ip.protocol;
		l4off = ETH_HLEN + ip.ihl * 4;
		// All fragments of a datagram must reach the same gateway:
		// key them without ports. A first fragment (offset 0, more
		// fragments) still carries the L4 header.
		frag = ip.frag_off & bpf_htons(0x3fff);
		first = !(ip.frag_off & bpf_htons(0x1fff));
		p->frag = frag != 0;
		p->frag_first = frag && first;
		p->frag_id = ip.id;
	} else if (p->l3_proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return -1;
		end = ETH_HLEN + sizeof(ip6) + bpf_ntohs(ip6.payload_len);
		if (ip6.version != 6 || end > skb->len)
			return -1;
		// An IPv4-mapped source is no address of a pod on the wire, but
		// it is the endpoint key of an IPv4 pod: never take it as one.
		if (ip6.saddr.in6_u.u6_addr32[0] == 0 && ip6.saddr.in6_u.u6_addr32[1] == 0 &&
		    ip6.saddr.in6_u.u6_addr32[2] == bpf_htonl(0xffff))
			return -1;
		__builtin_memcpy(p->key.src, &ip6.saddr, 16);
		__builtin_memcpy(p->key.dst, &ip6.daddr, 16);
		proto = ip6.nexthdr;
		l4off = ETH_HLEN + sizeof(ip6);
		// A fragment header right after the fixed header: keyed by it
		// (no ports), but a first fragment's UDP port is still read.
		if (proto == IPPROTO_FRAGMENT && l4off + 16 <= end) {
			struct {
				__u8 nexthdr;
				__u8 reserved;
				__be16 frag_off;
				__be32 id;
				__be16 ports[2];
			} fh;
			if (bpf_skb_load_bytes(skb, l4off, &fh, sizeof(fh)) == 0 && fh.nexthdr == IPPROTO_UDP &&
			    !(fh.frag_off & bpf_htons(0xfff8)))
				p->udp_dport = fh.ports[1];
		}
	} else {
		return 1;
	}
	p->key.proto = proto;
	p->key.sport = 0;
	p->key.dport = 0;
	if (frag) {
		__u16 ports[2];
		if (first && (proto == IPPROTO_UDP || proto == IPPROTO_TCP) && l4off + 4 <= end &&
		    bpf_skb_load_bytes(skb, l4off, ports, sizeof(ports)) == 0) {
			p->frag_ports[0] = ports[0];
			p->frag_ports[1] = ports[1];
			if (proto == IPPROTO_UDP && l4off + 8 <= end)
				p->udp_dport = ports[1];
		}
		return 0;
	}
	// The whole L4 header must be inside the datagram (not in padding).
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		__u16 ports[2];
		if (l4off + (proto == IPPROTO_TCP ? 20 : 8) > end ||
		    bpf_skb_load_bytes(skb, l4off, ports, sizeof(ports)) < 0)
			return -1;
		p->key.sport = ports[0];
		p->key.dport = ports[1];
		if (proto == IPPROTO_TCP && bpf_skb_load_bytes(skb, l4off + 13, &p->tcp_flags, 1) < 0)
			return -1;
		if (proto == IPPROTO_UDP)
			p->udp_dport = ports[1];
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		__u8 hdr[8];
		if (l4off + sizeof(hdr) > end || bpf_skb_load_bytes(skb, l4off, hdr, sizeof(hdr)) < 0)
			return -1;
		__u8 t = hdr[0];
		// Echo request/reply (v4: 8/0, v6: 128/129): the identifier
		// tells flows apart and is the same in both directions.
		if (t == 8 || t == 0 || t == 128 || t == 129)
			__builtin_memcpy(&p->key.sport, &hdr[4], 2);
	}
	return 0;
}

static __always_inline int is_echo(__u8 proto)
{
	return proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
}

// reverse turns the key of a reply into the key of its original direction.
static __always_inline void reverse(struct flow_key *in, struct flow_key *out)
{
	__builtin_memcpy(out->src, in->dst, 16);
	__builtin_memcpy(out->dst, in->src, 16);
	out->proto = in->proto;
	out->_pad[0] = 0;
	out->_pad[1] = 0;
	out->_pad[2] = 0;
	if (is_echo(in->proto)) {
		out->sport = in->sport;
		out->dport = 0;
	} else {
		out->sport = in->dport;
		out->dport = in->sport;
	}
}

static __always_inline struct rule *lookup_rule(struct pkt *p, __u32 set)
{
	if (p->l3_proto == ETH_P_IP) {
		struct rule4_key k = {.prefixlen = 64, .policy_set = set};
		__builtin_memcpy(k.addr, &p->key.dst[12], 4);
		return bpf_map_lookup_elem(&rules4, &k);
	}
	struct rule6_key k = {.prefixlen = 160, .policy_set = set};
	__builtin_memcpy(k.addr, p->key.dst, 16);
	return bpf_map_lookup_elem(&rules6, &k);
}

// In-program VXLAN encapsulation. The outer headers as the tunnel device
// would build them: Ethernet (the route lookup's MACs), IPv4 from this node without options, DF clear and TTL 64
// as the tunnel key asks, UDP to the tunnel port with a zero checksum
// (TUNNEL_KEY_FLAGS) and a source port from the flow hash, the VXLAN header
// (I flag, VNI), then the frame as it stands (its Ethernet header becomes the
// inner one). pad keeps the IPv4 header 4-byte aligned on the stack, which the
// verifier insists on; the frame starts at eth.
struct vxlan_encap {
	__u16 pad;
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	__be32 vx_flags;
	__be32 vx_vni;
	struct ethhdr inner;
};
#define ENCAP_HDR_LEN (sizeof(struct iphdr) + sizeof(struct udphdr) + 8 + ETH_HLEN)
_Static_assert(__builtin_offsetof(struct vxlan_encap, inner) + ETH_HLEN - __builtin_offsetof(struct vxlan_encap, eth) ==
		   ETH_HLEN + ENCAP_HDR_LEN,
	       "vxlan_encap has holes");
// The tunnel device's source port range (udp_flow_src_port with no port range
// configured: the kernel's default ip_local_port_range, 32768-60999).
#define VXLAN_SPORT_MIN 32768
#define VXLAN_SPORT_MAX 61000
#ifndef AF_INET
#define AF_INET 2
#endif
// A frame this long would not fit the outer IPv4 length field.
#define ENCAP_MAX_LEN (0xffff - ENCAP_HDR_LEN + ETH_HLEN)
// The fast path does not apply; nothing was changed.
#define ENCAP_FALLBACK 1

static __always_inline __u16 ipv4_csum(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __always_inline void encap_count(__u32 path)
{
	__u64 *c = bpf_map_lookup_elem(&encap_stats, &path);
	if (c)
		(*c)++;
}

// encap_redirect encapsulates the frame for the tunnel peer remote (underlay
// IPv4, network order) with vni and sends it out of the underlay device the
// agent resolved (nexthops). It returns TC_ACT_REDIRECT when sent,
// ENCAP_FALLBACK when the fast path does not apply and the packet is untouched
// for the tunnel device's path, and TC_ACT_SHOT when writing the headers
// failed after the room was made.
//
// The frame is only handed to a neighbour known valid: bpf_fib_lookup (main
// table, output on the agent's device, as the tunnel device's outer route
// would be found) reports NO_NEIGH for a peer whose MAC is not resolved, and
// that packet takes the tunnel device, which resolves it (the next ones take
// the fast path). bpf_redirect_neigh to an unresolved neighbour would park
// the frame on its ARP queue with the skb's inner route (egressd0) still
// attached, and the queue replays it into egressd0, which drops it. Sending a
// resolved one with bpf_redirect_neigh rather than bpf_redirect with the
// looked-up MACs keeps the neighbour state machine running (a stale entry is
// probed again), as any other sender's packets would.
static __always_inline int encap_redirect(struct __sk_buff *skb, struct config *cfg, __u32 remote, __u32 vni)
{
	// The first reserved port is the tunnel's (bpf.TunnelConfig).
	if (!cfg || !cfg->node_ip || cfg->reserved_ports[0] == 0)
		return ENCAP_FALLBACK;
	struct nexthop *nh = bpf_map_lookup_elem(&nexthops, &remote);
	if (!nh || !nh->ifindex) {
		encap_count(ENCAP_NO_NEXTHOP);
		return ENCAP_FALLBACK;
	}
	__u32 len = skb->len;
	if (len > ENCAP_MAX_LEN || len < ETH_HLEN) {
		encap_count(ENCAP_NOT_FIT);
		return ENCAP_FALLBACK;
	}
	struct bpf_fib_lookup fib = {
	    .family = AF_INET,
	    .l4_protocol = IPPROTO_UDP,
	    .ipv4_src = cfg->node_ip,
	    .ipv4_dst = remote,
	    .ifindex = nh->ifindex,
	};
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT | BPF_FIB_LOOKUP_DIRECT);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		encap_count(ENCAP_FIB + (rc > 0 && rc < ENCAP_PATH_MAX - ENCAP_FIB ? rc : ENCAP_PATH_MAX - ENCAP_FIB - 1));
		return ENCAP_FALLBACK;
	}
	struct vxlan_encap h = {};
	struct {
		struct ethhdr eth;
		__u8 l3[2]; // IPv4: version, TOS; IPv6: version, traffic class, flow label
	} in;
	if (bpf_skb_load_bytes(skb, 0, &in, sizeof(in)) < 0)
		return ENCAP_FALLBACK;
	__builtin_memcpy(&h.inner, &in.eth, ETH_HLEN);
	// The inner packet's ECN field, as the tunnel device copies it
	// (INET_ECN_encapsulate: CE becomes ECT(0) outside).
	__u8 ecn = (skb->protocol == bpf_htons(ETH_P_IPV6) ? in.l3[1] >> 4 : in.l3[1]) & 3;
	if (ecn == 3)
		ecn = 2;
	// The same spread as udp_flow_src_port over the inner flow's hash.
	__u32 hash = bpf_get_hash_recalc(skb);
	hash ^= hash << 16;
	__u16 sport = (__u16)((((__u64)hash * (VXLAN_SPORT_MAX - VXLAN_SPORT_MIN)) >> 32) + VXLAN_SPORT_MIN);

	// The lookup's MACs (bpf_redirect_neigh writes the same from the
	// neighbour entry).
	__builtin_memcpy(h.eth.h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(h.eth.h_source, fib.smac, ETH_ALEN);
	h.eth.h_proto = bpf_htons(ETH_P_IP);
	h.ip.version = 4;
	h.ip.ihl = 5;
	h.ip.tos = ecn;
	h.ip.tot_len = bpf_htons(len - ETH_HLEN + ENCAP_HDR_LEN);
	h.ip.id = (__u16)bpf_get_prandom_u32();
	h.ip.ttl = 64;
	h.ip.protocol = IPPROTO_UDP;
	h.ip.saddr = cfg->node_ip;
	h.ip.daddr = remote;
	h.ip.check = ipv4_csum(&h.ip);
	h.udp.source = bpf_htons(sport);
	h.udp.dest = cfg->reserved_ports[0];
	h.udp.len = bpf_htons(len - ETH_HLEN + ENCAP_HDR_LEN - sizeof(struct iphdr));
	h.udp.check = 0;
	h.vx_flags = bpf_htonl(0x08000000);
	h.vx_vni = bpf_htonl(vni << 8);

	// The encapsulation flags set the inner header offsets and the GSO type
	// (UDP tunnel) so that a TCP super-packet is segmented, outer headers
	// included, where the tunnel device's own would be. FIXED_GSO keeps the
	// segment size: the stack sized it for the tunnel device's MTU, which
	// already leaves room for these headers (and UDP GSO needs it).
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
		      BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN) | BPF_F_ADJ_ROOM_ENCAP_L2_ETH;
	if (bpf_skb_adjust_room(skb, ENCAP_HDR_LEN, BPF_ADJ_ROOM_MAC, flags) < 0) {
		encap_count(ENCAP_NOT_FIT);
		return ENCAP_FALLBACK;
	}
	if (bpf_skb_store_bytes(skb, 0, &h.eth, ETH_HLEN + ENCAP_HDR_LEN, 0) < 0)
		return TC_ACT_SHOT;
	encap_count(ENCAP_SENT);
	// The lookup's next hop: the peer, or the router toward it.
	struct bpf_redir_neigh to = {.nh_family = AF_INET, .ipv4_nh = fib.ipv4_dst};
	return bpf_redirect_neigh(fib.ifindex, &to, sizeof(to), 0);
}

SEC("tc")
int egressd_pod(struct __sk_buff *skb)
{
	struct pkt p = {};
	int r = parse(skb, &p);
	if (r != 0)
		return TC_NEXT;

	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	struct endpoint_key ek;
	__builtin_memcpy(ek.addr, p.key.src, 16);
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &ek);
	if (p.udp_dport && cfg &&
	    (p.udp_dport == cfg->reserved_ports[0] || p.udp_dport == cfg->reserved_ports[1]) &&
	    !(p.udp_dport == cfg->reserved_ports[1] && ep && (ep->flags & EP_PROBER))) {
		// Pods never reach a reserved port, steered or not; only the
		// controller's reach the probe port.
		count(0, 0, 0, DROP_RESERVED_PORT);
		observe(skb, &p.key, OBS_POD, DROP_RESERVED_PORT, 0, 0, 0, 0, 0);
		return TC_ACT_SHOT;
	}
	if (!ep)
		return TC_NEXT;
	__u32 set = ep->policy_set;
	if (set == 0)
		return TC_NEXT;

	struct rule *rule = lookup_rule(&p, set);
	if (!rule || (rule->flags & RULE_EXCLUDED))
		return TC_NEXT;
	__u32 gid = rule->group;

	struct group *g = bpf_map_lookup_elem(&groups, &gid);
	if (!g) {
		// Never leak matched traffic with the node IP.
		count(gid, 0, 0, DROP_NO_GROUP);
		observe(skb, &p.key, OBS_POD, DROP_NO_GROUP, 0, gid, 0, 0, 0);
		return TC_ACT_SHOT;
	}

	struct gateway *gw = 0;
	struct flow *f = bpf_map_lookup_elem(&flows, &p.key);
	if (f && f->group == gid) {
		// A pinned flow stays on a healthy gateway, draining or not
		// (but for a new connection's SYN, below).
		__u32 pinned = f->gateway;
		__u32 egress = f->egress;
		struct gateway *holder = 0;
#pragma unroll
		for (int i = 0; i < MAX_GATEWAYS; i++) {
			if (i < g->count && (g->gateways[i].flags & GW_HEALTHY)) {
				if (g->gateways[i].id == pinned)
					gw = &g->gateways[i];
				else if (egress && g->gateways[i].egress == egress)
					holder = &g->gateways[i];
			}
		}
		// A SYN opens a new connection, even on a 5-tuple an earlier
		// one pinned (ephemeral ports come round again within
		// minutes, the LRU entry outlives its connection): a draining
		// gateway gets none, neither as the pinned gateway nor as the
		// holder of the pinned address, and it stops serving once its
		// address moves.
		int syn = p.key.proto == IPPROTO_TCP && (p.tcp_flags & 0x12) == 0x02;
		if (gw && (gw->flags & GW_DRAINING) && syn)
			gw = 0;
		if (gw && f->lost)
			f->lost = 0; // its gateway is back
		if (!gw && holder && !(syn && (holder->flags & GW_DRAINING))) {
			// Its gateway went away and another listed one holds
			// its egress IP now (the zone's survivor, once the move
			// landed): follow the address. The new holder SNATs it
			// to the same IP, and port when free, so the connection
			// can go on.
			gw = holder;
			f->gateway = gw->id;
			f->gw_underlay = gw->underlay;
			f->lost = 0;
		}
		if (!gw && egress && cfg && cfg->hold && p.key.proto == IPPROTO_TCP &&
		    !(p.tcp_flags & 0x02)) {
			// An established TCP flow: its address is moving
			// (nobody listed holds it). Another gateway would break
			// it; dropping lets TCP retransmit until the address
			// lands, for at most cfg->hold.
			__u32 now = (__u32)(bpf_ktime_get_ns() >> 30) | 1;
			if (!f->lost)
				f->lost = now;
			if (now - f->lost < cfg->hold) {
				count(gid, pinned, 0, DROP_HELD);
				observe(skb, &p.key, OBS_POD, DROP_HELD, 0, gid, pinned, f->gw_underlay, egress);
				return TC_ACT_SHOT;
			}
		}
	}
	if (!gw) {
		// New flows (and flows whose gateway went away) go to healthy
		// gateways that are not draining. When every healthy one drains
		// (an ActiveStandby zone's holder within its grace period: its
		// standby gets the address only when the grace ends), they take
		// new flows rather than see them dropped: draining means "let
		// the others take new flows", and there are no others.
		__u32 usable = 0, healthy = 0;
#pragma unroll
		for (int i = 0; i < MAX_GATEWAYS; i++) {
			if (i < g->count && (g->gateways[i].flags & GW_HEALTHY)) {
				healthy++;
				if (!(g->gateways[i].flags & GW_DRAINING))
					usable++;
			}
		}
		__u32 mask = GW_HEALTHY | GW_DRAINING;
		if (usable == 0) {
			mask = GW_HEALTHY;
			usable = healthy;
		}
		if (usable == 0) {
			count(gid, 0, 0, DROP_NO_GATEWAY);
			observe(skb, &p.key, OBS_POD, DROP_NO_GATEWAY, 0, gid, 0, 0, 0);
			return TC_ACT_SHOT;
		}
		__u32 pick = bpf_get_hash_recalc(skb) % usable;
		__u32 seen = 0;
#pragma unroll
		for (int i = 0; i < MAX_GATEWAYS; i++) {
			if (i < g->count &&
			    (g->gateways[i].flags & mask) == GW_HEALTHY) {
				if (seen == pick && !gw)
					gw = &g->gateways[i];
				seen++;
			}
		}
		if (!gw) {
			count(gid, 0, 0, DROP_NO_GATEWAY);
			observe(skb, &p.key, OBS_POD, DROP_NO_GATEWAY, 0, gid, 0, 0, 0);
			return TC_ACT_SHOT;
		}
		struct flow nf = {
		    .group = gid,
		    .gateway = gw->id,
		    .ifindex = skb->ifindex,
		    .gw_underlay = gw->underlay,
		    .egress = gw->egress,
		};
		__builtin_memcpy(nf.pod_mac, p.eth_src, 6);
		__builtin_memcpy(nf.host_mac, p.eth_dst, 6);
		bpf_map_update_elem(&flows, &p.key, &nf, BPF_ANY);
	}

	// The packet goes on, marked, through the rest of the tc chain and the
	// stack: a CNI's programs and netfilter rules (NetworkPolicy) see it as
	// if egressd were not there. This node as the gateway: policy routing
	// and nftables route and SNAT it. Another gateway: policy routing sends
	// it to the tunnel device, whose egress program encapsulates it to the
	// pinned gateway; nftables keeps a masquerade off it and drops it if it
	// would leave by any other interface.
	__u32 gwid = gw->id;
	if (gw->flags & GW_LOCAL) {
		set_mark(skb, mark_magic | mark_group(gid));
		count(gid, gwid, skb->len, -1);
		observe(skb, &p.key, OBS_POD, -1, 1, gid, gwid, gw->underlay, gw->egress);
		return TC_NEXT;
	}
	if (!cfg || cfg->tunnel_ifindex == 0) {
		count(gid, gwid, 0, DROP_NO_TUNNEL);
		observe(skb, &p.key, OBS_POD, DROP_NO_TUNNEL, 0, gid, gwid, gw->underlay, gw->egress);
		return TC_ACT_SHOT;
	}
	if (!(cfg->flags & CFG_REDIRECT)) {
		set_mark(skb, mark_magic | mark_steer | mark_group(gid));
		count(gid, gwid, skb->len, -1);
		observe(skb, &p.key, OBS_POD, -1, 0, gid, gwid, gw->underlay, gw->egress);
		return TC_NEXT;
	}
	__u32 len = skb->len;
	// Unlike a steered packet routed to the tunnel device, this one has
	// not been held to the tunnel's MTU: one that does not fit takes the
	// tunnel device's path, which answers it as before.
	__u32 mtu_len = 0;
	if (bpf_check_mtu(skb, cfg->tunnel_ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS) == BPF_MTU_CHK_RET_SUCCESS) {
		int r = encap_redirect(skb, cfg, gw->underlay, gid & VNI_GROUP_MASK);
		if (r == TC_ACT_SHOT) {
			count(gid, gwid, 0, DROP_ENCAP);
			observe(skb, &p.key, OBS_POD, DROP_ENCAP, 0, gid, gwid, gw->underlay, gw->egress);
			return TC_ACT_SHOT;
		}
		if (r != ENCAP_FALLBACK) {
			count(gid, gwid, len, -1);
			observe(skb, &p.key, OBS_POD, -1, 0, gid, gwid, gw->underlay, gw->egress);
			return r;
		}
	} else {
		encap_count(ENCAP_NOT_FIT);
	}
	struct bpf_tunnel_key tk = {
	    .remote_ipv4 = bpf_ntohl(gw->underlay),
	    .local_ipv4 = bpf_ntohl(cfg->node_ip),
	    .tunnel_id = gid & VNI_GROUP_MASK,
	    .tunnel_ttl = 64,
	};
	if (bpf_skb_set_tunnel_key(skb, &tk, sizeof(tk), TUNNEL_KEY_FLAGS) < 0) {
		count(gid, gwid, 0, DROP_ENCAP);
		observe(skb, &p.key, OBS_POD, DROP_ENCAP, 0, gid, gwid, gw->underlay, gw->egress);
		return TC_ACT_SHOT;
	}
	count(gid, gwid, skb->len, -1);
	observe(skb, &p.key, OBS_POD, -1, 0, gid, gwid, gw->underlay, gw->egress);
	return bpf_redirect(cfg->tunnel_ifindex, 0);
}

// deliver hands a reply that came back through the tunnel to the stack,
// which routes it to the pod through this node's conntrack (the request
// crossed it) and netfilter, but only when the pod's flow is pinned to the
// sender (node: the outer source, network order). Any other reply-bit frame
// is unsolicited: a flow this node never sent, one of another group, or one
// pinned elsewhere. A flow evicted from the LRU map takes its replies again
// once the pod's next packet pins it. In redirect mode (CFG_REDIRECT) the
// request never crossed this node's conntrack, which would take the reply
// as invalid: it goes straight to the pod's interface instead.
static __always_inline int deliver(struct __sk_buff *skb, struct pkt *p, __u32 gid, __u32 node)
{
	struct flow_key ok = {};
	reverse(&p->key, &ok);
	struct flow *f = bpf_map_lookup_elem(&flows, &ok);
	if (!f || f->group != gid || f->gw_underlay != node) {
		count(gid, 0, 0, DROP_UNSOLICITED);
		observe(skb, &p->key, OBS_DELIVER, DROP_UNSOLICITED, 0, gid, 0, node, 0);
		return TC_ACT_SHOT;
	}
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (cfg && (cfg->flags & CFG_REDIRECT) && f->ifindex) {
		__u32 ifindex = f->ifindex;
		__u8 macs[12];
		__builtin_memcpy(macs, f->pod_mac, 6);
		__builtin_memcpy(&macs[6], f->host_mac, 6);
		if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0) < 0) {
			count(gid, 0, 0, DROP_MALFORMED);
			return TC_ACT_SHOT;
		}
		count(gid, f->gateway, skb->len, -1);
		observe(skb, &p->key, OBS_DELIVER, -1, 0, gid, f->gateway, node, f->egress);
		return bpf_redirect(ifindex, 0);
	}
	// The inner destination MAC is the gateway's device's: take the frame
	// as ours so the IP layer routes it.
	bpf_skb_change_type(skb, PACKET_HOST);
	count(gid, f->gateway, skb->len, -1);
	observe(skb, &p->key, OBS_DELIVER, -1, 0, gid, f->gateway, node, f->egress);
	return TC_ACT_OK;
}

SEC("tc")
int egressd_tun_ingress(struct __sk_buff *skb)
{
	struct bpf_tunnel_key tk = {};
	if (bpf_skb_get_tunnel_key(skb, &tk, sizeof(tk), 0) < 0)
		return TC_NEXT;
	struct pkt p = {};
	if (parse(skb, &p) != 0) {
		count(0, 0, 0, DROP_MALFORMED);
		return TC_ACT_SHOT;
	}
	__u32 vni = tk.tunnel_id;
	__u32 gid = vni & VNI_GROUP_MASK;
	__u32 node = bpf_htonl(tk.remote_ipv4);
	if (vni & VNI_REPLY)
		return deliver(skb, &p, gid, node);

	struct served_group *sg = bpf_map_lookup_elem(&served, &gid);
	if (!sg) {
		count(gid, 0xffffffff, 0, DROP_NOT_SERVED);
		observe(skb, &p.key, OBS_TUN_INGRESS, DROP_NOT_SERVED, 0, gid, 0xffffffff, node, 0);
		return TC_ACT_SHOT;
	}
	// Only a pod of the sending node that a policy steers to this group
	// may use its egress IPs: anything else that reaches the tunnel port
	// (a host that is no node, a node sending for a pod it does not run)
	// is dropped before it is NATed.
	struct source_key sk = {.node = node, .group = gid};
	__builtin_memcpy(sk.addr, p.key.src, 16);
	if (!bpf_map_lookup_elem(&sources, &sk)) {
		struct source_key nk = {.node = node};
		int why = bpf_map_lookup_elem(&sources, &nk) ? DROP_FOREIGN_SOURCE : DROP_FOREIGN_NODE;
		count(gid, 0xffffffff, 0, why);
		observe(skb, &p.key, OBS_TUN_INGRESS, why, 0, gid, 0xffffffff, node, 0);
		return TC_ACT_SHOT;
	}
	struct return_flow *rf = bpf_map_lookup_elem(&return_flows, &p.key);
	if (!rf || rf->node != node || rf->group != gid) {
		struct return_flow n = {.node = node, .group = gid};
		bpf_map_update_elem(&return_flows, &p.key, &n, BPF_ANY);
	}
	set_mark(skb, sg->mark);
	// The inner destination MAC is the source node's; accept the frame
	// as ours so the IP layer routes it.
	bpf_skb_change_type(skb, PACKET_HOST);
	count(gid, 0xffffffff, skb->len, -1);
	observe(skb, &p.key, OBS_TUN_INGRESS, -1, 0, gid, 0xffffffff, node, 0);
	return TC_ACT_OK;
}

static __always_inline void frag_key_of(struct pkt *p, struct frag_key *fk)
{
	__builtin_memcpy(&fk->src, &p->key.src[12], 4);
	__builtin_memcpy(&fk->dst, &p->key.dst[12], 4);
	fk->id = p->frag_id;
	fk->proto = p->key.proto;
	fk->_pad = 0;
}

// lookup_dest reads the tunnel endpoint of flow key k: for a reply the source
// node the gateway recorded, else the gateway the flow is pinned to (in group
// gid). Returns 1 when found.
static __always_inline int lookup_dest(struct flow_key *k, int reply, __u32 gid, struct frag_dest *out)
{
	if (reply) {
		struct flow_key ok = {};
		reverse(k, &ok);
		struct return_flow *rf = bpf_map_lookup_elem(&return_flows, &ok);
		if (!rf)
			return 0;
		out->remote = rf->node;
		out->group = rf->group;
		out->gateway = 0xffffffff;
		return 1;
	}
	struct flow *f = bpf_map_lookup_elem(&flows, k);
	if (!f || f->group != gid)
		return 0;
	out->remote = f->gw_underlay;
	out->group = gid;
	out->gateway = f->gateway;
	return 1;
}

// tunnel_dest finds where tc egress of the tunnel device sends a packet:
// a steered one (reply 0) to the gateway its flow is pinned to, a reply
// (reply 1) back to the node its flow came from. A first IPv4 fragment is
// looked up with its ports and records the answer for the later ones. A
// datagram pinned by the pod's own fragments (keyed without ports) is
// looked up again without them. Returns 0 when found.
static __always_inline int tunnel_dest(struct pkt *p, int reply, __u32 gid, struct frag_dest *out)
{
	struct frag_key fk = {};
	if (p->frag && !p->frag_first) {
		frag_key_of(p, &fk);
		struct frag_dest *d = bpf_map_lookup_elem(&frags, &fk);
		if (d && (reply || d->group == gid)) {
			*out = *d;
			return 0;
		}
	}
	struct flow_key k = p->key;
	if (p->frag_first) {
		k.sport = p->frag_ports[0];
		k.dport = p->frag_ports[1];
	}
	int found = lookup_dest(&k, reply, gid, out);
	if (!found && !is_echo(k.proto) && (k.sport || k.dport)) {
		k.sport = 0;
		k.dport = 0;
		found = lookup_dest(&k, reply, gid, out);
	}
	if (!found)
		return -1;
	if (p->frag_first) {
		frag_key_of(p, &fk);
		bpf_map_update_elem(&frags, &fk, out, BPF_ANY);
	}
	return 0;
}

// egressd_tun_egress encapsulates, at tc egress of the tunnel device, a
// source node's steered packets (mark with the steer bit, set by the
// classifier and routed here by policy routing) to the gateway their flow is
// pinned to, and a gateway's replies (mark with the reply bit, set by
// nftables from the conntrack mark) to the node their flow came from.
// egressd's bits of the mark are cleared so the stack does not route the
// packet again; a CNI's stay. Anything else
// goes on.
SEC("tc")
int egressd_tun_egress(struct __sk_buff *skb)
{
	int reply;
	__u32 mark = skb->mark;
	if ((mark & (mark_magic_mask | mark_steer)) == (mark_magic | mark_steer))
		reply = 0;
	else if ((mark & (mark_magic_mask | mark_reply)) == (mark_magic | mark_reply))
		reply = 1;
	else
		return TC_NEXT;
	__u32 gid = reply ? 0 : group_of_mark(mark);
	__u32 self = reply ? 0xffffffff : 0;
	struct pkt p = {};
	if (parse(skb, &p) != 0) {
		count(gid, self, 0, DROP_MALFORMED);
		return TC_ACT_SHOT;
	}
	struct frag_dest d = {};
	if (tunnel_dest(&p, reply, gid, &d) < 0) {
		count(gid, self, 0, reply ? DROP_NO_RETURN : DROP_NO_FLOW);
		observe(skb, &p.key, OBS_TUN_EGRESS, reply ? DROP_NO_RETURN : DROP_NO_FLOW, 0, gid, self, 0, 0);
		return TC_ACT_SHOT;
	}
	gid = d.group;
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	__u32 vni = (reply ? VNI_REPLY : 0) | (gid & VNI_GROUP_MASK);
	__u32 len = skb->len;
	set_mark(skb, 0);
	int r = encap_redirect(skb, cfg, d.remote, vni);
	if (r != ENCAP_FALLBACK) {
		if (r == TC_ACT_SHOT)
			count(gid, reply ? self : d.gateway, 0, DROP_ENCAP);
		else if (reply)
			count(gid, self, len, -1);
		return r;
	}
	struct bpf_tunnel_key tk = {
	    .remote_ipv4 = bpf_ntohl(d.remote),
	    .local_ipv4 = cfg ? bpf_ntohl(cfg->node_ip) : 0,
	    .tunnel_id = vni,
	    .tunnel_ttl = 64,
	};
	if (bpf_skb_set_tunnel_key(skb, &tk, sizeof(tk), TUNNEL_KEY_FLAGS) < 0) {
		count(gid, reply ? self : d.gateway, 0, DROP_ENCAP);
		return TC_ACT_SHOT;
	}
	if (reply)
		count(gid, self, skb->len, -1);
	return TC_ACT_OK;
}

// probe_pkt is a probe request as it arrives: Ethernet, an IPv4 header
// without options, UDP and the 16-byte probe.
struct probe_pkt {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	__u8 magic[4];
	__u8 version;
	__u8 flags;
	__u8 reserved[2];
	__u8 seq[8];
} __attribute__((packed));

#define PROBE_IP_OFF ETH_HLEN
#define PROBE_UDP_OFF (ETH_HLEN + sizeof(struct iphdr))
#define PROBE_DATA_OFF (PROBE_UDP_OFF + sizeof(struct udphdr))

// egressd_probe answers probe requests addressed to this node before the
// stack sees them: it turns the request into the reply in place (MACs, IPs
// and ports swapped, reply flag and the draining bit set, TTL reset) and
// sends it back out of the interface it came in on. Everything else, and
// requests it cannot answer (IP options, fragments), goes on to the stack,
// where the agent's userspace responder answers if it runs.
SEC("tc")
int egressd_probe(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_NEXT;
	__u32 zero = 0;
	struct probe_config *cfg = bpf_map_lookup_elem(&probe_cfg, &zero);
	if (!cfg || cfg->port == 0)
		return TC_NEXT;
	struct iphdr ip;
	if (bpf_skb_load_bytes(skb, PROBE_IP_OFF, &ip, sizeof(ip)) < 0)
		return TC_NEXT;
	if (ip.version != 4 || ip.ihl != 5 || ip.protocol != IPPROTO_UDP ||
	    (ip.frag_off & bpf_htons(0x3fff)) ||
	    ip.tot_len != bpf_htons(sizeof(struct iphdr) + sizeof(struct udphdr) + PROBE_SIZE))
		return TC_NEXT;
	if (cfg->node_ip && ip.daddr != cfg->node_ip)
		return TC_NEXT;

	struct probe_pkt p;
	if (bpf_skb_load_bytes(skb, 0, &p, sizeof(p)) < 0)
		return TC_NEXT;
	if (p.udp.dest != cfg->port ||
	    p.udp.len != bpf_htons(sizeof(struct udphdr) + PROBE_SIZE) ||
	    p.magic[0] != 'E' || p.magic[1] != 'G' || p.magic[2] != 'R' || p.magic[3] != 'P' ||
	    p.version != PROBE_VERSION || (p.flags & PROBE_FLAG_REPLY))
		return TC_NEXT;

	// Swapping addresses and ports moves 16-bit words within the summed
	// range, so neither checksum changes; TTL and the probe's version word
	// are patched incrementally. A zero (absent) UDP checksum stays zero.
	struct {
		__u8 dst[6];
		__u8 src[6];
	} macs;
	__builtin_memcpy(macs.dst, p.eth.h_source, 6);
	__builtin_memcpy(macs.src, p.eth.h_dest, 6);
	__u32 addrs[2] = {ip.daddr, ip.saddr};
	__u16 ports[2] = {p.udp.dest, p.udp.source};

	__u16 old_ttl, new_ttl;
	__builtin_memcpy(&old_ttl, &ip.ttl, 2); // ttl and protocol
	struct {
		__u8 ttl;
		__u8 protocol;
	} tp = {.ttl = PROBE_TTL, .protocol = ip.protocol};
	__builtin_memcpy(&new_ttl, &tp, 2);

	__u32 old_word, new_word;
	__builtin_memcpy(&old_word, &p.version, 4); // version, flags, reserved
	__u8 word[4] = {PROBE_VERSION, PROBE_FLAG_REPLY, 0, 0};
	if (cfg->flags & PROBE_CFG_DRAINING)
		word[1] |= PROBE_FLAG_DRAINING;
	__builtin_memcpy(&new_word, word, 4);

	if (bpf_skb_store_bytes(skb, 0, &macs, sizeof(macs), 0) < 0 ||
	    bpf_skb_store_bytes(skb, PROBE_IP_OFF + offsetof(struct iphdr, saddr), addrs, sizeof(addrs), 0) < 0 ||
	    bpf_l3_csum_replace(skb, PROBE_IP_OFF + offsetof(struct iphdr, check), old_ttl, new_ttl, 2) < 0 ||
	    bpf_skb_store_bytes(skb, PROBE_IP_OFF + offsetof(struct iphdr, ttl), &tp, sizeof(tp), 0) < 0 ||
	    bpf_skb_store_bytes(skb, PROBE_UDP_OFF, ports, sizeof(ports), 0) < 0 ||
	    bpf_l4_csum_replace(skb, PROBE_UDP_OFF + offsetof(struct udphdr, check), old_word, new_word,
				BPF_F_MARK_MANGLED_0 | sizeof(new_word)) < 0 ||
	    bpf_skb_store_bytes(skb, PROBE_DATA_OFF + 4, word, sizeof(word), 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}
