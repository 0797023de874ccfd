package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

const probePort = 8743

var (
	proberMAC  = []byte{0x02, 0, 0, 0, 0, 0x11}
	nodeMAC    = []byte{0x02, 0, 0, 0, 0, 0x21}
	proberIP   = netip.MustParseAddr("192.168.0.11")
	nodeIP     = netip.MustParseAddr("192.168.0.21")
	probeMagic = []byte("EGRP")
)

// csum is the Internet checksum of b (RFC 1071), folded and complemented.
func csum(b []byte, initial uint32) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// udpSum returns the UDP checksum of an IPv4 datagram's UDP header and
// payload, with the pseudo header.
func udpSum(src, dst netip.Addr, udp []byte) uint16 {
	ph := make([]byte, 0, 12)
	s, d := src.As4(), dst.As4()
	ph = append(ph, s[:]...)
	ph = append(ph, d[:]...)
	ph = append(ph, 0, unix.IPPROTO_UDP, byte(len(udp)>>8), byte(len(udp)))
	b := append(ph, udp...)
	c := csum(b, 0)
	if c == 0 {
		c = 0xffff
	}
	return c
}

type probeReq struct {
	ttl      uint8
	dst      netip.Addr
	dport    uint16
	flags    byte
	magic    []byte
	version  byte
	reserved [2]byte
	noCsum   bool
	frag     bool
	extra    int // bytes of payload beyond the 16 of a probe
}

// probeFrame builds the probe request a Prober on proberIP:40001 sends to
// r.dst:r.dport, with valid IPv4 and UDP checksums.
func probeFrame(r probeReq) []byte {
	if r.ttl == 0 {
		r.ttl = 61
	}
	if !r.dst.IsValid() {
		r.dst = nodeIP
	}
	if r.dport == 0 {
		r.dport = probePort
	}
	if r.magic == nil {
		r.magic = probeMagic
	}
	if r.version == 0 {
		r.version = 1
	}
	payload := make([]byte, 16+r.extra)
	copy(payload, r.magic)
	payload[4] = r.version
	payload[5] = r.flags
	copy(payload[6:8], r.reserved[:])
	binary.BigEndian.PutUint64(payload[8:], 0x0102030405060708)
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], 40001)
	binary.BigEndian.PutUint16(udp[2:], r.dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	if !r.noCsum {
		binary.BigEndian.PutUint16(udp[6:], udpSum(proberIP, r.dst, udp))
	}
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	if r.frag {
		binary.BigEndian.PutUint16(ip[6:], 0x2000) // MF
	}
	ip[8] = r.ttl
	ip[9] = unix.IPPROTO_UDP
	s, d := proberIP.As4(), r.dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], csum(ip, 0))
	b := append([]byte{}, nodeMAC...)
	b = append(b, proberMAC...)
	b = append(b, 0x08, 0x00)
	b = append(b, ip...)
	return append(b, udp...)
}

func runProbe(t *testing.T, d *Datapath, pkt []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(pkt)+256)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: out}
	ret, err := d.Program(HookProbe).Run(opts)
	if err != nil {
		t.Fatalf("running the probe reflector: %v", err)
	}
	return ret, opts.DataOut
}

func TestProbeReflector(t *testing.T) {
	d := load(t, Limits{})
	req := probeFrame(probeReq{})
	if got, _ := runProbe(t, d, req); got != actNext {
		t.Fatalf("verdict %#x before the probe is configured, want next", got)
	}
	must(t, d.SetProbe(ProbeConfig{Port: probePort, NodeIP: nodeIP}))
	if c, err := d.Probe(); err != nil || c != (ProbeConfig{Port: probePort, NodeIP: nodeIP}) {
		t.Fatalf("Probe() = %+v, %v", c, err)
	}

	checkReply := func(t *testing.T, req, rep []byte, wantFlags byte) {
		t.Helper()
		if len(rep) != len(req) {
			t.Fatalf("reply is %d bytes, request %d", len(rep), len(req))
		}
		if !bytes.Equal(rep[0:6], proberMAC) || !bytes.Equal(rep[6:12], nodeMAC) {
			t.Errorf("MACs dst %x src %x, want %x %x", rep[0:6], rep[6:12], proberMAC, nodeMAC)
		}
		ip, udp, payload := rep[14:34], rep[34:42], rep[42:]
		if !bytes.Equal(ip[12:16], req[14+16:14+20]) || !bytes.Equal(ip[16:20], req[14+12:14+16]) {
			t.Errorf("IPs src %v dst %v, want swapped", ip[12:16], ip[16:20])
		}
		if ip[8] != 64 {
			t.Errorf("TTL %d, want 64", ip[8])
		}
		if !bytes.Equal(ip[2:8], req[14+2:14+8]) || ip[9] != unix.IPPROTO_UDP {
			t.Errorf("IP length, id, fragment or protocol changed: % x", ip)
		}
		if c := csum(ip, 0); c != 0 {
			t.Errorf("IPv4 header checksum invalid (sums to %#x): % x", c, ip)
		}
		if sp, dp := binary.BigEndian.Uint16(udp[0:]), binary.BigEndian.Uint16(udp[2:]); sp != probePort || dp != 40001 {
			t.Errorf("ports %d → %d, want %d → 40001", sp, dp, probePort)
		}
		if binary.BigEndian.Uint16(udp[6:]) != 0 {
			src, _ := netip.AddrFromSlice(ip[12:16])
			dst, _ := netip.AddrFromSlice(ip[16:20])
			zeroed := append([]byte{}, rep[34:]...)
			zeroed[6], zeroed[7] = 0, 0
			if want, got := udpSum(src, dst, zeroed), binary.BigEndian.Uint16(udp[6:]); got != want {
				t.Errorf("UDP checksum %#04x, want %#04x", got, want)
			}
		}
		want := append([]byte{}, req[42:]...)
		want[5] = wantFlags
		want[6], want[7] = 0, 0
		if !bytes.Equal(payload, want) {
			t.Errorf("probe payload % x, want % x", payload, want)
		}
	}

	t.Run("reply", func(t *testing.T) {
		got, rep := runProbe(t, d, req)
		if got != actRedirect {
			t.Fatalf("verdict %#x, want redirect", got)
		}
		checkReply(t, req, rep, 0x80)
	})
	t.Run("request flags and reserved bytes are not echoed", func(t *testing.T) {
		r := probeFrame(probeReq{flags: 0x41, reserved: [2]byte{0xab, 0xcd}})
		got, rep := runProbe(t, d, r)
		if got != actRedirect {
			t.Fatalf("verdict %#x, want redirect", got)
		}
		checkReply(t, r, rep, 0x80)
	})
	t.Run("no UDP checksum stays none", func(t *testing.T) {
		r := probeFrame(probeReq{noCsum: true})
		got, rep := runProbe(t, d, r)
		if got != actRedirect {
			t.Fatalf("verdict %#x, want redirect", got)
		}
		if c := binary.BigEndian.Uint16(rep[40:]); c != 0 {
			t.Errorf("UDP checksum %#x, want 0 (none)", c)
		}
		checkReply(t, r, rep, 0x80)
	})
	t.Run("draining", func(t *testing.T) {
		must(t, d.SetProbe(ProbeConfig{Port: probePort, NodeIP: nodeIP, Draining: true}))
		defer func() { must(t, d.SetProbe(ProbeConfig{Port: probePort, NodeIP: nodeIP})) }()
		for _, ttl := range []uint8{1, 64, 255} { // the TTL fix-up across values
			r := probeFrame(probeReq{ttl: ttl})
			got, rep := runProbe(t, d, r)
			if got != actRedirect {
				t.Fatalf("verdict %#x, want redirect", got)
			}
			checkReply(t, r, rep, 0x81)
		}
	})
	for _, tc := range []struct {
		name string
		r    probeReq
	}{
		{"other port", probeReq{dport: probePort + 1}},
		{"other destination", probeReq{dst: netip.MustParseAddr("192.168.0.99")}},
		{"a reply", probeReq{flags: 0x80}},
		{"bad magic", probeReq{magic: []byte("EGRQ")}},
		{"other version", probeReq{version: 2}},
		{"fragment", probeReq{frag: true}},
		{"longer than a probe", probeReq{extra: 4}},
	} {
		t.Run("passes "+tc.name, func(t *testing.T) {
			r := probeFrame(tc.r)
			got, out := runProbe(t, d, r)
			if got != actNext {
				t.Fatalf("verdict %#x, want next", got)
			}
			if !bytes.Equal(out[:len(r)], r) {
				t.Errorf("packet modified")
			}
		})
	}
	t.Run("passes other traffic", func(t *testing.T) {
		for _, pkt := range [][]byte{
			packet(proberIP, nodeIP, unix.IPPROTO_TCP, 40000, probePort),
			packet(proberIP, nodeIP, unix.IPPROTO_ICMP, 7, 0),
			packet(netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), unix.IPPROTO_UDP, 40000, probePort),
		} {
			if got, _ := runProbe(t, d, pkt); got != actNext {
				t.Errorf("verdict %#x, want next", got)
			}
		}
	})
	t.Run("port 0 turns it off", func(t *testing.T) {
		must(t, d.SetProbe(ProbeConfig{}))
		if got, _ := runProbe(t, d, req); got != actNext {
			t.Fatalf("verdict %#x, want next", got)
		}
	})
}

// BenchmarkProbeReflector measures what the reflector adds to every packet
// of the underlay interface it passes on, with BPF_PROG_TEST_RUN. (Answering
// cannot be timed this way: repeated runs share one packet, which is a reply
// after the first.)
func BenchmarkProbeReflector(b *testing.B) {
	d := load(b, Limits{})
	must(b, d.SetProbe(ProbeConfig{Port: probePort, NodeIP: nodeIP}))
	for _, bc := range []struct {
		name string
		pkt  []byte
		want uint32
	}{
		{"tcp", packet(proberIP, nodeIP, unix.IPPROTO_TCP, 40000, 443), actNext},
		{"udp to the tunnel port", packet(proberIP, nodeIP, unix.IPPROTO_UDP, 40000, 8742), actNext},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ret, per, err := d.Program(HookProbe).Benchmark(bc.pkt, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			if ret != bc.want {
				b.Fatalf("verdict %#x, want %#x", ret, bc.want)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/pkt")
		})
	}
}
