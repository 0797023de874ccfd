package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// ObservePoint is where in the datapath a flow event was taken (enum obs_point in C).
type ObservePoint uint8

// Observation points.
const (
	// ObservePod: the classifier on a pod's interface steered the packet to a gateway, SNATs it
	// on this node (the node is its group's gateway) or dropped it.
	ObservePod = ObservePoint(egressdObsPointOBS_POD)
	// ObserveTunnelIngress: a gateway admitted a tunnelled frame (it goes on to nftables SNAT)
	// or dropped it.
	ObserveTunnelIngress = ObservePoint(egressdObsPointOBS_TUN_INGRESS)
	// ObserveDeliver: a source node handed a reply from its gateway to the pod, or dropped it.
	// The event's Src is the destination and Dst the pod: the reply's direction.
	ObserveDeliver = ObservePoint(egressdObsPointOBS_DELIVER)
	// ObserveTunnelEgress: the tunnel device dropped a packet it had no flow for.
	ObserveTunnelEgress = ObservePoint(egressdObsPointOBS_TUN_EGRESS)
)

func (p ObservePoint) String() string {
	switch p {
	case ObservePod:
		return "pod"
	case ObserveTunnelIngress:
		return "tunnel-ingress"
	case ObserveDeliver:
		return "deliver"
	case ObserveTunnelEgress:
		return "tunnel-egress"
	}
	return fmt.Sprintf("point-%d", uint8(p))
}

// Verdict is what the datapath did with an observed packet (enum obs_verdict in C).
type Verdict uint8

// Verdicts.
const (
	// VerdictForwarded: steered to a gateway, admitted by the gateway, or delivered to the pod.
	VerdictForwarded = Verdict(egressdObsVerdictOBS_FORWARDED)
	// VerdictDropped: dropped; FlowEvent.Reason says why.
	VerdictDropped = Verdict(egressdObsVerdictOBS_DROPPED)
	// VerdictLocal: this node is the gateway the flow was given: it is SNATed here.
	VerdictLocal = Verdict(egressdObsVerdictOBS_LOCAL)
)

// ObserveConfig turns flow events on (SetObserve).
type ObserveConfig struct {
	Enabled bool
	// Sample writes 1 in Sample packets (on average) at each verdict point; 0 or 1: every one.
	Sample uint32
}

// SetObserve turns flow events on or off. Off, each verdict point costs one array lookup.
func (d *Datapath) SetObserve(c ObserveConfig) error {
	v := egressdObserveConfig{Sample: c.Sample}
	if c.Enabled {
		v.Enabled = 1
	}
	k := uint32(0)
	if err := d.objs.ObserveCfg.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("setting flow observation: %w", err)
	}
	return nil
}

// FlowEvent is one observed packet.
type FlowEvent struct {
	// Time is when the datapath saw it, on the kernel's monotonic clock (bpf_ktime_get_ns).
	Time         time.Duration
	Src, Dst     netip.Addr
	Sport, Dport uint16 // host order; ICMP echo: Sport is the identifier
	Proto        uint8
	Point        ObservePoint
	Verdict      Verdict
	Reason       int // a Drop* reason when Verdict is VerdictDropped
	Group        uint32
	// Gateway is the gateway id the flow was given (0: none; GatewaySelf on a gateway).
	Gateway uint32
	// Underlay is the gateway's underlay IPv4 on a source node, the sending node's on a
	// gateway (invalid: none).
	Underlay netip.Addr
	// Egress is the egress IPv4 the datapath knows for the flow: on a source node the one its
	// gateway SNATs the group to (invalid: unknown, and on a gateway, where nftables picks it).
	Egress  netip.Addr
	Ifindex int
	Len     int
}

// ReasonName names a dropped event's reason ("" when not dropped).
func (e FlowEvent) ReasonName() string {
	if e.Verdict != VerdictDropped || e.Reason < 0 || e.Reason >= NumDropReasons {
		return ""
	}
	return DropReasonNames[e.Reason]
}

func be16(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

func addr4(v uint32) netip.Addr {
	if v == 0 {
		return netip.Addr{}
	}
	return fromBE32(v)
}

// decodeFlowEvent reads the C struct flow_event.
func decodeFlowEvent(raw []byte) (FlowEvent, error) {
	var r egressdFlowEvent
	if _, err := binary.Decode(raw, binary.NativeEndian, &r); err != nil {
		return FlowEvent{}, fmt.Errorf("decoding a flow event of %d bytes: %w", len(raw), err)
	}
	return FlowEvent{
		Time: time.Duration(r.Ts),
		Src:  netip.AddrFrom16(r.Src).Unmap(), Dst: netip.AddrFrom16(r.Dst).Unmap(),
		Sport: be16(r.Sport), Dport: be16(r.Dport), Proto: r.Proto,
		Point: ObservePoint(r.Point), Verdict: Verdict(r.Verdict), Reason: int(r.Reason),
		Group: r.Group, Gateway: r.Gateway, Underlay: addr4(r.GwUnderlay), Egress: addr4(r.Egress),
		Ifindex: int(r.Ifindex), Len: int(r.Len),
	}, nil
}

// FlowReader reads flow events from the datapath's ring buffer. It is not safe for concurrent
// use; Close unblocks a Read in progress.
type FlowReader struct {
	r *ringbuf.Reader
}

// ErrFlowReaderClosed is what Read returns once the reader is closed.
var ErrFlowReaderClosed = errors.New("flow reader closed")

// OpenFlowReader opens a reader of the flow events ring buffer. Events are written only while
// SetObserve enables them.
func (d *Datapath) OpenFlowReader() (*FlowReader, error) {
	r, err := ringbuf.NewReader(d.objs.FlowEvents)
	if err != nil {
		return nil, fmt.Errorf("opening the flow events ring buffer: %w", err)
	}
	return &FlowReader{r: r}, nil
}

// SetDeadline makes a blocked Read return os.ErrDeadlineExceeded at t (zero: no deadline).
func (f *FlowReader) SetDeadline(t time.Time) { f.r.SetDeadline(t) }

// Read waits for the next event.
func (f *FlowReader) Read() (FlowEvent, error) {
	rec, err := f.r.Read()
	switch {
	case errors.Is(err, ringbuf.ErrClosed):
		return FlowEvent{}, ErrFlowReaderClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
		return FlowEvent{}, err
	case err != nil:
		return FlowEvent{}, fmt.Errorf("reading flow events: %w", err)
	}
	return decodeFlowEvent(rec.RawSample)
}

// Close releases the reader.
func (f *FlowReader) Close() error { return f.r.Close() }
