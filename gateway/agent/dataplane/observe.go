package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/contract"
)

// Flow is a packet the datapath observed (bpf.FlowEvent) with what the node adds: the local
// pod's name and, where this node SNATs the flow, the egress IP and port conntrack gave it.
type Flow struct {
	bpf.FlowEvent
	// At is when the datapath saw the packet, on the wall clock.
	At time.Time
	// Pod is namespace/name of the local pod the flow belongs to ("": not a pod of this node,
	// e.g. a tunnelled flow on a gateway).
	Pod string
	// EgressPort is the source port the flow leaves with, from this node's conntrack, where
	// this node SNATs it (a gateway's admitted frames, a pod on a gateway node); 0: unknown
	// (a source node, where the gateway picks it, ICMP, or conntrack had no entry yet).
	// FlowEvent.Egress is then conntrack's egress IP too.
	EgressPort uint16
}

// ObserveOptions configures ObserveFlows.
type ObserveOptions struct {
	// Sample takes 1 in Sample packets at each verdict point; 0 or 1: every one.
	Sample uint32
}

// conntrackWait bounds how long ObserveFlows waits for conntrack to confirm a flow it SNATs:
// the datapath writes the event at tc ingress, before the stack's conntrack and nftables
// see the packet.
const conntrackWait = 20 * time.Millisecond

// ObserveFlows turns the datapath's flow events on, calls fn with each one until ctx ends,
// then turns them off. One observer at a time: the caller fans events out. The datapath must
// have been applied once.
func (d *Dataplane) ObserveFlows(ctx context.Context, opts ObserveOptions, fn func(Flow)) error {
	d.mu.Lock()
	if d.dp == nil {
		d.mu.Unlock()
		return errors.New("datapath not loaded")
	}
	r, err := d.dp.OpenFlowReader()
	if err == nil {
		err = d.dp.SetObserve(bpf.ObserveConfig{Enabled: true, Sample: opts.Sample})
		if err != nil {
			_ = r.Close()
		}
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	defer d.stopObserving()
	stop := context.AfterFunc(ctx, func() { _ = r.Close() })
	defer stop()
	defer r.Close()
	for {
		e, err := r.Read()
		if errors.Is(err, bpf.ErrFlowReaderClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		fn(d.enrich(ctx, e))
	}
}

func (d *Dataplane) stopObserving() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp != nil {
		_ = d.dp.SetObserve(bpf.ObserveConfig{})
	}
}

// enrich names the local pod and, where this node SNATs the flow, asks conntrack for its
// egress address.
func (d *Dataplane) enrich(ctx context.Context, e bpf.FlowEvent) Flow {
	f := Flow{FlowEvent: e, At: wallClock(e.Time)}
	pod := e.Src
	if e.Point == bpf.ObserveDeliver {
		pod = e.Dst
	}
	d.mu.Lock()
	if s := d.state; s != nil {
		for _, p := range s.Pods {
			for _, ip := range p.IPs {
				if ip == pod {
					f.Pod = p.Name
				}
			}
		}
	}
	d.mu.Unlock()
	snatHere := e.Verdict == bpf.VerdictLocal || (e.Point == bpf.ObserveTunnelIngress && e.Verdict == bpf.VerdictForwarded)
	if !snatHere || (e.Proto != unix.IPPROTO_TCP && e.Proto != unix.IPPROTO_UDP) {
		return f
	}
	for deadline := time.Now().Add(conntrackWait); ; {
		var reply netip.AddrPort
		err := d.inNS(func() error {
			var err error
			reply, err = conntrackReplyDst(e.Src, e.Dst, e.Sport, e.Dport, e.Proto)
			return err
		})
		if err == nil {
			if reply.Addr() != e.Src { // translated
				f.Egress, f.EgressPort = reply.Addr(), reply.Port()
			}
			return f
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return f
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// conntrackReplyDst looks the connection with original tuple src:sport → dst:dport up in
// the calling thread's namespace's conntrack (IPCTNL_MSG_CT_GET) and returns its reply
// tuple's destination: after SNAT, the egress address and port.
func conntrackReplyDst(src, dst netip.Addr, sport, dport uint16, proto uint8) (netip.AddrPort, error) {
	fam, srcT, dstT := uint8(unix.AF_INET), nl.CTA_IP_V4_SRC, nl.CTA_IP_V4_DST
	if src.Is6() {
		fam, srcT, dstT = unix.AF_INET6, nl.CTA_IP_V6_SRC, nl.CTA_IP_V6_DST
	}
	req := nl.NewNetlinkRequest((unix.NFNL_SUBSYS_CTNETLINK<<8)|nl.IPCTNL_MSG_CT_GET, unix.NLM_F_ACK)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: fam, Version: nl.NFNETLINK_V0})
	orig := nl.NewRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_ORIG, nil)
	ip := orig.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
	ip.AddRtAttr(srcT, src.AsSlice())
	ip.AddRtAttr(dstT, dst.AsSlice())
	pr := orig.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil)
	pr.AddRtAttr(nl.CTA_PROTO_NUM, []byte{proto})
	pr.AddRtAttr(nl.CTA_PROTO_SRC_PORT, nl.BEUint16Attr(sport))
	pr.AddRtAttr(nl.CTA_PROTO_DST_PORT, nl.BEUint16Attr(dport))
	req.AddData(orig)
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getting conntrack entry: %w", err)
	}
	for _, m := range msgs {
		if len(m) < nl.SizeofNfgenmsg {
			continue
		}
		if reply, ok := findAttr(m[nl.SizeofNfgenmsg:], nl.CTA_TUPLE_REPLY); ok {
			return replyDst(reply)
		}
	}
	return netip.AddrPort{}, errors.New("getting conntrack entry: no reply tuple")
}

// replyDst reads the destination address and port of a conntrack tuple.
func replyDst(tuple []byte) (netip.AddrPort, error) {
	ipAttrs, ok1 := findAttr(tuple, nl.CTA_TUPLE_IP)
	protoAttrs, ok2 := findAttr(tuple, nl.CTA_TUPLE_PROTO)
	if !ok1 || !ok2 {
		return netip.AddrPort{}, errors.New("conntrack tuple without address or protocol")
	}
	raw, ok := findAttr(ipAttrs, nl.CTA_IP_V4_DST)
	if !ok {
		raw, ok = findAttr(ipAttrs, nl.CTA_IP_V6_DST)
	}
	addr, aok := netip.AddrFromSlice(raw)
	port, pok := findAttr(protoAttrs, nl.CTA_PROTO_DST_PORT)
	if !ok || !aok || !pok || len(port) < 2 {
		return netip.AddrPort{}, errors.New("conntrack tuple without destination")
	}
	return netip.AddrPortFrom(addr.Unmap(), binary.BigEndian.Uint16(port)), nil
}

// findAttr returns the value of the first netlink attribute of type t (flags masked) in b.
func findAttr(b []byte, t uint16) ([]byte, bool) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) & nl.NLA_TYPE_MASK
		if l < 4 || l > len(b) {
			return nil, false
		}
		if typ == t {
			return b[4:l], true
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return nil, false
}

// wallClock turns a bpf_ktime_get_ns() reading into wall-clock time.
func wallClock(mono time.Duration) time.Time {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return now
	}
	return now.Add(mono - time.Duration(ts.Nano()))
}

// Record is the flow as the agent streams it (contract.FlowRecord). group and gateway name the
// datapath's group and gateway ids; bpf.GatewaySelf is this node, node.
func (f Flow) Record(node string, group, gateway func(uint32) string) contract.FlowRecord {
	r := contract.FlowRecord{
		Time: f.At, Node: node, Point: f.Point.String(), Pod: f.Pod,
		Source:      netip.AddrPortFrom(f.Src, f.Sport),
		Destination: netip.AddrPortFrom(f.Dst, f.Dport),
		Protocol:    protoName(f.Proto),
		FromNode:    f.Underlay, EgressIP: f.Egress, EgressPort: f.EgressPort, Bytes: f.Len,
		Reason: f.ReasonName(),
	}
	if f.Proto != unix.IPPROTO_TCP && f.Proto != unix.IPPROTO_UDP {
		r.Source, r.Destination = netip.AddrPortFrom(f.Src, 0), netip.AddrPortFrom(f.Dst, 0)
	}
	if f.Group != 0 {
		r.Group = group(f.Group)
	}
	switch f.Gateway {
	case 0:
	case bpf.GatewaySelf:
		r.Gateway = node
	default:
		r.Gateway = gateway(f.Gateway)
	}
	switch {
	case f.Verdict == bpf.VerdictDropped:
		r.Verdict = contract.FlowDropped
	case f.Verdict == bpf.VerdictLocal:
		r.Verdict = contract.FlowLocal
	case f.Point == bpf.ObserveTunnelIngress:
		r.Verdict = contract.FlowAdmitted
	case f.Point == bpf.ObserveDeliver:
		r.Verdict = contract.FlowDelivered
	default:
		r.Verdict = contract.FlowSteered
	}
	return r
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	}
	return fmt.Sprint(p)
}
