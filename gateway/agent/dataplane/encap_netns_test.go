package dataplane

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/test/netns"
)

// tunnelTX is how many packets the tunnel device of n has sent.
func tunnelTX(t *testing.T, n *netns.Node) uint64 {
	t.Helper()
	l, err := n.Netlink().LinkByName(DefaultTunnelDevice)
	if err != nil {
		t.Fatalf("finding %s on %s: %v", DefaultTunnelDevice, n.Name, err)
	}
	return l.Attrs().Statistics.TxPackets
}

// capturedFrame is the outer view of one VXLAN frame seen on an underlay interface.
type capturedFrame struct {
	src, dst    netip.Addr
	dport, csum uint16
	vni         uint32
	innerIPv4   bool // the inner frame is an IPv4 packet
}

// captureVXLAN records the VXLAN frames (UDP to the tunnel port) that cross n's underlay
// interface, either way, until the returned stop is called.
func captureVXLAN(t *testing.T, n *netns.Node) (stop func() []capturedFrame) {
	t.Helper()
	var pb [2]byte
	binary.BigEndian.PutUint16(pb[:], unix.ETH_P_ALL)
	proto := int(binary.NativeEndian.Uint16(pb[:])) // htons(ETH_P_ALL): outgoing frames too
	var fd int
	err := n.Do(func() error {
		l, err := n.Netlink().LinkByName(n.Link)
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: l.Attrs().Index})
	})
	if err != nil {
		t.Fatalf("capturing on %s: %v", n.Name, err)
	}
	var (
		mu     sync.Mutex
		frames []capturedFrame
		done   = make(chan struct{})
		exited = make(chan struct{})
	)
	go func() {
		defer close(exited)
		buf := make([]byte, 256)
		for {
			select {
			case <-done:
				return
			default:
			}
			k, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || k < 14+20+8+8+14+20 {
				continue
			}
			if binary.BigEndian.Uint16(buf[12:]) != unix.ETH_P_IP {
				continue
			}
			ip := buf[14:]
			ihl := int(ip[0]&0x0f) * 4
			if ip[9] != unix.IPPROTO_UDP || ihl != 20 {
				continue
			}
			udp := ip[ihl:]
			if binary.BigEndian.Uint16(udp[2:]) != contract.DefaultTunnelPort {
				continue
			}
			f := capturedFrame{
				src: netip.AddrFrom4([4]byte(ip[12:16])), dst: netip.AddrFrom4([4]byte(ip[16:20])),
				dport: binary.BigEndian.Uint16(udp[2:]), csum: binary.BigEndian.Uint16(udp[6:]),
				vni:       binary.BigEndian.Uint32(udp[12:]) >> 8,
				innerIPv4: binary.BigEndian.Uint16(udp[16+12:]) == unix.ETH_P_IP,
			}
			mu.Lock()
			frames = append(frames, f)
			mu.Unlock()
		}
	}()
	return func() []capturedFrame {
		close(done)
		<-exited
		_ = unix.Close(fd)
		mu.Lock()
		defer mu.Unlock()
		return frames
	}
}

// encapStats reads a dataplane's encapsulation counters.
func encapStats(t *testing.T, dp *Dataplane) bpf.EncapStats {
	t.Helper()
	s, err := dp.dp.EncapStats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEncapInProgram: the programs encapsulate tunnelled traffic themselves and send it out of
// the underlay interface, both ways (source node's steered packets, the gateway's replies).
// The first datagram, sent while the source node has not resolved its gateway's MAC, takes the
// tunnel device (counted as the route lookup's NO_NEIGH) and arrives: the neighbour is never
// handed a frame it would queue. Then the pod's traffic arrives with the egress IP, a 20 MB TCP
// transfer each way (GSO super-packets) completes, every frame is counted InProgram on both
// nodes, the tunnel devices send nothing, and the frames on the gateway's underlay carry the
// nodes' addresses, the tunnel port, the group's VNI (reply bit on replies) and a zero UDP
// checksum. Without a next hop for its gateway, the source node's packets take the tunnel
// device's path again (counted NoNexthop) and still arrive.
// Both steering modes: stack steering encapsulates at tc egress of egressd0, redirect steering
// in the classifier (up) and at tc egress of egressd0 (the gateway's replies).
func TestEncapInProgram(t *testing.T) {
	skipUnlessRoot(t)
	for _, mode := range []struct {
		name string
		cfg  Config
	}{{"stack steering", Config{}}, {"redirect steering", Config{Redirect: true}}} {
		t.Run(mode.name, func(t *testing.T) { testEncapInProgram(t, mode.cfg) })
	}
}

func testEncapInProgram(t *testing.T, cfg Config) {
	topo := netns.New(t, netns.Spec{NoIPv6: true, Nodes: []netns.NodeSpec{
		{Name: "worker1", Pods: []netns.PodSpec{{Name: "a"}}},
		{Name: "gw1"},
	}})
	egress, dps := applyPairBedDP(t, topo, cfg)
	w, gw, a := topo.Node("worker1"), topo.Node("gw1"), topo.Pod("a")
	for _, n := range []*netns.Node{w, gw} {
		nh, err := dps[n.Name].dp.Nexthops()
		if err != nil || len(nh) != 1 {
			t.Fatalf("%s next hops %v (%v), want its one peer", n.Name, nh, err)
		}
	}

	// The first datagram, with gw1's MAC unknown on worker1.
	if out, err := w.Run("ip", "neigh", "flush", "to", gw.IP.String()); err != nil {
		t.Fatalf("flushing worker1's neighbour entry of gw1: %v: %s", err, out)
	}
	before := encapStats(t, dps[w.Name])
	if got, err := a.UDPEcho(ctxT(t), dstG1); err != nil || got != egress {
		t.Errorf("first UDP datagram with gw1's neighbour unresolved: seen from %s (%v), want %s", got, err, egress)
	}
	if after := encapStats(t, dps[w.Name]); after.Route[7] <= before.Route[7] {
		t.Errorf("worker1's counters %+v → %+v, want the first datagram on the tunnel device (NO_NEIGH)", before, after)
	}

	txW, txGW := tunnelTX(t, w), tunnelTX(t, gw)
	stW, stGW := encapStats(t, dps[w.Name]), encapStats(t, dps[gw.Name])
	stop := captureVXLAN(t, gw)
	expectSeen(t, a, dstG1, egress)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, dir := range []netns.Direction{netns.Upload, netns.Download} {
		if _, err := a.Transfer(ctx, dstG1, 20<<20, dir); err != nil {
			t.Errorf("TCP transfer %v: %v", dir, err)
		}
	}
	frames := stop()
	for _, c := range []struct {
		n      *netns.Node
		tx     uint64
		before bpf.EncapStats
	}{{w, txW, stW}, {gw, txGW, stGW}} {
		if d := tunnelTX(t, c.n) - c.tx; d != 0 {
			t.Errorf("%s's %s sent %d packets, want 0 (encapsulated by the programs)", c.n.Name, DefaultTunnelDevice, d)
		}
		after := encapStats(t, dps[c.n.Name])
		if after.InProgram <= c.before.InProgram || after.Fallback() != c.before.Fallback() {
			t.Errorf("%s's counters %+v → %+v, want every frame InProgram", c.n.Name, c.before, after)
		}
		t.Logf("%s: %d frames encapsulated by the programs", c.n.Name, after.InProgram-c.before.InProgram)
	}
	var up, down int
	for _, f := range frames {
		switch {
		case f.src == w.IP && f.dst == gw.IP && f.vni == 1:
			up++
		case f.src == gw.IP && f.dst == w.IP && f.vni == bpf.VNIReply|1:
			down++
		default:
			t.Errorf("unexpected VXLAN frame %+v", f)
			continue
		}
		if f.csum != 0 || !f.innerIPv4 {
			t.Errorf("frame %+v: want a zero UDP checksum and an inner IPv4 frame", f)
		}
	}
	if up == 0 || down == 0 {
		t.Errorf("saw %d frames worker1 → gw1 (VNI 1) and %d gw1 → worker1 (VNI %#x), want some of each", up, down, bpf.VNIReply|1)
	}

	// No next hop: the tunnel device's path.
	if err := dps[w.Name].dp.DeleteNexthop(gw.IP); err != nil {
		t.Fatal(err)
	}
	txW, stW = tunnelTX(t, w), encapStats(t, dps[w.Name])
	expectSeen(t, a, dstG1, egress)
	if d := tunnelTX(t, w) - txW; d == 0 {
		t.Errorf("without a next hop worker1's %s sent nothing, want the steered packets", DefaultTunnelDevice)
	}
	if after := encapStats(t, dps[w.Name]); after.NoNexthop <= stW.NoNexthop {
		t.Errorf("worker1's counters %+v → %+v, want NoNexthop counted", stW, after)
	}
}
