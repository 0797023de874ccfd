package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/test/netns"
)

const (
	// ppsPort is the first sink port on the external host (one per path, so that each path
	// has its own sink and its own conntrack entries).
	ppsPort = 7311
	// ppsFlows source ports per path, each its own socket.
	ppsFlows = 128
	// ppsBatch datagrams per sendmmsg/recvmmsg: the syscalls cost the same on every path, and
	// batching keeps them from hiding the datapath.
	ppsBatch = 32
	// ppsPayload bytes of UDP payload: 46-byte IPv4 packets, 60-byte frames before the tunnel.
	ppsPayload = 18
	// ppsMax bounds the datagrams of one phase whatever the time.
	ppsMax = 3_000_000
	// ppsWindow bounds the datagrams in flight (sent, not yet counted): well under what a
	// receiver's 4 MiB buffer holds of them.
	ppsWindow = 2048
)

// ppsPath is one path of BenchmarkDatapathPacketRate: ppsFlows connected UDP sockets in a pod
// and a sink on the external host. Requests go from the flows to the sink, replies from the
// sink back to each flow's source as the sink saw it (after SNAT), so they ride the
// connections' conntrack entries back through the gateway.
type ppsPath struct {
	name  string
	pod   *netns.Pod
	dst   netip.Addr
	want  netip.Addr // source address the sink must see
	flows []*net.UDPConn
	sink  *net.UDPConn
	peers []*net.UDPAddr
}

// BenchmarkDatapathPacketRate compares, in one bed (benchBed) and one run, small UDP
// datagrams over ppsFlows flows per path, each direction separately:
//
//	up:   pod → (path) → external host, counted by the sink;
//	down: external host → each flow's translated source → (path back) → pod, counted by
//	      the pod's sockets.
//
// Paths: egressd, egressd-redirect, kernel-vxlan-nft and iptables-ipset as in benchBed, and
// direct (pod b to the external host with the node's masquerade: no tunnel, no gateway), the
// floor every other path pays on top of. pps is what the receiver got over the send time.
// CPU per packet is kernel accounting, not cycles (this machine has no perf hardware
// counters): sys+irq+softirq of /proc/stat, machine-wide (every namespace, both cores, the
// other tenants of the machine too), and "own", the stime of this process and of ksoftirqd
// (this kernel has no IRQ time accounting, so softirq work done in our syscalls is our
// stime; it leaves out the other tenants' work that the machine-wide figure counts). "own-over"
// subtracts the direct path's own CPU per packet in the same round: what the tunnel and the
// gateway add. Figures are medians over rounds that interleave the paths
// in a rotating order; ratios are medians of per-round ratios against kernel-vxlan-nft. A
// last round, with BPF run-time statistics on (they cost two clock reads per program run,
// so the timed rounds run without), gives each egressd program's ns per run and runs per
// packet. Run with -benchtime 1x.
func BenchmarkDatapathPacketRate(b *testing.B) {
	bed := newBenchBed(b)
	c := bed.c
	ext := c.topo.External.Namespace
	w1 := c.topo.Node("worker1")
	eg1, eg2 := c.eg["gw1"][0], c.eg["gw2"][0]
	paths := []*ppsPath{
		{name: "egressd", pod: bed.a, dst: dstG1, want: eg1},
		{name: "egressd-redirect", pod: bed.c2, dst: dstG1, want: eg1},
		{name: "kernel-vxlan-nft", pod: bed.b, dst: bed.dstKernel, want: eg2},
		{name: "iptables-ipset", pod: bed.b, dst: bed.dstIpt, want: eg2},
		{name: "direct", pod: bed.b, dst: dstG1, want: w1.IP},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for i, p := range paths {
		p.open(ctx, b, ext, ppsPort+i)
	}
	rounds, each := 7, time.Second
	if v, err := strconv.Atoi(os.Getenv("EGRESSD_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	ksoftirqd := ksoftirqdPIDs(b)
	type key struct{ path, dir string }
	res := map[key][]ppsResult{}
	tag := byte(0)
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		for i := range paths {
			p := paths[(i+r)%len(paths)]
			for _, dir := range []string{"up", "down"} {
				tag++
				got := p.phase(b, dir, tag, each, ksoftirqd)
				b.Logf("round %d %-16s %-4s %s", r, p.name, dir, got)
				res[key{p.name, dir}] = append(res[key{p.name, dir}], got)
			}
		}
	}
	b.StopTimer()

	var lines []string
	lines = append(lines, fmt.Sprintf("%-16s %-4s %8s %6s %8s %8s %9s %7s %7s %7s %7s",
		"path", "dir", "kpps", "loss%", "cpu-ns", "own-ns", "own-over", "pps/k", "cpu/k", "own/k", "over/k"))
	for _, dir := range []string{"up", "down"} {
		base, direct := res[key{"kernel-vxlan-nft", dir}], res[key{"direct", dir}]
		for _, p := range paths {
			rs := res[key{p.name, dir}]
			over := func(i int) float64 { return rs[i].ownPerPkt() - direct[i].ownPerPkt() }
			m := func(f func(int) float64) float64 { return medianOf(rs, f) }
			pps := m(func(i int) float64 { return rs[i].pps() })
			cpu := m(func(i int) float64 { return rs[i].cpuPerPkt() })
			lines = append(lines, fmt.Sprintf("%-16s %-4s %8.1f %6.2f %8.0f %8.0f %9.0f %7.3f %7.3f %7.3f %7.3f",
				p.name, dir, pps/1e3,
				m(func(i int) float64 { return rs[i].loss() * 100 }),
				cpu,
				m(func(i int) float64 { return rs[i].ownPerPkt() }),
				m(over),
				m(func(i int) float64 { return rs[i].pps() / base[i].pps() }),
				m(func(i int) float64 { return rs[i].cpuPerPkt() / base[i].cpuPerPkt() }),
				m(func(i int) float64 { return rs[i].ownPerPkt() / base[i].ownPerPkt() }),
				m(func(i int) float64 { return over(i) / (base[i].ownPerPkt() - direct[i].ownPerPkt()) })))
			b.ReportMetric(pps, p.name+"-"+dir+"-pps")
			b.ReportMetric(cpu, p.name+"-"+dir+"-cpu-ns/pkt")
		}
	}
	// Printed, not logged: the testing package keeps only 10 lines of a benchmark's log.
	fmt.Printf("\nBenchmarkDatapathPacketRate: medians of %d rounds of %s per path and direction, %d flows, %d-byte payloads; cpu-ns: /proc/stat sys+irq+softirq per delivered packet (machine-wide); own-ns: this process + ksoftirqd stime per packet; own-over: own-ns minus direct's (what the tunnel and the gateway add); /k: ratio to kernel-vxlan-nft in the same round\n%s\n",
		rounds, each, ppsFlows, ppsPayload, strings.Join(lines, "\n"))

	profileBPF(b, c, paths, &tag, each, ksoftirqd)
}

// profileBPF runs one more phase per path and direction with BPF run-time statistics on and
// prints each egressd program's ns per run and runs per delivered packet (the baselines
// cross some of them too: the classifier on pod b's interface, the probe reflector on the
// underlay).
func profileBPF(b *testing.B, c *cluster, paths []*ppsPath, tag *byte, each time.Duration, ksoftirqd []int) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Logf("no BPF run-time statistics: %v", err)
		return
	}
	defer stats.Close()
	type prog struct {
		name string
		p    *ebpf.Program
	}
	var progs []prog
	for _, node := range []string{"worker1", "worker2", "gw1", "gw2"} {
		for _, h := range []bpf.Hook{bpf.HookPod, bpf.HookTunnelEgress, bpf.HookTunnelIngress, bpf.HookProbe} {
			progs = append(progs, prog{node + "/" + string(h), c.dps[node].dp.Program(h)})
		}
	}
	read := func() []ebpf.ProgramStats {
		out := make([]ebpf.ProgramStats, len(progs))
		for i, p := range progs {
			s, err := p.p.Stats()
			if err != nil {
				b.Fatalf("stats of %s: %v", p.name, err)
			}
			out[i] = *s
		}
		return out
	}
	for _, p := range paths {
		for _, dir := range []string{"up", "down"} {
			*tag++
			before := read()
			got := p.phase(b, dir, *tag, each, ksoftirqd)
			after := read()
			var parts []string
			var total time.Duration
			for i, pr := range progs {
				runs := after[i].RunCount - before[i].RunCount
				if runs < uint64(got.got)/100 {
					continue
				}
				rt := after[i].Runtime - before[i].Runtime
				total += rt
				parts = append(parts, fmt.Sprintf("%s %.0f ns × %.2f", pr.name, float64(rt)/float64(runs), float64(runs)/float64(got.got)))
			}
			fmt.Printf("bpf_stats %-16s %-4s %s: BPF %.0f ns per delivered packet: %s\n", p.name, dir, got,
				float64(total)/float64(got.got), strings.Join(parts, ", "))

		}
	}
}

// open binds the sink, dials the flows and learns each flow's source as the sink sees it,
// checking it is the path's.
func (p *ppsPath) open(ctx context.Context, b *testing.B, ext *netns.Namespace, port int) {
	b.Helper()
	dst := netip.AddrPortFrom(p.dst, uint16(port)).String()
	pc, err := ext.ListenPacket("udp4", dst)
	if err != nil {
		b.Fatal(err)
	}
	p.sink = pc.(*net.UDPConn)
	b.Cleanup(func() { p.sink.Close() })
	bigBuffers(b, p.sink)
	for range ppsFlows {
		c, err := p.pod.DialContext(ctx, "udp4", dst)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		bigBuffers(b, c.(*net.UDPConn))
		p.flows = append(p.flows, c.(*net.UDPConn))
	}
	p.peers = make([]*net.UDPAddr, ppsFlows)
	var msg [ppsPayload]byte
	buf := make([]byte, 64)
	for try := 0; try < 20 && slices.Contains(p.peers, nil); try++ {
		for i, f := range p.flows {
			if p.peers[i] == nil {
				binary.BigEndian.PutUint32(msg[1:], uint32(i))
				if _, err := f.Write(msg[:]); err != nil {
					b.Fatalf("%s: flow %d: %v", p.name, i, err)
				}
			}
		}
		_ = p.sink.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, from, err := p.sink.ReadFromUDP(buf)
			if err != nil {
				break
			}
			if i := binary.BigEndian.Uint32(buf[1:5]); n == ppsPayload && buf[0] == 0 && int(i) < ppsFlows {
				p.peers[i] = from
			}
		}
	}
	for i, a := range p.peers {
		if a == nil {
			b.Fatalf("%s: flow %d never reached the sink", p.name, i)
		}
		if got, _ := netip.AddrFromSlice(a.IP.To4()); got != p.want {
			b.Fatalf("%s: flow %d seen from %s, want %s", p.name, i, a, p.want)
		}
	}
}

// bigBuffers gives a socket 4 MiB buffers (SO_*BUFFORCE: root, past rmem_max), so that the
// receiver's scheduling, not its buffer, is what a burst meets.
func bigBuffers(b *testing.B, c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_RCVBUFFORCE, unix.SO_SNDBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 4<<20); e != nil {
				serr = e
			}
		}
	})
	if err != nil || serr != nil {
		b.Fatalf("socket buffers: %v %v", err, serr)
	}
}

// ppsResult is one phase: datagrams sent and received, the send time, and the CPU the
// kernel accounted over the phase.
type ppsResult struct {
	sent, got    int
	el           time.Duration
	machine, own time.Duration
}

func (r ppsResult) pps() float64 { return float64(r.got) / r.el.Seconds() }
func (r ppsResult) cpuPerPkt() float64 {
	return float64(r.machine.Nanoseconds()) / float64(max(r.got, 1))
}
func (r ppsResult) ownPerPkt() float64 { return float64(r.own.Nanoseconds()) / float64(max(r.got, 1)) }
func (r ppsResult) loss() float64      { return 1 - float64(r.got)/float64(max(r.sent, 1)) }
func (r ppsResult) String() string {
	return fmt.Sprintf("%7.1f kpps, %d/%d delivered, cpu %5.0f ns/pkt, own %5.0f ns/pkt",
		r.pps()/1e3, r.got, r.sent, r.cpuPerPkt(), r.ownPerPkt())
}

// phase sends tagged datagrams for d (at most ppsMax) in one direction and counts the ones
// the receivers get with that tag (a late datagram of an earlier phase is not counted).
func (p *ppsPath) phase(b *testing.B, dir string, tag byte, d time.Duration, ksoftirqd []int) ppsResult {
	b.Helper()
	payload := make([]byte, ppsPayload)
	payload[0] = tag
	type batch struct {
		pc   *ipv4.PacketConn
		msgs []ipv4.Message
	}
	var sends []batch
	var recvs []*net.UDPConn
	if dir == "up" {
		for _, f := range p.flows {
			msgs := make([]ipv4.Message, ppsBatch)
			for i := range msgs {
				msgs[i].Buffers = [][]byte{payload}
			}
			sends = append(sends, batch{ipv4.NewPacketConn(f), msgs})
		}
		recvs = []*net.UDPConn{p.sink}
	} else {
		pc := ipv4.NewPacketConn(p.sink)
		for i := 0; i < ppsFlows; i += ppsBatch {
			msgs := make([]ipv4.Message, ppsBatch)
			for j := range msgs {
				msgs[j].Buffers = [][]byte{payload}
				msgs[j].Addr = p.peers[(i+j)%ppsFlows]
			}
			sends = append(sends, batch{pc, msgs})
		}
		recvs = p.flows
	}

	var got atomic.Int64
	var stopping atomic.Bool
	var wg sync.WaitGroup
	for _, c := range recvs {
		_ = c.SetReadDeadline(time.Time{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			pc := ipv4.NewPacketConn(c)
			msgs := make([]ipv4.Message, ppsBatch)
			for i := range msgs {
				msgs[i].Buffers = [][]byte{make([]byte, 64)}
			}
			for {
				n, err := pc.ReadBatch(msgs, 0)
				k := 0
				for _, m := range msgs[:max(n, 0)] {
					if m.N == ppsPayload && m.Buffers[0][0] == tag {
						k++
					}
				}
				got.Add(int64(k))
				if err != nil && (stopping.Load() || !errors.Is(err, syscall.ECONNREFUSED)) {
					return
				}
			}
		}()
	}

	cpu0 := sampleCPU(b, ksoftirqd)
	start := time.Now()
	sent := 0
	lost := 0 // datagrams given up on: the window does not wait for them
	for i := 0; sent < ppsMax && time.Since(start) < d; i++ {
		// At most ppsWindow datagrams in flight, so that a receiver the machine's other
		// tenants keep off the CPU makes the sender wait instead of overflowing its buffer
		// (which would charge the path for packets nobody counted).
		for wait := time.Now(); sent-lost-int(got.Load()) > ppsWindow; {
			if time.Since(wait) > 20*time.Millisecond {
				lost = sent - int(got.Load())
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		s := sends[i%len(sends)]
		n, err := s.pc.WriteBatch(s.msgs, 0)
		if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			b.Fatalf("%s %s: sending: %v", p.name, dir, err)
		}
		sent += max(n, 0)
	}
	el := time.Since(start)
	// What is still in flight (queues of veths and sockets) arrives within milliseconds.
	time.Sleep(50 * time.Millisecond)
	cpu1 := sampleCPU(b, ksoftirqd)
	stopping.Store(true)
	for _, c := range recvs {
		_ = c.SetReadDeadline(time.Now())
	}
	wg.Wait()
	return ppsResult{sent: sent, got: int(got.Load()), el: el,
		machine: cpu1.machine - cpu0.machine, own: cpu1.own - cpu0.own}
}

type cpuSample struct{ machine, own time.Duration }

// userHZ is the unit of /proc/stat and /proc/<pid>/stat (USER_HZ, 100 on Linux).
const userHZ = 100

// sampleCPU reads sys+irq+softirq of every CPU from /proc/stat, and this process's system
// time plus that of the ksoftirqd threads.
func sampleCPU(b *testing.B, ksoftirqd []int) cpuSample {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq ...
	var ticks int64
	for _, i := range []int{3, 6, 7} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			b.Fatalf("/proc/stat %q: %v", line, err)
		}
		ticks += v
	}
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	own := time.Duration(ru.Stime.Nano())
	for _, pid := range ksoftirqd {
		own += time.Duration(procStime(b, pid)) * time.Second / userHZ
	}
	return cpuSample{machine: time.Duration(ticks) * time.Second / userHZ, own: own}
}

// procStime is field 15 (stime) of /proc/<pid>/stat, in USER_HZ.
func procStime(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(raw), ") ") // after "pid (comm) "
	f := strings.Fields(rest)                    // f[0] is field 3 (state)
	v, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		b.Fatalf("/proc/%d/stat: %v", pid, err)
	}
	return v
}

// ksoftirqdPIDs finds the per-CPU softirq threads, which run the network's softirqs when they
// overflow the context that raised them.
func ksoftirqdPIDs(b *testing.B) []int {
	comms, err := filepath.Glob("/proc/[0-9]*/comm")
	if err != nil {
		b.Fatal(err)
	}
	var pids []int
	for _, p := range comms {
		raw, err := os.ReadFile(p)
		if err != nil || !strings.HasPrefix(string(raw), "ksoftirqd/") {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		b.Fatal("no ksoftirqd threads in /proc")
	}
	return pids
}

// medianOf is the median of f over the indices of xs.
func medianOf[T any](xs []T, f func(int) float64) float64 {
	v := make([]float64, len(xs))
	for i := range xs {
		v[i] = f(i)
	}
	return median(v)
}
