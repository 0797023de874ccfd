package netns

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// StartServers runs the echo servers in the namespace, on every address of both families:
// HTTP on HTTPPort (GET answers the caller's IP), UDP on UDPPort (each datagram is answered
// with the caller's IP, from the address it was sent to), TCP bulk on BulkPort, line echo on
// FlowPort (prefixed with the caller's IP) and on ConnPort (prefixed with its IP:port), and an
// observer of ICMP echo requests that lets Ping report the source the server saw. The
// external host runs them from Build; call it on a pod or node for east-west tests. The
// servers stop when the Topology closes.
func (n *Namespace) StartServers() error {
	v6 := false
	if err := n.Do(func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6")
		v6 = err == nil && strings.TrimSpace(string(b)) == "0"
		return nil
	}); err != nil {
		return err
	}
	fams := []string{"4"}
	if v6 {
		fams = append(fams, "6")
	}
	s := &servers{conns: map[io.Closer]struct{}{}}
	n.owner.addCloser(s.close)
	err := n.Do(func() error {
		for _, f := range fams {
			hl, err := net.Listen("tcp"+f, fmt.Sprintf(":%d", HTTPPort))
			if err != nil {
				return fmt.Errorf("listening for HTTP: %w", err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(httpEcho), ReadHeaderTimeout: 5 * time.Second}
			s.add(srv)
			s.goServe(func() { _ = srv.Serve(hl) })

			bl, err := net.Listen("tcp"+f, fmt.Sprintf(":%d", BulkPort))
			if err != nil {
				return fmt.Errorf("listening for bulk: %w", err)
			}
			s.add(bl)
			s.goServe(func() { s.acceptLoop(bl, serveBulk) })

			fl, err := net.Listen("tcp"+f, fmt.Sprintf(":%d", FlowPort))
			if err != nil {
				return fmt.Errorf("listening for flows: %w", err)
			}
			s.add(fl)
			s.goServe(func() { s.acceptLoop(fl, serveFlow) })

			cl, err := net.Listen("tcp"+f, fmt.Sprintf(":%d", ConnPort))
			if err != nil {
				return fmt.Errorf("listening for connections: %w", err)
			}
			s.add(cl)
			s.goServe(func() { s.acceptLoop(cl, serveConn) })

			uc, err := net.ListenPacket("udp"+f, fmt.Sprintf(":%d", UDPPort))
			if err != nil {
				return fmt.Errorf("listening for UDP: %w", err)
			}
			s.add(uc)
			s.goServe(func() { serveUDP(uc, f == "6") })

			proto, laddr := "ip4:icmp", "0.0.0.0"
			if f == "6" {
				proto, laddr = "ip6:ipv6-icmp", "::"
			}
			ic, err := icmp.ListenPacket(proto, laddr)
			if err != nil {
				return fmt.Errorf("listening for ICMP: %w", err)
			}
			s.add(ic)
			s.goServe(func() { observeICMP(ic, f == "6") })
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("starting servers in %s: %w", n.Name, err)
	}
	return nil
}

type servers struct {
	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	closed bool
	wg     sync.WaitGroup
}

func (s *servers) add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *servers) remove(c io.Closer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *servers) goServe(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *servers) acceptLoop(l net.Listener, serve func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		if !s.add(c) {
			return
		}
		s.goServe(func() {
			defer s.remove(c)
			defer c.Close()
			serve(c)
		})
	}
}

// close closes listeners and every open connection (sockets keep their namespace alive).
func (s *servers) close() error {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[io.Closer]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("echo servers did not stop within 10s")
	}
}

func httpEcho(w http.ResponseWriter, r *http.Request) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, ap.Addr().Unmap().String()+"\n")
}

// serveUDP answers from the address each datagram was sent to, so clients on hosts with many
// addresses (and connected UDP sockets) accept the answer.
func serveUDP(c net.PacketConn, v6 bool) {
	buf := make([]byte, 64<<10)
	if v6 {
		p := ipv6.NewPacketConn(c)
		if err := p.SetControlMessage(ipv6.FlagDst, true); err != nil {
			return
		}
		for {
			_, cm, from, err := p.ReadFrom(buf)
			if err != nil {
				return
			}
			var out *ipv6.ControlMessage
			if cm != nil {
				out = &ipv6.ControlMessage{Src: cm.Dst}
			}
			_, _ = p.WriteTo([]byte(addrOf(from).String()+"\n"), out, from)
		}
	}
	p := ipv4.NewPacketConn(c)
	if err := p.SetControlMessage(ipv4.FlagDst, true); err != nil {
		return
	}
	for {
		_, cm, from, err := p.ReadFrom(buf)
		if err != nil {
			return
		}
		var out *ipv4.ControlMessage
		if cm != nil {
			out = &ipv4.ControlMessage{Src: cm.Dst}
		}
		_, _ = p.WriteTo([]byte(addrOf(from).String()+"\n"), out, from)
	}
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.IPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// Bulk protocol: the client sends op ('U' upload, 'D' download) and an 8-byte big-endian size.
// Upload: the client sends size bytes, the server answers the 8-byte count it received.
// Download: the server sends size bytes.
const maxTransfer = 64 << 30

func serveBulk(c net.Conn) {
	var hdr [9]byte
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	size := int64(binary.BigEndian.Uint64(hdr[1:]))
	if size < 0 || size > maxTransfer {
		return
	}
	switch hdr[0] {
	case 'U':
		got, _ := io.CopyN(io.Discard, c, size)
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], uint64(got))
		_, _ = c.Write(out[:])
	case 'D':
		_, _ = io.CopyN(c, zeroReader{}, size)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// serveFlow echoes every line prefixed with the caller's IP.
func serveFlow(c net.Conn) {
	peer := addrOf(c.RemoteAddr()).String()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, peer+" "+line); err != nil {
			return
		}
	}
}

// serveConn echoes every line prefixed with the caller's address and port as the server sees
// them: a long-lived connection that keeps both across a failover left the new gateway with
// the same source address and port.
func serveConn(c net.Conn) {
	peer := c.RemoteAddr().String()
	if ap, err := netip.ParseAddrPort(peer); err == nil {
		peer = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, peer+" "+line); err != nil {
			return
		}
	}
}

// ICMP observation: Ping puts icmpMagic and a token in the echo payload; the observer on the
// destination records token → source, and Ping looks it up.
var icmpMagic = []byte("edtb-ping:")

var icmpSeen = struct {
	sync.Mutex
	waiters map[string]chan netip.Addr
}{waiters: map[string]chan netip.Addr{}}

// expectICMP registers a token before its echo request is sent: the kernel answers the
// request before the observer goroutine reads its copy, so the reply may win the race.
func expectICMP(token []byte) (<-chan netip.Addr, func()) {
	ch := make(chan netip.Addr, 1)
	icmpSeen.Lock()
	icmpSeen.waiters[string(token)] = ch
	icmpSeen.Unlock()
	return ch, func() {
		icmpSeen.Lock()
		delete(icmpSeen.waiters, string(token))
		icmpSeen.Unlock()
	}
}

func observeICMP(c *icmp.PacketConn, v6 bool) {
	proto := 1
	if v6 {
		proto = 58
	}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || (m.Type != ipv4.ICMPTypeEcho && m.Type != ipv6.ICMPTypeEchoRequest) {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || !bytes.HasPrefix(e.Data, icmpMagic) {
			continue
		}
		icmpSeen.Lock()
		if ch, ok := icmpSeen.waiters[string(e.Data)]; ok {
			select {
			case ch <- addrOf(from):
			default:
			}
		}
		icmpSeen.Unlock()
	}
}

func parseAddrLine(b []byte) (netip.Addr, error) {
	s := strings.TrimSpace(string(b))
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("echo answered %s: %w", strconv.Quote(s), err)
	}
	return a, nil
}
